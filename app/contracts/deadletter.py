"""The dead-letter record contract (version 1): one rejected record on ``topics.deadletter``.

Whoever rejects a record (the ingest gateway at the edge, the lake sink reading the bus) writes
one :class:`DeadLetter` per record, as JSON, so that one reader can inspect, count or replay them::

    {"schema_version": 1, "source": "gateway", "source_topic": "greenhouse.sensors",
     "source_partition": null, "source_offset": null, "error_code": 42206,
     "reason": "measurements.rh_pct: Input should be less than or equal to 100 (got 140)",
     "received_at": "2026-06-01T12:00:01.250000Z", "payload": {"value": {...}}}
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

DEADLETTER_SCHEMA_VERSION: Final = 1


class DeadLetter(BaseModel):
    """One rejected record, with why and where it was rejected."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = DEADLETTER_SCHEMA_VERSION
    source: Literal["gateway", "sink"] = Field(description="who rejected the record")
    source_topic: str = Field(description="the topic the record was sent to, or read from")
    source_partition: int | None = Field(default=None, description="bus partition, when it was on the bus")
    source_offset: int | None = Field(default=None, description="bus offset, when it was on the bus")
    error_code: int = Field(description="the ingest error code (42206 contract, 42203 not decodable, ...)")
    reason: str = Field(description="one line naming the field and the problem")
    received_at: datetime = Field(description="when the record arrived (request time, or bus append time)")
    payload: Any = Field(description="the record as received: at the gateway the REST Proxy record ({'value': ...}); at the sink the bus message value (its JSON, or its text when it is not JSON)")

    def to_json(self) -> bytes:
        """The bytes written to the dead-letter topic."""
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> DeadLetter:
        """Parse a dead-letter topic message value."""
        return cls.model_validate_json(raw)
