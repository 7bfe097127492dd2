"""The control command contract (version 1): what the serving side sends to a greenhouse.

A command is idempotent by ``command_id``, takes effect from ``issued_at`` (a not-before: the
actuator side refuses one issued further ahead than its clock skew allows) until ``valid_until``,
names the model that produced it, the forecast that led to it and who asked for it, carries a per
greenhouse monotonic ``sequence`` (an older command never overrides a newer one), and is signed:
Ed25519 over its canonical JSON without the signature, by the key named ``key_id``, so that actuator
sites hold public keys only and a key can be rotated.

This module does no I/O: signing and verifying take key objects (``app.security.signing`` loads them).
"""

from __future__ import annotations

import base64
import binascii
import math
from datetime import datetime, timezone
from typing import Any, Final, Literal

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.contracts.reading import ID_PATTERN

COMMAND_SCHEMA_VERSION: Final = 1
KEY_ID_PATTERN: Final = r"^[0-9a-f]{8,64}$"


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
    """A signed, expiring, idempotent, sequenced actuator command for one greenhouse.

    ``key_id``, ``sequence`` and ``signature`` are empty on a decision and stamped by the
    dispatcher; the actuator side refuses a command without them."""

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
    requested_by: str | None = Field(default=None, min_length=1, max_length=200, description="the operator or service that asked for it")
    sequence: int | None = Field(default=None, ge=0, description="per greenhouse, strictly increasing in dispatch order")
    key_id: str | None = Field(default=None, pattern=KEY_ID_PATTERN, description="the signing key (its public key verifies the signature)")
    signature: str | None = Field(default=None, max_length=200, description="base64 Ed25519 signature of canonical_bytes()")

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

    def signed(self, private_key: Ed25519PrivateKey, key_id: str) -> ControlCommand:
        """A copy naming ``key_id`` and carrying the Ed25519 signature ``private_key`` makes over
        it (the key id is signed too: a signature cannot be moved to another key's name)."""
        named = self.model_copy(update={"key_id": key_id, "signature": None})
        signature = private_key.sign(named.canonical_bytes())
        return named.model_copy(update={"signature": base64.b64encode(signature).decode("ascii")})

    def verify(self, public_key: Ed25519PublicKey) -> bool:
        """True when the signature is ``public_key``'s over this command; False when unsigned,
        not base64, or not matching (any field changed since signing)."""
        if not self.signature:
            return False
        try:
            public_key.verify(base64.b64decode(self.signature, validate=True), self.canonical_bytes())
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True

    def is_expired(self, now: datetime) -> bool:
        """True once ``now`` is at or past ``valid_until``."""
        return now >= self.valid_until

    def is_future(self, now: datetime, max_clock_skew_s: float) -> bool:
        """True when ``issued_at`` (the not-before) is more than ``max_clock_skew_s`` after ``now``."""
        return (self.issued_at - now).total_seconds() > max_clock_skew_s
