"""The sensor reading contract (version 1), validated at the ingest edge.

A reading is what one device reports at one instant::

    {"schema_version": 1, "greenhouse_id": "gh-01", "device_id": "gh-01-climate",
     "ts": "2026-06-01T12:00:00Z", "measurements": {"air_temp_c": 21.3, "rh_pct": 71.2}}

``ts`` is RFC 3339 (any offset, normalised to UTC) or epoch milliseconds. Known measurements carry
their unit in the name and physical bounds; impossible values are rejected with a reason. Unknown
measurements and unknown top-level fields are kept (numbers, strings, booleans) so that newer
devices do not lose data on an older gateway.

Every check a reading goes through lives here and nowhere else: :func:`validate_reading` (a
decoded value: the gateway, a caller's window) and :func:`reading_from_bus` (a bus message value:
the lake sink, the serving window's topic follower) are the only entry points.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

READING_SCHEMA_VERSION: Final = 1
EARLIEST_TS = datetime(2000, 1, 1, tzinfo=timezone.utc)
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"

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

    model_config = ConfigDict(extra="allow", frozen=True)

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
                    raise ValueError(f"measurement {key!r} must be finite")
                continue
            raise ValueError(f"measurement {key!r} must be a number, string or boolean")
        if not any(v is not None for v in self.model_dump().values()):
            raise ValueError("measurements must hold at least one value")

    def known(self) -> dict[str, float | None]:
        """The known measurements (``None`` where absent)."""
        return {name: getattr(self, name) for name in MEASUREMENT_NAMES}

    def unknown(self) -> dict[str, Any]:
        """Measurements this schema version does not know, kept as sent."""
        return dict(self.model_extra or {})


class Reading(BaseModel):
    """One device's report at one instant (contract version 1)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    schema_version: Literal[1] = READING_SCHEMA_VERSION
    greenhouse_id: str = Field(pattern=ID_PATTERN)
    device_id: str = Field(pattern=ID_PATTERN)
    ts: datetime
    measurements: Measurements

    @field_validator("ts", mode="before")
    @classmethod
    def _parse_ts(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("ts must be an RFC 3339 string or epoch milliseconds")
        if isinstance(value, (int, float)):
            if not math.isfinite(value):
                raise ValueError("ts must be finite")
            return datetime.fromtimestamp(value / 1000.0, tz=timezone.utc)
        return value

    @field_validator("ts")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("ts must carry a UTC offset (e.g. 'Z')")
        value = value.astimezone(timezone.utc)
        if value < EARLIEST_TS:
            raise ValueError(f"ts {value.isoformat()} is before {EARLIEST_TS.date()}")
        return value

    @property
    def ts_ms(self) -> int:
        """Timestamp as epoch milliseconds."""
        return int(self.ts.timestamp() * 1000)


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
    """One line per problem: ``field.path: message (got value)``; joined with ``; ``."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "value"
        msg = err["msg"]
        if err["type"] not in ("missing",) and "input" in err and not isinstance(err["input"], dict):
            got = repr(err["input"])
            if len(got) > 40:
                got = got[:37] + "..."
            msg = f"{msg} (got {got})"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)
