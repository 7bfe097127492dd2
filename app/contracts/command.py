"""The control command contract (version 1): what the serving side sends to a greenhouse.

A command is idempotent by ``command_id``, expires at ``valid_until``, names the model that
produced it and the forecast that led to it, and is signed (HMAC-SHA256 over its canonical JSON
without the signature) so that the actuator side can verify who sent it.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from datetime import datetime, timezone
from typing import Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.contracts.reading import ID_PATTERN

COMMAND_SCHEMA_VERSION: Final = 1


class Setpoints(BaseModel):
    """Actuator setpoints in percent of full travel / capacity."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vent_pct: float = Field(ge=0.0, le=100.0, allow_inf_nan=False)
    heat_pct: float = Field(ge=0.0, le=100.0, allow_inf_nan=False)
    screen_pct: float = Field(ge=0.0, le=100.0, allow_inf_nan=False)

    @classmethod
    def clamped(cls, vent_pct: float = 0.0, heat_pct: float = 0.0, screen_pct: float = 0.0) -> Setpoints:
        """Setpoints with each value clamped into 0..100 (what an actuator can do with any
        request); a non-finite value raises ``ValueError``."""
        values = {"vent_pct": vent_pct, "heat_pct": heat_pct, "screen_pct": screen_pct}
        for name, value in values.items():
            if not math.isfinite(float(value)):
                raise ValueError(f"{name} must be finite (got {value!r})")
        return cls(**{name: min(max(float(value), 0.0), 100.0) for name, value in values.items()})


class ModelRef(BaseModel):
    """The model (registry name and version) that produced a command; ``rule-based`` for fallbacks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    version: str = Field(min_length=1, max_length=64)


class ControlCommand(BaseModel):
    """A signed, expiring, idempotent actuator command for one greenhouse."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = COMMAND_SCHEMA_VERSION
    command_id: str = Field(min_length=8, max_length=128)
    greenhouse_id: str = Field(pattern=ID_PATTERN)
    issued_at: datetime
    valid_until: datetime
    setpoints: Setpoints
    model: ModelRef
    reason: dict[str, Any] = Field(default_factory=dict)
    dry_run: bool = False
    signature: str | None = None

    @field_validator("issued_at", "valid_until")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("timestamps must carry a UTC offset")
        return value.astimezone(timezone.utc)

    @model_validator(mode="after")
    def _window(self) -> ControlCommand:
        if self.valid_until <= self.issued_at:
            raise ValueError("valid_until must be after issued_at")
        return self

    def canonical_bytes(self) -> bytes:
        """The bytes that are signed: sorted-key JSON of every field except ``signature``."""
        payload = self.model_dump(mode="json", exclude={"signature"})
        return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)

    def signed(self, key: bytes) -> ControlCommand:
        """A copy carrying the HMAC-SHA256 signature made with ``key``."""
        digest = hmac.new(key, self.canonical_bytes(), hashlib.sha256).hexdigest()
        return self.model_copy(update={"signature": digest})

    def verify(self, key: bytes) -> bool:
        """True when the signature matches ``key`` (constant-time comparison)."""
        if not self.signature:
            return False
        expected = hmac.new(key, self.canonical_bytes(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, self.signature)

    def is_expired(self, now: datetime) -> bool:
        """True once ``now`` is at or past ``valid_until``."""
        return now >= self.valid_until
