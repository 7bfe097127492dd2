"""The bus interface: Kafka's semantics, whatever the engine.

Topics have a fixed number of partitions; a record's partition is chosen from its key (so one
greenhouse stays ordered) unless given; every partition is an append-only log with dense offsets.
Consumers belong to a group, read from the group's committed offsets, and commit explicitly (the
offset committed is the *next* offset to read, as in Kafka).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from app.bus.metrics import count_lost_offsets

log = logging.getLogger(__name__)


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


class LostRecordsError(BusError):
    """A consumer's position in a partition points at records the bus no longer holds (deleted by
    retention, or by :meth:`Bus.delete_records`) before the consumer read them. Consumers raise it
    instead of skipping silently to the earliest record still there; a consumer opened with
    ``skip_lost=True`` skips instead (logged and counted). ``position``: the next offset the
    consumer was to read; ``earliest``: the partition's first offset still held; the
    ``earliest - position`` records between them are lost."""

    def __init__(self, topic: str, partition: int, position: int, earliest: int, *, context: str = "", remedy: str = "") -> None:
        self.topic, self.partition, self.position, self.earliest = topic, partition, position, earliest
        lead = f"{context}: " if context else ""
        super().__init__(
            f"{lead}{topic}/{partition}: the next offset to read, {position}, is no longer on the bus (earliest offset held: {earliest}); "
            f"{earliest - position} records were deleted by retention before they were read. Refusing to skip them silently" + (f"; {remedy}" if remedy else "")
        )

    @property
    def lost(self) -> int:
        """How many offsets were deleted before they were read."""
        return max(0, self.earliest - self.position)


@runtime_checkable
class Consumer(Protocol):
    """A member of a consumer group reading the partitions of its topics assigned to it."""

    def poll(self, max_records: int = 500, timeout_s: float = 1.0) -> list[Message]:
        """Up to ``max_records`` messages after the current position, waiting at most ``timeout_s``;
        those of one partition in offset order."""
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

    @property
    def skipped(self) -> dict[TopicPartition, int]:
        """Offsets passed over per partition because retention deleted them before they were read
        (only with ``skip_lost=True``; otherwise :meth:`poll` raises :class:`LostRecordsError`)."""
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

    def start_offsets(self, topic: str) -> dict[int, int]:
        """Per partition, the earliest offset still held (the end offset when retention deleted
        every record)."""
        ...

    def delete_records(self, topic: str, before: dict[int, int]) -> None:
        """Delete, per partition, the records below the given offset (what retention does; Kafka's
        DeleteRecords). For operators and tests: consumers behind it then raise
        :class:`LostRecordsError`."""
        ...

    def consumer(self, group_id: str, topics: Sequence[str], partitions: Sequence[int] | None = None, *, skip_lost: bool = False) -> Consumer:
        """A consumer in ``group_id`` positioned at the group's committed offsets (or the start of
        the log when the group never committed), assigned every partition of ``topics``, or only
        those numbered in ``partitions``.

        A position whose records retention deleted before they were read makes :meth:`Consumer.poll`
        raise :class:`LostRecordsError` (and counts ``gh_bus_offsets_lost_total``); it never moves
        on silently. ``skip_lost=True`` moves on to the earliest record held instead (logged,
        counted, and in :attr:`Consumer.skipped`): for views that may miss data (a window that
        backfills), never for a consumer that must see every record."""
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


def lost_records(tp: TopicPartition, position: int, earliest: int, *, group_id: str, skip_lost: bool, skipped: dict[TopicPartition, int]) -> LostRecordsError | None:
    """A consumer of ``group_id`` found records ``[position, earliest)`` of ``tp`` deleted before
    it read them: count them (``gh_bus_offsets_lost_total``) and return the error to raise; with
    ``skip_lost``, log it, add them to ``skipped`` and return ``None`` (the caller moves on to
    ``earliest``)."""
    count_lost_offsets(tp.topic, tp.partition, earliest - position, skipped=skip_lost)
    lost = LostRecordsError(tp.topic, tp.partition, position, earliest, context=f"consumer group {group_id}")
    if not skip_lost:
        return lost
    log.error("%s; skip_lost: moving on to offset %d", lost, earliest)
    skipped[tp] = skipped.get(tp, 0) + lost.lost
    return None
