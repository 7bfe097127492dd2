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

from app.contracts.reading import EARLIEST_TS, ID_PATTERN, MEASUREMENT_BOUNDS, MEASUREMENT_NAMES, ON_BUS_MAX_FUTURE_SKEW_S, READING_SCHEMA_VERSION

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
    """The plain values of a chunk, as columns (no Python object per reading): their positions in
    it (``int64``), ``greenhouse_id`` and ``device_id`` (Arrow strings), ``ts_ms`` (``int64`` epoch
    milliseconds of the UTC instant) and one Arrow column per known measurement."""

    positions: np.ndarray
    greenhouse_id: pa.Array
    device_id: pa.Array
    ts_ms: np.ndarray
    measurements: dict[str, pa.Array]

    def __len__(self) -> int:
        return len(self.positions)


def plain_readings(values: Sequence[bytes], *, now: datetime | None = None) -> PlainReadings:
    """The values of ``values`` that are certainly plain, valid readings (see the module)."""
    latest = (now or datetime.now(timezone.utc)) + timedelta(seconds=ON_BUS_MAX_FUTURE_SKEW_S)
    found: list[PlainReadings] = []
    for start in range(0, len(values), BLOCK):
        found += _plain_block(values, _unsuspected(values, range(start, min(start + BLOCK, len(values)))), latest)
    if not found:
        return PlainReadings(np.zeros(0, np.int64), pa.array([], pa.string()), pa.array([], pa.string()), np.zeros(0, np.int64), {name: pa.array([], pa.float64()) for name in MEASUREMENT_NAMES})
    return PlainReadings(
        positions=np.concatenate([p.positions for p in found]),
        greenhouse_id=pa.concat_arrays([p.greenhouse_id for p in found]),
        device_id=pa.concat_arrays([p.device_id for p in found]),
        ts_ms=np.concatenate([p.ts_ms for p in found]),
        measurements={name: pa.concat_arrays([p.measurements[name] for p in found]) for name in MEASUREMENT_NAMES},
    )


def _unsuspected(values: Sequence[bytes], block: range) -> list[int]:
    """The positions of ``block`` whose values are not :func:`_suspect` (looked for in the whole
    block at once first: most blocks have no line break and no escape anywhere)."""
    joined = b"".join(values[i] for i in block)
    if b"\n" in joined or b"\\u" in joined:
        return [i for i in block if not _suspect(values[i])]
    return [i for i in block if values[i].strip()]


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
    if not unknown and not version_null.any():  # the usual block: nothing to look for
        return np.ones(len(values), dtype=bool)
    keys = [f'"{name}"'.encode() for name in unknown]
    return np.array([not any(k in v for k in keys) and not (null and b'"schema_version"' in v) for v, null in zip(values, version_null, strict=True)], dtype=bool)


def _checked_times(table: pa.Table, positions: list[int], rows: np.ndarray, latest: datetime) -> PlainReadings | None:
    """The rows whose ``ts`` parses to a UTC instant from :data:`EARLIEST_TS` to ``latest``."""
    if not len(rows):
        return None
    picked = table.take(pa.array(rows, pa.int64()))
    micros = _epoch_us(picked["ts"])
    keep = np.flatnonzero((micros >= _epoch_us_of(EARLIEST_TS)) & (micros <= _epoch_us_of(latest)))
    if not len(keep):
        return None
    picked = picked.take(pa.array(keep, pa.int64()))
    measurements = picked["measurements"].combine_chunks()
    return PlainReadings(
        positions=np.asarray(positions, dtype=np.int64)[keep],
        greenhouse_id=picked["greenhouse_id"].combine_chunks(),
        device_id=picked["device_id"].combine_chunks(),
        ts_ms=micros[keep] // 1000,  # floor, as epoch_ms and Arrow's timestamp("ms") truncate
        measurements={name: measurements.field(name) for name in MEASUREMENT_NAMES},
    )


_UNPARSED = np.iinfo(np.int64).min  # below any bound: the row is left to the slow path


def _epoch_us(stamps: pa.ChunkedArray) -> np.ndarray:
    """RFC 3339 strings (already matched by :data:`_RFC3339`) as epoch microseconds, in bulk; when
    one of them is no real instant (a 30 February, a 24:00 offset) Arrow refuses the whole column,
    and each is then parsed alone, the bad ones marked :data:`_UNPARSED`."""
    try:
        return pc.cast(stamps, pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return np.array([_one_epoch_us(text) for text in stamps.to_pylist()], dtype=np.int64)


def _one_epoch_us(text: str) -> int:
    try:
        return _epoch_us_of(datetime.fromisoformat(text))
    except (ValueError, OverflowError):
        return int(_UNPARSED)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _epoch_us_of(stamp: datetime) -> int:
    return (stamp - _EPOCH) // timedelta(microseconds=1)
