"""Plain readings in bulk: many bus values parsed into columns at once, for the lake sink.

:func:`~app.contracts.reading.reading_from_bus` validates one value at a time through the pydantic
model (tens of microseconds each). Most values on the bus are *plain*: JSON objects with the
contract's fields only, known measurements, an RFC 3339 ``ts``. :func:`plain_readings` parses a
chunk of values with Arrow's JSON reader and picks out, with vectorised checks built from the same
constants (:data:`~app.contracts.reading.ID_PATTERN`, :data:`~app.contracts.reading.MEASUREMENT_BOUNDS`,
:data:`~app.contracts.reading.EARLIEST_TS`, the bus's future skew), the values that are certainly
plain and valid. It never rejects anything: every other value (an unknown field, a number as
``ts``, an escape in a key, a value Arrow cannot parse in its block, any doubt) is left to
``reading_from_bus``, which stays the one place a reading is accepted or refused, with its reason.
A test holds the two to the same rows on generated and hostile values.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from app.contracts.reading import EARLIEST_TS, ID_PATTERN, MEASUREMENT_BOUNDS, MEASUREMENT_NAMES, ON_BUS_MAX_FUTURE_SKEW_S, READING_SCHEMA_VERSION, epoch_ms

BLOCK = 2048
"""Values parsed together."""

_TOP_FIELDS = ("schema_version", "greenhouse_id", "device_id", "ts", "measurements")
_PARSE_SCHEMA = pa.schema(
    [("schema_version", pa.int64()), ("greenhouse_id", pa.string()), ("device_id", pa.string()), ("ts", pa.string()), ("measurements", pa.struct([(name, pa.float64()) for name in MEASUREMENT_NAMES]))]
)
_RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$"
_PARSE = pajson.ParseOptions(explicit_schema=_PARSE_SCHEMA, unexpected_field_behavior="infer")


@dataclass(frozen=True)
class PlainReadings:
    """The plain values of a chunk: their positions in it and their columns (``greenhouse_id``,
    ``device_id``, ``ts`` as UTC datetimes, ``ts_ms``, one column per known measurement)."""

    positions: list[int]
    greenhouse_id: list[str]
    device_id: list[str]
    ts: list[datetime]
    ts_ms: list[int]
    measurements: dict[str, pa.Array]


def plain_readings(values: Sequence[bytes], *, now: datetime | None = None) -> PlainReadings:
    """The values of ``values`` that are certainly plain, valid readings (see the module)."""
    latest = (now or datetime.now(timezone.utc)) + timedelta(seconds=ON_BUS_MAX_FUTURE_SKEW_S)
    found: list[PlainReadings] = []
    for start in range(0, len(values), BLOCK):
        found += _plain_block(values, [i for i in range(start, min(start + BLOCK, len(values))) if not _suspect(values[i])], latest)
    return PlainReadings(
        positions=[i for p in found for i in p.positions],
        greenhouse_id=[g for p in found for g in p.greenhouse_id],
        device_id=[d for p in found for d in p.device_id],
        ts=[t for p in found for t in p.ts],
        ts_ms=[t for p in found for t in p.ts_ms],
        measurements={name: pa.concat_arrays([p.measurements[name] for p in found]) if found else pa.array([], pa.float64()) for name in MEASUREMENT_NAMES},
    )


def _suspect(value: bytes) -> bool:
    """Bytes Arrow would read differently from orjson, or hide from the checks: a line break (one
    line per value), an escape (a key spelled with ``\\u``), nothing at all."""
    return b"\n" in value or b"\\u" in value or not value.strip()


def _plain_block(values: Sequence[bytes], positions: list[int], latest: datetime) -> list[PlainReadings]:
    """The plain readings among ``values[positions]``; a block Arrow cannot parse whole (a value of
    another shape in it) is halved until each odd value is alone, and those go to the slow path."""
    if not positions:
        return []
    try:
        table = pajson.read_json(io.BytesIO(b"\n".join(values[i] for i in positions)), parse_options=_PARSE)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if len(positions) == 1:
            return []
        half = len(positions) // 2
        return _plain_block(values, positions[:half], latest) + _plain_block(values, positions[half:], latest)
    if table.num_rows != len(positions):
        return []
    ok = _columns_ok(table)
    keep = np.flatnonzero(ok & _absent_unknowns(table, [values[i] for i in positions]))
    found = _checked_times(table, [positions[i] for i in keep], keep, latest)
    return [] if found is None else [found]


def _columns_ok(table: pa.Table) -> np.ndarray:
    """Rows whose contract fields pass every check the model makes (schema version 1 or absent,
    ids matching the pattern, a string ``ts`` in strict RFC 3339, known measurements finite,
    within bounds, at least one present)."""
    version = table["schema_version"]
    checks = [
        pc.fill_null(pc.equal(version, READING_SCHEMA_VERSION), True),
        pc.fill_null(pc.match_substring_regex(table["greenhouse_id"], ID_PATTERN), False),
        pc.fill_null(pc.match_substring_regex(table["device_id"], ID_PATTERN), False),
        pc.fill_null(pc.match_substring_regex(table["ts"], _RFC3339), False),
        pc.is_valid(table["measurements"]),
    ]
    measurements = table["measurements"]
    present = None
    for name in MEASUREMENT_NAMES:
        low, high = MEASUREMENT_BOUNDS[name]
        column = pc.struct_field(measurements, name)
        inside = pc.and_(pc.and_(pc.is_finite(column), pc.greater_equal(column, low)), pc.less_equal(column, high))
        checks.append(pc.or_(pc.is_null(column), pc.fill_null(inside, False)))
        present = pc.is_valid(column) if present is None else pc.or_(present, pc.is_valid(column))
    checks.append(present)
    ok = checks[0]
    for check in checks[1:]:
        ok = pc.and_(ok, check)
    return np.asarray(pc.fill_null(ok, False).to_numpy(zero_copy_only=False), dtype=bool)


def _absent_unknowns(table: pa.Table, values: list[bytes]) -> np.ndarray:
    """Rows that hold no field the contract does not know (kept in ``extra_json`` by the slow
    path), and no explicit ``"schema_version": null`` (refused there, absent here). A null column
    cell may be an absent field or a JSON null, so the value's bytes decide."""
    unknown = [name for name in table.column_names if name not in _TOP_FIELDS]
    unknown += [child.name for child in table.schema.field("measurements").type if child.name not in MEASUREMENT_NAMES]
    version_null = np.asarray(table["schema_version"].is_null().to_numpy(zero_copy_only=False), dtype=bool)
    keys = [f'"{name}"'.encode() for name in unknown]
    return np.array([not any(k in v for k in keys) and not (null and b'"schema_version"' in v) for v, null in zip(values, version_null, strict=True)], dtype=bool)


def _checked_times(table: pa.Table, positions: list[int], rows: np.ndarray, latest: datetime) -> PlainReadings | None:
    """The rows whose ``ts`` parses to a UTC instant from :data:`EARLIEST_TS` to ``latest``."""
    if not len(rows):
        return None
    picked = table.take(pa.array(rows, pa.int64()))
    keep, stamps = [], []
    for i, text in enumerate(picked["ts"].to_pylist()):
        try:
            stamp = datetime.fromisoformat(text).astimezone(timezone.utc)
        except (ValueError, OverflowError):
            continue
        if EARLIEST_TS <= stamp <= latest:
            keep.append(i)
            stamps.append(stamp)
    if not keep:
        return None
    picked = picked.take(pa.array(keep, pa.int64()))
    measurements = picked["measurements"].combine_chunks()
    return PlainReadings(
        positions=[positions[i] for i in keep],
        greenhouse_id=picked["greenhouse_id"].to_pylist(),
        device_id=picked["device_id"].to_pylist(),
        ts=stamps,
        ts_ms=[epoch_ms(t) for t in stamps],
        measurements={name: measurements.field(name) for name in MEASUREMENT_NAMES},
    )
