"""The lake sink: sensor topic -> hive-partitioned Parquet in the lake + one metadata doc per file.

Exactly-once in effect, across crashes and restarts, with no transactions anywhere (FerretDB and
HDFS have none). A *chunk* is what one poll returned for one bus partition, offsets ``[a, b]``:

1. insert one ``lake_batches`` document per file to write, ``status: "pending"``;
2. write each file atomically (staging + rename) under ``greenhouse_id=/date=``;
3. move the partition's checkpoint (``sink_checkpoints``, one document per group/topic/partition)
   to ``b + 1``: this single-document update is the commit point;
4. mark the chunk's documents ``committed``;
5. commit ``b + 1`` to the bus consumer group (for lag monitoring; the checkpoint is authoritative).

On start, pending documents at or past the checkpoint are rolled back (files deleted, documents
removed) and earlier ones rolled forward; reading resumes at the checkpoint. Duplicate readings
(same ``device_id`` and ``ts``, e.g. a device retrying a POST whose answer it lost) are dropped
against what the lake already holds for that greenhouse-day (:class:`~app.ingest.dedupe.SeenKeys`
keeps those keys in bounded memory).

A message the sink cannot take (not a reading, or a reading it cannot place in the lake) goes to
the dead-letter topic with its reason and is passed over: one bad message never stops the sink,
which would otherwise fail on it again after every restart.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from app.bus import Bus, Message, OutgoingRecord, TopicPartition
from app.config import Settings
from app.contracts.deadletter import DeadLetter
from app.contracts.reading import ReadingError, UndecodableReading, reading_from_bus
from app.ingest import errors
from app.ingest.dedupe import MAX_DAYS, MAX_KEYS, SeenKey, SeenKeys
from app.ingest.records import SCHEMA_FINGERPRINT, reading_row, rows_to_table
from app.lake import STAGING, Lake
from app.metadata import LAKE_BATCHES, MetadataStore

log = logging.getLogger(__name__)

SINK_CHECKPOINTS = "sink_checkpoints"
FAILPOINT_EXIT_CODE = 97


@dataclass
class SinkStats:
    """What one sink run did."""

    messages: int = 0
    rows_written: int = 0
    duplicates: int = 0
    invalid: int = 0
    files: int = 0
    chunks: int = 0
    rolled_back_files: int = 0
    rolled_forward_files: int = 0
    elapsed_s: float = 0.0
    invalid_by_reason: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _checkpoint_id(group: str, tp: TopicPartition) -> str:
    return f"{group}|{tp.topic}|{tp.partition}"


class LakeSink:
    """Consumes ``settings.topics.sensors`` and writes the lake, exactly once in effect.

    ``seen_max_days`` and ``seen_max_keys`` bound the memory of readings already in the lake
    (:mod:`app.ingest.dedupe`: 64 greenhouse-days and 500,000 keys by default).
    """

    def __init__(self, settings: Settings, bus: Bus, lake: Lake, store: MetadataStore, *, seen_max_days: int = MAX_DAYS, seen_max_keys: int = MAX_KEYS) -> None:
        self.settings = settings
        self.bus = bus
        self.lake = lake
        self.topic = settings.topics.sensors
        self.group = settings.sink.group_id
        self.batches = store.collection(LAKE_BATCHES)
        self.checkpoints = store.collection(SINK_CHECKPOINTS)
        self.batches.create_index([("path", 1)], unique=True)
        self.batches.create_index([("status", 1), ("sink_group", 1)])
        self.seen = SeenKeys(self._lake_keys, max_days=seen_max_days, max_keys=seen_max_keys)
        self._failpoint = self._parse_failpoint(settings.sink.failpoint)
        self.stats = SinkStats()
        bus.create_topic(self.topic, settings.topics.partitions)
        bus.create_topic(settings.topics.deadletter, settings.topics.partitions)

    # -- recovery ---------------------------------------------------------------------------
    def _checkpoint(self, tp: TopicPartition) -> int | None:
        doc = self.checkpoints.find_one({"_id": _checkpoint_id(self.group, tp)})
        return None if doc is None else int(doc["next_offset"])

    def committed_offsets_total(self) -> int:
        """Sum over partitions of the checkpointed next offset: how many records are settled."""
        docs = self.checkpoints.find({"group": self.group, "topic": self.topic})
        return sum(int(d["next_offset"]) for d in docs)

    def recover(self) -> None:
        """Settle chunks a crash left half done (see the module docstring)."""
        pending = self.batches.find({"status": "pending", "sink_group": self.group, "topic": self.topic})
        for doc in pending:
            tp = TopicPartition(doc["topic"], int(doc["partition"]))
            checkpoint = self._checkpoint(tp)
            if checkpoint is not None and checkpoint > int(doc["chunk_end"]):
                self.batches.update_one({"_id": doc["_id"]}, {"$set": {"status": "committed"}})
                self.stats.rolled_forward_files += 1
            else:
                self.lake.delete(doc["path"])
                self.batches.delete_many({"_id": doc["_id"]})
                self.stats.rolled_back_files += 1
        for path in self.lake.list_files(STAGING):  # staged files of a crashed write
            self.lake.delete(path)
        if pending:
            log.info("recovered: %d files rolled back, %d rolled forward", self.stats.rolled_back_files, self.stats.rolled_forward_files)

    # -- dedupe ----------------------------------------------------------------------------
    def _lake_keys(self, greenhouse_id: str, day: date) -> list[SeenKey]:
        """``(device_id, ts_ms)`` of every reading the lake holds for one greenhouse-day."""
        paths = self.lake.list_files(Lake.raw_partition(greenhouse_id, day))
        if not paths:
            return []
        table = self.lake.read_table(paths, columns=["device_id", "ts"])
        return list(zip(table["device_id"].to_pylist(), pc.cast(table["ts"], pa.int64()).to_pylist()))

    # -- one chunk --------------------------------------------------------------------------
    def _rows(self, tp: TopicPartition, messages: list[Message]) -> list[tuple[str, date, SeenKey, dict]]:
        """The chunk's lake rows as ``(greenhouse_id, day, dedupe key, row)``; messages that are no
        valid reading, or that cannot be made a row, are counted and dead-lettered."""
        good: list[tuple[str, date, SeenKey, dict]] = []
        dead: list[OutgoingRecord] = []
        for msg in messages:
            try:
                reading = reading_from_bus(msg.value)
                row = reading_row(reading, tp.topic, tp.partition, msg.offset, msg.timestamp_ms)
                good.append((reading.greenhouse_id, reading.ts.date(), (reading.device_id, reading.ts_ms), row))
            except ReadingError as exc:
                dead.append(self._reject(tp, msg, exc))
            except Exception as exc:  # a record the lake cannot take must not stop the sink for good
                log.exception("sink: message %s/%d@%d cannot be placed in the lake", tp.topic, tp.partition, msg.offset)
                dead.append(self._reject(tp, msg, ReadingError(f"value: cannot be placed in the lake ({type(exc).__name__})")))
        if dead:
            self.bus.produce(self.settings.topics.deadletter, dead)
        return good

    def _reject(self, tp: TopicPartition, msg: Message, exc: ReadingError) -> OutgoingRecord:
        self.stats.invalid += 1
        code = exc.reason_code
        self.stats.invalid_by_reason[code] = self.stats.invalid_by_reason.get(code, 0) + 1
        return OutgoingRecord(value=sink_dead_letter(tp, msg, exc).to_json())

    def _process_chunk(self, tp: TopicPartition, messages: list[Message]) -> None:
        first, last = messages[0].offset, messages[-1].offset
        groups: dict[tuple[str, date], list[dict]] = defaultdict(list)
        keys: dict[tuple[str, date], set[SeenKey]] = defaultdict(set)
        in_lake: dict[tuple[str, date], set[SeenKey]] = {}  # each greenhouse-day read once per chunk
        for greenhouse_id, day, dedupe_key, row in self._rows(tp, messages):
            gkey = (greenhouse_id, day)
            if gkey not in in_lake:
                in_lake[gkey] = self.seen.get(greenhouse_id, day)
            if dedupe_key in keys[gkey] or dedupe_key in in_lake[gkey]:
                self.stats.duplicates += 1
                continue
            keys[gkey].add(dedupe_key)
            groups[gkey].append(row)

        # 1. pending documents (so that a crash after any file write can find and undo it)
        planned: list[tuple[dict, pa.Table]] = []
        now = datetime.now(timezone.utc)
        for (greenhouse_id, day), rows in sorted(groups.items()):
            table = rows_to_table(rows)
            doc = self._pending_doc(tp, first, last, greenhouse_id, day, table, now)
            self.batches.insert_one(doc)
            planned.append((doc, table))
        self._maybe_fail("after_pending")

        # 2. files
        for doc, table in planned:
            self.lake.write_parquet(table, doc["relative_path"])
        self._maybe_fail("after_files")

        # 3. the commit point
        self.checkpoints.update_one(
            {"_id": _checkpoint_id(self.group, tp)},
            {"$set": {"next_offset": last + 1, "updated_at": datetime.now(timezone.utc), "group": self.group, "topic": tp.topic, "partition": tp.partition}},
            upsert=True,
        )
        self._maybe_fail("after_checkpoint")
        for (greenhouse_id, day), new_keys in keys.items():
            self.seen.add(greenhouse_id, day, new_keys)

        # 4. + 5. cosmetic after the commit point
        for doc, _ in planned:
            self.batches.update_one({"_id": doc["_id"]}, {"$set": {"status": "committed", "committed_at": datetime.now(timezone.utc)}})
        self._consumer.commit({tp: last + 1})
        self.stats.files += len(planned)
        self.stats.rows_written += sum(t.num_rows for _, t in planned)
        self.stats.chunks += 1
        self._maybe_fail("after_commit")

    def _pending_doc(self, tp: TopicPartition, first: int, last: int, greenhouse_id: str, day: date, table: pa.Table, now: datetime) -> dict:
        """The ``lake_batches`` document of one file of chunk ``[first, last]``, status pending."""
        name = f"{tp.topic}-p{tp.partition:03d}-o{first:012d}-{last:012d}.parquet"
        relative = f"{Lake.raw_partition(greenhouse_id, day)}/{name}"
        offsets = table["bus_offset"]
        return {
            "_id": f"{self.group}|{relative}",
            "kind": "raw_sensors",
            "sink_group": self.group,
            "topic": tp.topic,
            "partition": tp.partition,
            "offset_start": int(pc.min(offsets).as_py()),
            "offset_end": int(pc.max(offsets).as_py()),
            "chunk_start": first,
            "chunk_end": last,
            "rows": table.num_rows,
            "ts_min": pc.min(table["ts"]).as_py(),
            "ts_max": pc.max(table["ts"]).as_py(),
            "greenhouse_id": greenhouse_id,
            "date": day.isoformat(),
            "path": self.lake.path(relative),
            "relative_path": relative,
            "schema_fingerprint": SCHEMA_FINGERPRINT,
            "status": "pending",
            "created_at": now,
        }

    # -- failpoints (tests only) ------------------------------------------------------------
    @staticmethod
    def _parse_failpoint(spec: str | None) -> tuple[str, int] | None:
        if not spec:
            return None
        phase, _, count = spec.partition(":")
        return phase, int(count or 1)

    def _maybe_fail(self, phase: str) -> None:
        if self._failpoint and self._failpoint[0] == phase and self.stats.chunks + 1 >= self._failpoint[1]:
            log.error("failpoint %s reached: exiting abruptly", phase)
            os._exit(FAILPOINT_EXIT_CODE)

    # -- the loop ---------------------------------------------------------------------------
    def run(
        self, *, until_idle: bool = True, idle_polls: int = 2, max_seconds: float | None = None, on_progress: Callable[[SinkStats], None] | None = None, should_stop: Callable[[], bool] | None = None
    ) -> SinkStats:
        """Recover, then consume. Stops after ``idle_polls`` empty polls when ``until_idle``,
        after ``max_seconds``, or once ``should_stop()`` is true after an empty poll; otherwise
        runs until interrupted."""
        started = time.monotonic()
        self.recover()
        self._consumer = self.bus.consumer(self.group, [self.topic])
        try:
            for part in range(self.bus.partitions_for(self.topic)):
                tp = TopicPartition(self.topic, part)
                checkpoint = self._checkpoint(tp)
                if checkpoint is not None:
                    self._consumer.seek(tp, checkpoint)
            empty = 0
            while True:
                messages = self._consumer.poll(self.settings.sink.max_batch_records, self.settings.sink.poll_timeout_s)
                if not messages:
                    empty += 1
                    if until_idle and empty >= idle_polls:
                        break
                    if should_stop is not None and should_stop():
                        break
                else:
                    empty = 0
                    self.stats.messages += len(messages)
                    for tp, chunk in _by_partition(messages):
                        self._process_chunk(tp, chunk)
                    if on_progress:
                        on_progress(self.stats)
                if max_seconds is not None and time.monotonic() - started > max_seconds:
                    break
        finally:
            self._consumer.close()
            self.stats.elapsed_s = round(time.monotonic() - started, 3)
        return self.stats


def sink_dead_letter(tp: TopicPartition, msg: Message, exc: ReadingError) -> DeadLetter:
    """The dead-letter record of a bus message the sink could not take as a reading."""
    undecodable = isinstance(exc, UndecodableReading)
    return DeadLetter(
        source="sink",
        source_topic=tp.topic,
        source_partition=tp.partition,
        source_offset=msg.offset,
        error_code=errors.VALUE_CONVERSION_FAILED if undecodable else errors.INVALID_RECORD,
        reason=exc.reason,
        received_at=datetime.fromtimestamp(msg.timestamp_ms / 1000.0, tz=timezone.utc),
        payload=_message_payload(msg.value, undecodable),
    )


def _message_payload(value: bytes, undecodable: bool) -> object:
    """A bus message value as a dead letter keeps it: its JSON, or its text when it is not JSON."""
    if not undecodable:
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            pass
    return value.decode("utf-8", "replace")


def _by_partition(messages: Iterable[Message]) -> list[tuple[TopicPartition, list[Message]]]:
    out: dict[TopicPartition, list[Message]] = defaultdict(list)
    for msg in messages:
        out[TopicPartition(msg.topic, msg.partition)].append(msg)
    return [(tp, sorted(msgs, key=lambda m: m.offset)) for tp, msgs in out.items()]
