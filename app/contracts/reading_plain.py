"""One plain reading checked in plain Python: the ingest gateway's fast path.

:func:`~app.contracts.reading.validate_reading` builds the pydantic model (about 20 us a reading)
and :func:`~app.contracts.reading.reading_json` serialises it again (about 5 us). Nearly every
reading a device sends is *plain*: the contract's fields only, known measurements as numbers, an
RFC 3339 ``ts``. :func:`plain_reading` checks such a value with the same constants (the id pattern,
:data:`~app.contracts.reading.MEASUREMENT_BOUNDS`, :data:`~app.contracts.reading.EARLIEST_TS`, the
future skew) in a few microseconds and encodes it exactly as ``reading_json`` would. It never
rejects anything: any other value (an unknown field, a null, a number as ``ts``, a value out of
bounds, any doubt) gets ``None`` and goes to ``validate_reading``, which stays the one place a
reading is refused, with its reason. A test holds the two to the same answers on generated and
hostile values (``tests/test_contracts.py``-style, in ``tests/ingest/test_v3_logic.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from app.contracts.reading import EARLIEST_TS, ID_PATTERN, MEASUREMENT_BOUNDS, MEASUREMENT_NAMES, READING_SCHEMA_VERSION

_ID = re.compile(ID_PATTERN)
_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})")
_FIELDS = frozenset({"greenhouse_id", "device_id", "ts", "measurements"})
_FIELDS_VERSIONED = _FIELDS | {"schema_version"}


@dataclass(frozen=True, slots=True)
class PlainReading:
    """A valid plain reading's ids and its bus encoding (what ``reading_json`` makes of it)."""

    greenhouse_id: str
    device_id: str
    json: bytes


def plain_reading(value: Any, *, now: datetime, max_future_skew_s: float) -> PlainReading | None:
    """``value`` checked and encoded when it is certainly a plain, valid reading at ``now``;
    else ``None`` (see the module: ``validate_reading`` decides then)."""
    if type(value) is not dict or not (value.keys() == _FIELDS or (value.keys() == _FIELDS_VERSIONED and _is_version(value["schema_version"]))):
        return None
    greenhouse_id, device_id = value["greenhouse_id"], value["device_id"]
    if type(greenhouse_id) is not str or type(device_id) is not str or not _ID.fullmatch(greenhouse_id) or not _ID.fullmatch(device_id):
        return None
    ts = _utc_ts(value["ts"], now + timedelta(seconds=max_future_skew_s))
    measurements = _measurements(value["measurements"])
    if ts is None or measurements is None:
        return None
    encoded = {"schema_version": READING_SCHEMA_VERSION, "greenhouse_id": greenhouse_id, "device_id": device_id, "ts": ts, "measurements": measurements}
    return PlainReading(greenhouse_id, device_id, orjson.dumps(encoded))


def _is_version(version: Any) -> bool:
    return type(version) is int and version == READING_SCHEMA_VERSION


def _utc_ts(ts: Any, latest: datetime) -> str | None:
    """A strict RFC 3339 string from :data:`EARLIEST_TS` to ``latest`` as UTC text, else ``None``."""
    if type(ts) is not str or not _RFC3339.fullmatch(ts):
        return None
    try:
        stamp = datetime.fromisoformat(ts).astimezone(timezone.utc)
    except (ValueError, OverflowError):
        return None
    if not EARLIEST_TS <= stamp <= latest:
        return None
    return stamp.isoformat()[:-6] + "Z"  # "+00:00" -> "Z", as the model serialises UTC


def _measurements(measurements: Any) -> dict[str, float] | None:
    """Known measurements, each a finite number within its bounds, in the contract's order."""
    if type(measurements) is not dict or not measurements:
        return None
    for name, number in measurements.items():
        bounds = MEASUREMENT_BOUNDS.get(name)
        if bounds is None or type(number) not in (float, int) or not bounds[0] <= number <= bounds[1]:
            return None  # NaN and infinities fail the bounds too
    return {name: float(measurements[name]) for name in MEASUREMENT_NAMES if name in measurements}
