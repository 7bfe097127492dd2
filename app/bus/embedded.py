"""The embedded bus: a durable, partitioned log in one SQLite file (WAL, fsync on commit).

It keeps Kafka's semantics that the product relies on (topics, key-hashed partitions, dense
offsets, consumer groups with committed offsets) so that code written against it runs on Kafka
unchanged. Several processes may produce and consume at once (SQLite serialises writers).
Unlike Kafka it does not rebalance partitions among members of one group: every member reads
every partition, so run one member per group. It has no time- or size-based retention: records
leave the log only through :meth:`EmbeddedBus.delete_records` (Kafka's DeleteRecords), and a
consumer whose position is below what is left raises :class:`~app.bus.base.LostRecordsError`
exactly as on Kafka (or skips, counted, with ``skip_lost``).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from app.bus.base import BusError, LostRecordsError, Message, OutgoingRecord, ProduceResult, TopicPartition, UnknownTopicError, lost_records, target_partition

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (name TEXT PRIMARY KEY, partitions INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS heads (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    key BLOB, value BLOB NOT NULL, ts_ms INTEGER NOT NULL,
    PRIMARY KEY (topic, partition, offset)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_offsets (
    group_id TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,
    offset INTEGER NOT NULL, PRIMARY KEY (group_id, topic, partition)) WITHOUT ROWID;
"""


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=60.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk before produce() returns, which is what "accepted" promises.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=60000")
    return conn


class EmbeddedBus:
    """A :class:`~app.bus.base.Bus` stored in ``<directory>/bus.sqlite3``."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._path = self.directory / "bus.sqlite3"
        self._lock = threading.Lock()
        self._conn = _connect(self._path)
        with self._lock:
            self._conn.executescript(_SCHEMA)
        self._partitions_cache: dict[str, int] = {}
        self._round_robin = 0

    def __reduce__(self):  # reopen by path in another process (Ray tasks, Serve replicas)
        return (EmbeddedBus, (str(self.directory),))

    # -- topics -----------------------------------------------------------------------------
    def create_topic(self, topic: str, partitions: int) -> None:
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute("INSERT OR IGNORE INTO topics(name, partitions) VALUES (?, ?)", (topic, partitions))
                (count,) = self._conn.execute("SELECT partitions FROM topics WHERE name = ?", (topic,)).fetchone()
                self._conn.executemany("INSERT OR IGNORE INTO heads(topic, partition, next_offset) VALUES (?, ?, 0)", [(topic, p) for p in range(count)])
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def partitions_for(self, topic: str) -> int:
        cached = self._partitions_cache.get(topic)
        if cached is not None:
            return cached
        with self._lock:
            row = self._conn.execute("SELECT partitions FROM topics WHERE name = ?", (topic,)).fetchone()
        if row is None:
            raise UnknownTopicError(f"topic {topic!r} does not exist")
        self._partitions_cache[topic] = row[0]
        return row[0]

    def list_topics(self) -> dict[str, int]:
        with self._lock:
            rows = self._conn.execute("SELECT name, partitions FROM topics ORDER BY name").fetchall()
        return {name: count for name, count in rows}

    def end_offsets(self, topic: str) -> dict[int, int]:
        self.partitions_for(topic)
        with self._lock:
            rows = self._conn.execute("SELECT partition, next_offset FROM heads WHERE topic = ? ORDER BY partition", (topic,)).fetchall()
        return {p: o for p, o in rows}

    def start_offsets(self, topic: str) -> dict[int, int]:
        ends = self.end_offsets(topic)
        with self._lock:
            rows = self._conn.execute("SELECT partition, MIN(offset) FROM records WHERE topic = ? GROUP BY partition", (topic,)).fetchall()
        return {**ends, **{p: o for p, o in rows}}

    def delete_records(self, topic: str, before: dict[int, int]) -> None:
        ends = self.end_offsets(topic)
        for partition, offset in before.items():
            if partition not in ends:
                raise BusError(f"{topic!r} has no partition {partition}")
            if not 0 <= offset <= ends[partition]:
                raise BusError(f"deleting records of {topic}/{partition} before {offset} failed: offsets end at {ends[partition]}")
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany("DELETE FROM records WHERE topic = ? AND partition = ? AND offset < ?", [(topic, p, o) for p, o in before.items()])
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    # -- produce ----------------------------------------------------------------------------
    def produce(self, topic: str, records: Sequence[OutgoingRecord]) -> list[ProduceResult]:
        partitions = self.partitions_for(topic)
        results: list[ProduceResult] = []
        rows = []
        targets: list[int | None] = []
        for rec in records:
            self._round_robin += rec.partition is None
            targets.append(target_partition(rec, partitions, self._round_robin))
        now_ms = int(time.time() * 1000)
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                heads = dict(self._conn.execute("SELECT partition, next_offset FROM heads WHERE topic = ?", (topic,)).fetchall())
                for rec, part in zip(records, targets):
                    if part is None:
                        results.append(ProduceResult(None, None, error=f"partition {rec.partition} does not exist"))
                        continue
                    offset = heads[part]
                    heads[part] = offset + 1
                    rows.append((topic, part, offset, rec.key, rec.value, now_ms))
                    results.append(ProduceResult(part, offset))
                self._conn.executemany("INSERT INTO records(topic, partition, offset, key, value, ts_ms) VALUES (?,?,?,?,?,?)", rows)
                self._conn.executemany("UPDATE heads SET next_offset = ? WHERE topic = ? AND partition = ?", [(o, topic, p) for p, o in heads.items()])
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise BusError(f"embedded bus write failed: {exc}", retriable=True) from exc
        return results

    # -- consume ----------------------------------------------------------------------------
    def consumer(self, group_id: str, topics: Sequence[str], partitions: Sequence[int] | None = None, *, skip_lost: bool = False) -> EmbeddedConsumer:
        for topic in topics:
            self.partitions_for(topic)
        return EmbeddedConsumer(self._path, group_id, list(topics), None if partitions is None else set(partitions), skip_lost=skip_lost)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class EmbeddedConsumer:
    """A consumer group member of the embedded bus (reads the partitions of its topics assigned to
    it: all, or those numbered in ``partitions``)."""

    def __init__(self, path: Path, group_id: str, topics: list[str], partitions: set[int] | None = None, *, skip_lost: bool = False) -> None:
        self._conn = _connect(path)
        self._lock = threading.Lock()
        self.group_id = group_id
        self.topics = topics
        self.skip_lost = skip_lost
        self.skipped: dict[TopicPartition, int] = {}
        self._lost: LostRecordsError | None = None  # found after other partitions' records: raised next poll
        self._positions: dict[TopicPartition, int] = {}
        for topic in topics:
            (count,) = self._conn.execute("SELECT partitions FROM topics WHERE name = ?", (topic,)).fetchone()
            for part in range(count):
                if partitions is not None and part not in partitions:
                    continue
                tp = TopicPartition(topic, part)
                committed = self.committed(tp)
                self._positions[tp] = committed if committed is not None else self._earliest(tp)  # as Kafka's "earliest"

    def committed(self, tp: TopicPartition) -> int | None:
        with self._lock:
            row = self._conn.execute("SELECT offset FROM group_offsets WHERE group_id = ? AND topic = ? AND partition = ?", (self.group_id, tp.topic, tp.partition)).fetchone()
        return None if row is None else row[0]

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if tp not in self._positions:
            raise BusError(f"{tp} is not assigned to this consumer")
        self._positions[tp] = max(0, offset)
        if self._lost is not None and (self._lost.topic, self._lost.partition) == (tp.topic, tp.partition):
            self._lost = None  # found at the position this seek replaces

    def position(self, tp: TopicPartition) -> int:
        return self._positions[tp]

    def poll(self, max_records: int = 500, timeout_s: float = 1.0) -> list[Message]:
        deadline = time.monotonic() + timeout_s
        while True:
            out = self._fetch(max_records)
            if out or time.monotonic() >= deadline:
                return out
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def _fetch(self, max_records: int) -> list[Message]:
        parked = self._lost
        if parked is not None:
            self._lost = None
            raise parked
        out: list[Message] = []
        # Rotate the starting partition so that a busy partition cannot starve the others.
        items = list(self._positions.items())
        self._start = (getattr(self, "_start", -1) + 1) % max(1, len(items))
        items = items[self._start :] + items[: self._start]
        with self._lock:
            for tp, pos in items:
                room = max_records - len(out)
                if room <= 0:
                    break
                # the head before the records: every offset below it was written by then, so an
                # empty read with the head past ``pos`` means deleted records, not ones that a
                # producer appended between the two reads
                head = self._head(tp)
                rows = self._conn.execute(
                    "SELECT offset, key, value, ts_ms FROM records WHERE topic = ? AND partition = ? AND offset >= ? ORDER BY offset LIMIT ?", (tp.topic, tp.partition, pos, room)
                ).fetchall()
                first = rows[0][0] if rows else head
                if first > pos:  # offsets are dense: records below ``first`` were deleted unread
                    lost = self._lose(tp, pos, first)
                    if lost is not None:
                        if out:
                            self._lost = lost
                            return out
                        raise lost
                for offset, key, value, ts_ms in rows:
                    out.append(Message(tp.topic, tp.partition, offset, key, value, ts_ms))
                if rows:
                    self._positions[tp] = rows[-1][0] + 1
        return out

    def _earliest(self, tp: TopicPartition) -> int:
        with self._lock:
            (first,) = self._conn.execute("SELECT MIN(offset) FROM records WHERE topic = ? AND partition = ?", (tp.topic, tp.partition)).fetchone()
            return int(first) if first is not None else self._head(tp)

    def _head(self, tp: TopicPartition) -> int:
        (head,) = self._conn.execute("SELECT next_offset FROM heads WHERE topic = ? AND partition = ?", (tp.topic, tp.partition)).fetchone()
        return int(head)

    def _lose(self, tp: TopicPartition, position: int, earliest: int) -> LostRecordsError | None:
        """Records ``[position, earliest)`` were deleted before this consumer read them: the
        error to raise, or (``skip_lost``) ``None`` after moving past them, counted."""
        lost = lost_records(tp, position, earliest, group_id=self.group_id, skip_lost=self.skip_lost, skipped=self.skipped)
        if lost is None:
            self._positions[tp] = earliest
        return lost

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT INTO group_offsets(group_id, topic, partition, offset) VALUES (?,?,?,?) ON CONFLICT(group_id, topic, partition) DO UPDATE SET offset = excluded.offset",
                    [(self.group_id, tp.topic, tp.partition, off) for tp, off in offsets.items()],
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()
