"""Filter matching and update application for documents, as MongoDB defines them (a subset).

Used by the embedded store; the MongoDB adapter leaves this work to the server.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

_MISSING = object()


def get_path(doc: Mapping[str, Any], path: str) -> Any:
    """Value at a dotted path, or a sentinel when absent."""
    cur: Any = doc
    for part in path.split("."):
        if isinstance(cur, Mapping) and part in cur:
            cur = cur[part]
        else:
            return _MISSING
    return cur


def _cmp_key(value: Any) -> tuple[int, Any]:
    # Order by type class first so that mixed types compare without errors (as BSON does).
    if value is None or value is _MISSING:
        return (0, 0)
    if isinstance(value, bool):
        return (3, value)
    if isinstance(value, (int, float)):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    if isinstance(value, datetime):
        return (4, value)
    return (5, str(value))


def _normalise(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def _match_operator(value: Any, op: str, arg: Any) -> bool:
    value = _normalise(value)
    arg = _normalise(arg)
    if op == "$eq":
        return value is not _MISSING and value == arg
    if op == "$ne":
        return value is _MISSING or value != arg
    if op == "$exists":
        return (value is not _MISSING) == bool(arg)
    if op == "$in":
        return value is not _MISSING and any(value == _normalise(a) for a in arg)
    if op == "$nin":
        return value is _MISSING or all(value != _normalise(a) for a in arg)
    if value is _MISSING or value is None:
        return False
    left, right = _cmp_key(value), _cmp_key(arg)
    if left[0] != right[0]:
        return False
    if op == "$gt":
        return left > right
    if op == "$gte":
        return left >= right
    if op == "$lt":
        return left < right
    if op == "$lte":
        return left <= right
    raise ValueError(f"unsupported filter operator {op!r}")


def matches(doc: Mapping[str, Any], filter: Mapping[str, Any] | None) -> bool:
    """True when ``doc`` satisfies the MongoDB-style ``filter``."""
    if not filter:
        return True
    for key, cond in filter.items():
        if key == "$and":
            if not all(matches(doc, sub) for sub in cond):
                return False
            continue
        if key == "$or":
            if not any(matches(doc, sub) for sub in cond):
                return False
            continue
        value = get_path(doc, key)
        if isinstance(cond, Mapping) and cond and all(str(k).startswith("$") for k in cond):
            if not all(_match_operator(value, op, arg) for op, arg in cond.items()):
                return False
        elif not _match_operator(value, "$eq", cond):
            return False
    return True


def _set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    cur = doc
    for part in parts[:-1]:
        cur = cur.setdefault(part, {})
    cur[parts[-1]] = value


def _unset_path(doc: dict[str, Any], path: str) -> None:
    parts = path.split(".")
    cur: Any = doc
    for part in parts[:-1]:
        if not isinstance(cur, dict) or part not in cur:
            return
        cur = cur[part]
    if isinstance(cur, dict):
        cur.pop(parts[-1], None)


def apply_update(doc: dict[str, Any], update: Mapping[str, Any], *, inserting: bool) -> dict[str, Any]:
    """Return a copy of ``doc`` with ``$set``/``$inc``/``$setOnInsert``/``$unset`` applied."""
    if not update or not all(str(k).startswith("$") for k in update):
        raise ValueError("update must use operators ($set, $inc, $setOnInsert, $unset)")
    out = copy.deepcopy(doc)
    for op, fields in update.items():
        for path, arg in fields.items():
            if op == "$set":
                _set_path(out, path, arg)
            elif op == "$setOnInsert":
                if inserting:
                    _set_path(out, path, arg)
            elif op == "$inc":
                current = get_path(out, path)
                _set_path(out, path, (0 if current is _MISSING else current) + arg)
            elif op == "$unset":
                _unset_path(out, path)
            else:
                raise ValueError(f"unsupported update operator {op!r}")
    return out


def sort_documents(docs: list[dict[str, Any]], sort: list[tuple[str, int]] | None) -> list[dict[str, Any]]:
    """Stable multi-key sort as MongoDB's ``sort`` does (missing values first ascending)."""
    if not sort:
        return docs
    for path, direction in reversed(list(sort)):
        docs.sort(key=lambda d: _cmp_key(_normalise(get_path(d, path))), reverse=direction < 0)
    return docs
