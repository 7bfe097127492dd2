"""The embedded metadata store: JSON documents in one SQLite file, one table per collection."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from app.metadata.base import DuplicateKeyError, Filter, SortSpec
from app.metadata.documents import _MISSING, apply_update, get_path, matches, sort_documents

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return {"$date": value.astimezone(timezone.utc).isoformat()}
    if isinstance(value, Mapping):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and "$date" in value:
            return datetime.fromisoformat(value["$date"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _while_locked(statement: Callable[[], object], attempts: int = 200) -> None:
    """Run a set-up ``statement`` again while SQLite says "database is locked": switching a new
    file to WAL mode while another connection opens it fails at once, without the busy timeout
    (measured: 2 of 200 stores opened by three threads at once)."""
    for attempt in range(attempts):
        try:
            statement()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.01)


class EmbeddedStore:
    """A :class:`~app.metadata.base.MetadataStore` in ``<directory>/metadata.sqlite3``."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.directory / "metadata.sqlite3", timeout=60.0, isolation_level=None, check_same_thread=False)
        _while_locked(lambda: self._conn.execute("PRAGMA journal_mode=WAL"))
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA busy_timeout=60000")
        _while_locked(lambda: self._conn.execute("CREATE TABLE IF NOT EXISTS _indexes (collection TEXT, name TEXT, keys TEXT, uniq INTEGER, PRIMARY KEY (collection, name))"))
        self._lock = threading.RLock()

    def __reduce__(self):
        return (EmbeddedStore, (str(self.directory),))

    def collection(self, name: str) -> EmbeddedCollection:
        if not _NAME.match(name):
            raise ValueError(f"invalid collection name {name!r}")
        with self._lock:
            self._conn.execute(f'CREATE TABLE IF NOT EXISTS "c_{name}" (_id TEXT PRIMARY KEY, doc BLOB NOT NULL)')
        return EmbeddedCollection(self, name)

    def list_collections(self) -> list[str]:
        with self._lock:
            rows = self._conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'c\\_%' ESCAPE '\\' ORDER BY name").fetchall()
        return [r[0][2:] for r in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class EmbeddedCollection:
    """One collection of the embedded store."""

    def __init__(self, store: EmbeddedStore, name: str) -> None:
        self._store = store
        self.name = name
        self._table = f'"c_{name}"'

    # -- helpers ----------------------------------------------------------------------------
    def _all(self) -> list[dict[str, Any]]:
        rows = self._store._conn.execute(f"SELECT doc FROM {self._table}").fetchall()
        return [_decode(orjson.loads(r[0])) for r in rows]

    def _candidates(self, filter: Filter | None) -> list[dict[str, Any]]:
        """The documents that may match ``filter`` (callers still apply :func:`matches`).

        A filter that names ``"_id": <str>`` (whatever else it says) reads that one row by primary
        key: only a document whose ``_id`` equals that string can match, and its row key is that
        string (a compare-and-set such as ``{"_id": ..., "owner": ...}`` then costs one row, not
        the whole collection). Any other filter decodes the whole collection."""
        if filter and type(filter.get("_id")) is str:
            row = self._store._conn.execute(f"SELECT doc FROM {self._table} WHERE _id = ?", (filter["_id"],)).fetchone()
            return [_decode(orjson.loads(row[0]))] if row else []
        wanted = filter.get("_id") if filter else None
        if isinstance(wanted, Mapping) and set(wanted) == {"$in"} and all(type(i) is str for i in wanted["$in"]):
            ids = list(wanted["$in"])  # {"_id": {"$in": [...]}}: those rows by primary key
            rows = [r for i in range(0, len(ids), 500) for r in self._store._conn.execute(f"SELECT doc FROM {self._table} WHERE _id IN ({','.join('?' * len(ids[i : i + 500]))})", ids[i : i + 500])]
            return [_decode(orjson.loads(r[0])) for r in rows]
        return self._all()

    def _unique_indexes(self) -> list[list[str]]:
        rows = self._store._conn.execute("SELECT keys FROM _indexes WHERE collection = ? AND uniq = 1", (self.name,)).fetchall()
        return [orjson.loads(r[0]) for r in rows]

    def _check_unique(self, doc: Mapping[str, Any], exclude_id: Any = None) -> None:
        others: list[dict[str, Any]] | None = None  # decoded once, only if a unique index applies
        for keys in self._unique_indexes():
            wanted = {k: get_path(doc, k) for k in keys}
            if any(v is _MISSING for v in wanted.values()):
                continue
            if others is None:
                others = self._all()
            for other in others:
                if other.get("_id") == exclude_id:
                    continue
                if all(get_path(other, k) == v for k, v in wanted.items()):
                    raise DuplicateKeyError(f"{self.name}: duplicate key {wanted}")

    def _write(self, doc: Mapping[str, Any]) -> None:
        self._store._conn.execute(f"INSERT OR REPLACE INTO {self._table}(_id, doc) VALUES (?, ?)", (str(doc["_id"]), orjson.dumps(_encode(doc))))

    # -- API --------------------------------------------------------------------------------
    def insert_one(self, document: Mapping[str, Any]) -> Any:
        doc = dict(document)
        doc.setdefault("_id", uuid.uuid4().hex)
        with self._store._lock:
            conn = self._store._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._check_unique(doc)
                try:  # the primary key rejects a duplicate _id (no separate lookup)
                    conn.execute(f"INSERT INTO {self._table}(_id, doc) VALUES (?, ?)", (str(doc["_id"]), orjson.dumps(_encode(doc))))
                except sqlite3.IntegrityError:
                    raise DuplicateKeyError(f"{self.name}: duplicate _id {doc['_id']!r}") from None
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return doc["_id"]

    def insert_many_new(self, documents: Sequence[Mapping[str, Any]]) -> list[Any]:
        docs = [dict(d) for d in documents]
        for doc in docs:
            doc.setdefault("_id", uuid.uuid4().hex)
        inserted: list[Any] = []
        with self._store._lock:
            conn = self._store._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                for doc in docs:
                    try:
                        self._check_unique(doc)
                        conn.execute(f"INSERT INTO {self._table}(_id, doc) VALUES (?, ?)", (str(doc["_id"]), orjson.dumps(_encode(doc))))
                    except (sqlite3.IntegrityError, DuplicateKeyError):
                        continue
                    inserted.append(doc["_id"])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return inserted

    def find(self, filter: Filter | None = None, *, sort: SortSpec | None = None, limit: int = 0) -> list[dict[str, Any]]:
        with self._store._lock:
            docs = [d for d in self._candidates(filter) if matches(d, filter)]
        docs = sort_documents(docs, list(sort) if sort else None)
        return docs[:limit] if limit else docs

    def find_one(self, filter: Filter | None = None, *, sort: SortSpec | None = None) -> dict[str, Any] | None:
        found = self.find(filter, sort=sort, limit=1)
        return found[0] if found else None

    def update_one(self, filter: Filter, update: Mapping[str, Any], *, upsert: bool = False) -> int:
        with self._store._lock:
            conn = self._store._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                current = next((d for d in self._candidates(filter) if matches(d, filter)), None)
                if current is None:
                    if not upsert:
                        conn.execute("COMMIT")
                        return 0
                    seed = {k: v for k, v in filter.items() if not k.startswith("$") and not isinstance(v, Mapping)}
                    new = apply_update(seed, update, inserting=True)
                    new.setdefault("_id", uuid.uuid4().hex)
                    self._check_unique(new)
                    self._write(new)
                    conn.execute("COMMIT")
                    return 0
                new = apply_update(current, update, inserting=False)
                if new.get("_id") != current.get("_id"):
                    raise ValueError("_id cannot be changed")
                self._check_unique(new, exclude_id=current["_id"])
                self._write(new)
                conn.execute("COMMIT")
                return 1
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def update_many(self, filter: Filter, update: Mapping[str, Any]) -> int:
        with self._store._lock:
            conn = self._store._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                found = [d for d in self._candidates(filter) if matches(d, filter)]
                unique_keys = {k for keys in self._unique_indexes() for k in keys}
                for current in found:
                    new = apply_update(current, update, inserting=False)
                    if new.get("_id") != current.get("_id"):
                        raise ValueError("_id cannot be changed")
                    if any(get_path(new, k) != get_path(current, k) for k in unique_keys):  # only a changed key can collide
                        self._check_unique(new, exclude_id=current["_id"])
                    self._write(new)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return len(found)

    def delete_many(self, filter: Filter) -> int:
        with self._store._lock:
            conn = self._store._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                ids = [str(d["_id"]) for d in self._candidates(filter) if matches(d, filter)]
                conn.executemany(f"DELETE FROM {self._table} WHERE _id = ?", [(i,) for i in ids])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return len(ids)

    def count_documents(self, filter: Filter | None = None) -> int:
        return len(self.find(filter))

    def create_index(self, keys: Sequence[tuple[str, int]], *, unique: bool = False) -> str:
        name = "_".join(f"{k}_{d}" for k, d in keys)
        with self._store._lock:
            self._store._conn.execute("INSERT OR REPLACE INTO _indexes(collection, name, keys, uniq) VALUES (?, ?, ?, ?)", (self.name, name, orjson.dumps([k for k, _ in keys]), int(unique)))
        return name
