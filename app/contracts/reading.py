"""The sensor reading contract (version 1), validated at the ingest edge.

A reading is what one device reports at one instant::

    {"schema_version": 1, "greenhouse_id": "gh-01", "device_id": "gh-01-climate",
     "ts": "2026-06-01T12:00:00Z", "measurements": {"air_temp_c": 21.3, "rh_pct": 71.2}}

``ts`` is RFC 3339 (any offset, normalised to UTC) or epoch milliseconds. Known measurements carry
their unit in the name and physical bounds; impossible values are rejected with a reason. Unknown
measurements (numbers, strings, booleans) and unknown top-level fields (any JSON nested at most
:data:`MAX_UNKNOWN_FIELD_DEPTH` levels) are kept so that newer devices do not lose data on an older
gateway.

Every check a reading goes through lives here and nowhere else: :func:`validate_reading` (a
decoded value: the gateway, a caller's window) and :func:`reading_from_bus` (a bus message value:
the lake sink, the serving window's topic follower) are the only entry points.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, field_validator, model_validator
from pydantic_core import PydanticCustomError

READING_SCHEMA_VERSION: Final = 1
EARLIEST_TS = datetime(2000, 1, 1, tzinfo=timezone.utc)
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""Greenhouse and device ids: 1-64 letters, digits, ``_``, ``.``, ``-``, starting with a letter or
digit. A greenhouse id is a hive partition value in lake paths (``greenhouse_id=<id>``), so it may
hold nothing a lake backend refuses or escapes in a path name (HDFS refuses ``:``; Hive escapes
``:``, ``=``, ``%``, ``/``, ``#``, ``?``, ``*``, quotes, brackets and control characters)."""

MAX_EPOCH_MS = 253_402_300_799_999
"""The largest epoch-milliseconds ``ts`` that is a date at all (9999-12-31T23:59:59.999Z)."""

MAX_UNKNOWN_FIELD_DEPTH = 8
"""How deeply an unknown top-level field may nest objects and arrays. Deeper ones are rejected:
they are no sensor data, and JSON encoders (orjson, pydantic) refuse nesting past ~255 levels."""

DEFAULT_MAX_FUTURE_SKEW_S = 86_400.0
"""How far past the receiver's clock a reading's ``ts`` may be at the edge (one day)."""

ON_BUS_MAX_FUTURE_SKEW_S = 10 * 365 * 86_400.0
"""The same bound for readings already on the bus (ten years): the gateway checked them against
its own clock on arrival, and consumers replay them at any later (or simulated) time, so they only
guard against absurd timestamps."""

# name -> (lower bound, upper bound) of physically possible values, inclusive.
MEASUREMENT_BOUNDS: dict[str, tuple[float, float]] = {
    "air_temp_c": (-50.0, 70.0),
    "rh_pct": (0.0, 100.0),
    "co2_ppm": (0.0, 10_000.0),
    "par_umol_m2_s": (0.0, 3_000.0),
    "outside_temp_c": (-60.0, 60.0),
    "outside_rh_pct": (0.0, 100.0),
    "solar_w_m2": (0.0, 1_500.0),
    "wind_m_s": (0.0, 75.0),
    "vent_pct": (0.0, 100.0),
    "heat_pct": (0.0, 100.0),
    "screen_pct": (0.0, 100.0),
}
MEASUREMENT_NAMES: tuple[str, ...] = tuple(MEASUREMENT_BOUNDS)


def _bounded(name: str) -> Any:
    low, high = MEASUREMENT_BOUNDS[name]
    return Field(default=None, ge=low, le=high, allow_inf_nan=False)


class Measurements(BaseModel):
    """Known measurements with physical bounds; unknown scalar measurements are kept."""

    model_config = ConfigDict(extra="allow", frozen=True, json_schema_extra={"additionalProperties": {"type": ["number", "string", "boolean", "null"]}, "minProperties": 1})

    air_temp_c: float | None = _bounded("air_temp_c")
    rh_pct: float | None = _bounded("rh_pct")
    co2_ppm: float | None = _bounded("co2_ppm")
    par_umol_m2_s: float | None = _bounded("par_umol_m2_s")
    outside_temp_c: float | None = _bounded("outside_temp_c")
    outside_rh_pct: float | None = _bounded("outside_rh_pct")
    solar_w_m2: float | None = _bounded("solar_w_m2")
    wind_m_s: float | None = _bounded("wind_m_s")
    vent_pct: float | None = _bounded("vent_pct")
    heat_pct: float | None = _bounded("heat_pct")
    screen_pct: float | None = _bounded("screen_pct")

    def model_post_init(self, __context: Any) -> None:
        extras = self.model_extra or {}
        for key, value in extras.items():
            if isinstance(value, bool) or value is None or isinstance(value, str):
                continue
            if isinstance(value, (int, float)):
                if isinstance(value, float) and not math.isfinite(value):
                    raise ValueError(f"measurement {short_repr(key)} must be finite")
                continue
            raise ValueError(f"measurement {short_repr(key)} must be a number, string or boolean")
        if all(getattr(self, name) is None for name in MEASUREMENT_NAMES) and all(v is None for v in extras.values()):
            raise ValueError("measurements must hold at least one value")

    def known(self) -> dict[str, float | None]:
        """The known measurements (``None`` where absent)."""
        return {name: getattr(self, name) for name in MEASUREMENT_NAMES}

    def unknown(self) -> dict[str, Any]:
        """Measurements this schema version does not know, kept as sent."""
        return dict(self.model_extra or {})


_TS_JSON_SCHEMA = {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "number", "minimum": 0, "maximum": MAX_EPOCH_MS}], "description": "RFC 3339 with an offset, or epoch milliseconds"}


class Reading(BaseModel):
    """One device's report at one instant (contract version 1)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    schema_version: Literal[1] = READING_SCHEMA_VERSION
    greenhouse_id: str = Field(pattern=ID_PATTERN)
    device_id: str = Field(pattern=ID_PATTERN)
    ts: Annotated[datetime, WithJsonSchema(_TS_JSON_SCHEMA)]
    measurements: Measurements

    @field_validator("ts", mode="before")
    @classmethod
    def _parse_ts(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("ts must be an RFC 3339 string or epoch milliseconds")
        if isinstance(value, (int, float)):
            # bounded before converting: 1e20 would overflow the platform's time_t (a crash, not a reason)
            if not 0 <= value <= MAX_EPOCH_MS:  # also refuses NaN and +-Inf
                raise ValueError(f"ts must be finite epoch milliseconds from 0 to {MAX_EPOCH_MS}")
            return datetime.fromtimestamp(value / 1000.0, tz=timezone.utc)
        return value

    @field_validator("ts")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("ts must carry a UTC offset (e.g. 'Z')")
        try:
            value = value.astimezone(timezone.utc)
        except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00 is past datetime.max in UTC
            raise ValueError("ts is out of range") from None
        if value < EARLIEST_TS:
            raise ValueError(f"ts {value.isoformat()} is before {EARLIEST_TS.date()}")
        return value

    @model_validator(mode="after")
    def _bounded_unknown_fields(self) -> Reading:
        for key, value in (self.model_extra or {}).items():
            if isinstance(value, (dict, list)) and json_depth(value, MAX_UNKNOWN_FIELD_DEPTH) > MAX_UNKNOWN_FIELD_DEPTH:
                raise PydanticCustomError(_TOO_DEEP, "unknown field {name} is nested deeper than {limit} levels", {"name": short_repr(key), "limit": MAX_UNKNOWN_FIELD_DEPTH})
        return self

    @property
    def ts_ms(self) -> int:
        """Timestamp as epoch milliseconds."""
        return epoch_ms(self.ts)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def epoch_ms(ts: datetime) -> int:
    """A UTC instant as whole epoch milliseconds, truncated exactly as Arrow's ``timestamp("ms")``
    stores it (integer arithmetic: no float rounding of sub-millisecond parts)."""
    return (ts - _EPOCH) // timedelta(milliseconds=1)


_TOO_DEEP = "unknown_field_too_deep"


def json_depth(value: Any, limit: int) -> int:
    """How deeply ``value`` (decoded JSON) nests objects and arrays (a scalar is 0, ``{"a": 1}`` is
    1), counted level by level without recursion and only up to ``limit + 1``."""
    depth = 0
    level = [value]
    while depth <= limit:
        containers = [v for v in level if isinstance(v, (dict, list))]
        if not containers:
            return depth
        depth += 1
        level = [child for c in containers for child in (c.values() if isinstance(c, dict) else c)]
    return depth


def short_repr(value: Any, limit: int = 40) -> str:
    """``repr`` of a scalar cut to ``limit`` characters; a container only by its type (its repr
    could be huge or nested too deeply to print)."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, int) and value.bit_length() > 64:
        return "a huge integer"  # repr of a 4300-digit int raises ValueError
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_reading(value: Any, *, now: datetime | None = None, max_future_skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S) -> Reading:
    """Validate one decoded reading (the one place every reading check is made).

    Checks the contract (ids, ``schema_version``), the time window (tz-aware, not before
    :data:`EARLIEST_TS`, at most ``max_future_skew_s`` past ``now``, default the current UTC
    time), the :data:`MEASUREMENT_BOUNDS` and finiteness (no NaN/Inf) of every number.

    Raises:
        ReadingError: with a one-line ``reason`` naming the field, when ``value`` is invalid.
    """
    try:
        reading = Reading.model_validate(value)
    except ValidationError as exc:
        raise ReadingError(format_validation_error(exc)) from None
    except ValueError as exc:  # raised from model_post_init
        raise ReadingError(str(exc)) from None
    now = now or datetime.now(timezone.utc)
    if reading.ts > now + timedelta(seconds=max_future_skew_s):
        raise ReadingError(f"ts: {reading.ts.isoformat()} is more than {max_future_skew_s:.0f} s in the future")
    return reading


def reading_json(reading: Reading) -> bytes:
    """A valid reading as the bus holds it: its JSON without absent fields (``ts`` in RFC 3339 UTC)."""
    return orjson.dumps(reading.model_dump(mode="json", exclude_none=True))


def reading_from_bus(raw: bytes | str, *, now: datetime | None = None) -> Reading:
    """Decode and validate a reading as stored on the bus (its JSON), for consumers of the topic.

    The time window is :data:`ON_BUS_MAX_FUTURE_SKEW_S` past ``now``; everything else is
    :func:`validate_reading`.

    Raises:
        UndecodableReading: ``raw`` is not JSON.
        ReadingError: the decoded value violates the contract.
    """
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UndecodableReading(f"value: not JSON ({exc})") from None
    return validate_reading(value, now=now, max_future_skew_s=ON_BUS_MAX_FUTURE_SKEW_S)


def reason_code(reason: str) -> str:
    """A short stable key of a rejection reason, for counting by cause: the field path before
    the first ``:`` (e.g. ``measurements.rh_pct``), or ``invalid``."""
    return reason.split(":", 1)[0].strip() or "invalid"


class ReadingError(ValueError):
    """A reading that violates the contract; ``reason`` says why in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    @property
    def reason_code(self) -> str:
        """A short stable key for counting rejections by cause (see :func:`reason_code`)."""
        return reason_code(self.reason)


class UndecodableReading(ReadingError):
    """A value that is not a reading's encoding at all (not JSON), as opposed to a decoded value
    that breaks the contract."""


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``field.path: message (got value)``; joined with ``; ``.

    The field path names schema fields only (an unknown field's problem is under ``extra``), so
    that the part before the first ``:`` is a bounded set of keys (:func:`reason_code`)."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = "extra" if err["type"] == _TOO_DEEP else ".".join(str(p) for p in err["loc"]) or "value"
        msg = err["msg"]
        if err["type"] not in ("missing", _TOO_DEEP) and "input" in err and not isinstance(err["input"], dict):
            msg = f"{msg} (got {short_repr(err['input'])})"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)
