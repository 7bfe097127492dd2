"""The bus interface: Kafka's semantics, whatever the engine.

Topics have a fixed number of partitions; a record's partition is chosen from its key (so one
greenhouse stays ordered) unless given; every partition is an append-only log with dense offsets.
Consumers belong to a group, read from the group's committed offsets, and commit explicitly (the
offset committed is the *next* offset to read, as in Kafka).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """A record to produce. ``partition=None`` lets the key choose."""

    value: bytes
    key: bytes | None = None
    partition: int | None = None


@dataclass(frozen=True, slots=True)
class ProduceResult:
    """Where one produced record landed, or why it did not (``error`` set, partition/offset None)."""

    partition: int | None
    offset: int | None
    error: str | None = None
    retriable: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class Message:
    """A consumed record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class TopicPartition:
    topic: str
    partition: int


class BusError(RuntimeError):
    """A bus operation failed; ``retriable`` tells whether trying again may succeed."""

    def __init__(self, message: str, *, retriable: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable


class UnknownTopicError(BusError):
    """The topic does not exist."""


@runtime_checkable
class Consumer(Protocol):
    """A member of a consumer group reading the partitions of its topics assigned to it."""

    def poll(self, max_records: int = 500, timeout_s: float = 1.0) -> list[Message]:
        """Up to ``max_records`` messages after the current position, waiting at most ``timeout_s``."""
        ...

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Durably record, for the group, the next offset to read in each partition."""
        ...

    def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset for a partition, or ``None`` if never committed."""
        ...

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Move this consumer's position in a partition (not the committed offset)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Bus(Protocol):
    """A durable, partitioned log (embedded SQLite log or Apache Kafka)."""

    def create_topic(self, topic: str, partitions: int) -> None:
        """Create a topic if it does not exist (existing topics keep their partition count)."""
        ...

    def partitions_for(self, topic: str) -> int:
        """Partition count; raises :class:`UnknownTopicError` for unknown topics."""
        ...

    def list_topics(self) -> dict[str, int]:
        """All topics and their partition counts."""
        ...

    def produce(self, topic: str, records: Sequence[OutgoingRecord]) -> list[ProduceResult]:
        """Append records durably; one result per record, in order. Returns only when durable."""
        ...

    def end_offsets(self, topic: str) -> dict[int, int]:
        """Per partition, the offset the next produced record will get."""
        ...

    def consumer(self, group_id: str, topics: Sequence[str], partitions: Sequence[int] | None = None) -> Consumer:
        """A consumer in ``group_id`` positioned at the group's committed offsets (or the start),
        assigned every partition of ``topics``, or only those numbered in ``partitions``."""
        ...

    def close(self) -> None: ...


def partition_for_key(key: bytes | None, partitions: int, fallback: int = 0) -> int:
    """Stable key -> partition mapping (CRC32; records without a key use ``fallback``)."""
    if key is None:
        return fallback % partitions
    return zlib.crc32(key) % partitions


def target_partition(record: OutgoingRecord, partitions: int, fallback: int) -> int | None:
    """Where ``record`` goes: the partition it names (``None`` when out of range), else by its key
    (records without a key use ``fallback``, the caller's round-robin counter)."""
    if record.partition is not None:
        return record.partition if 0 <= record.partition < partitions else None
    return partition_for_key(record.key, partitions, fallback=fallback)
