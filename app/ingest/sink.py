"""The lake sink: sensor topic -> hive-partitioned Parquet in the lake + one metadata doc per file.

Exactly-once in effect, across crashes and restarts, with no transactions anywhere (FerretDB and
HDFS have none). A *chunk* is what one poll returned for one bus partition, offsets ``[a, b]``:

1. insert one ``lake_batches`` document per file to write, ``status: "pending"``;
2. write each file atomically (staging + rename) under ``greenhouse_id=/date=``;
3. move the partition's checkpoint (``sink_checkpoints``, one document per group/topic/partition)
   to ``b + 1``: this single-document update is the commit point;
4. mark the chunk's documents ``committed``;
5. commit ``b + 1`` to the bus consumer group (for lag monitoring; the checkpoint is authoritative).

Several workers may share the topic (``--workers`` of the sink job, or several jobs): each reads
only the partitions whose lease it holds (:mod:`app.ingest.leases`, :mod:`app.ingest.ownership`), and every lease carries an
epoch. Taking a partition stamps the new epoch on its checkpoint; step 3 moves the checkpoint only
under the worker's own epoch, so a worker that lost its lease cannot commit: it deletes what it
wrote for the chunk and drops the partition. File names carry the epoch, so two workers never
write the same file.

On taking a partition, its pending documents of earlier epochs are rolled back (files deleted,
documents removed) when at or past the checkpoint and rolled forward when before it, as are its
staged files of earlier epochs; reading resumes at the checkpoint. Duplicate readings
(same ``device_id`` and ``ts``, e.g. a device retrying a POST whose answer it lost) are dropped
against what the lake already holds for that greenhouse-day (:class:`~app.ingest.dedupe.SeenKeys`
keeps those keys in bounded memory).

A message the sink cannot take (not a reading, or a reading it cannot place in the lake) goes to
the dead-letter topic with its reason and is passed over: one bad message never stops the sink,
which would otherwise fail on it again after every restart.

Records the bus deleted (retention) before the sink read them are different: the lake can never
have them, so the sink stops with :class:`~app.bus.LostRecordsError` naming the partition, its
checkpoint and the earliest offset still held (counted in ``gh_bus_offsets_lost_total``), and
``jobs.sink`` exits non-zero. Only ``sink.accept_data_loss`` (``--accept-data-loss``) moves it on
past them, logged and counted (``offsets_skipped`` in the stats).

Besides its stats, the sink records rows, files, commit times, duplicates and dead letters through
:class:`~app.ingest.sink_metrics.SinkMetrics` (Ray's metrics inside Ray), and logs one INFO
line per committed lake file (``event: lake_file_committed`` with its topic, partition, offset range,
rows and ``lake_batches`` id), so a reading's bus offset leads to its file.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timezone

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from app.bus import Bus, Consumer, LostRecordsError, Message, OutgoingRecord, TopicPartition
from app.config import Settings
from app.contracts.deadletter import DeadLetter
from app.contracts.reading import ReadingError, UndecodableReading, reading_from_bus
from app.contracts.reading_columns import plain_readings
from app.ingest import errors
from app.ingest.chunk import ChunkColumns, SlowRow, chunk_table, device_keys, unseen
from app.ingest.dedupe import MAX_DAYS, MAX_KEYS, DayKey, DayKeys, Keys, SeenKeys
from app.ingest.ownership import SINK_CHECKPOINTS, PartitionFenced, PartitionOwnership, chunk_file_name, file_stem
from app.ingest.records import SCHEMA_FINGERPRINT, reading_row
from app.ingest.sink_metrics import SinkMetrics, sink_metrics
from app.ingest.sink_stats import SinkStats
from app.lake import Lake
from app.metadata import LAKE_BATCHES, MetadataStore

log = logging.getLogger(__name__)

FAILPOINT_EXIT_CODE = 97


@dataclass(frozen=True)
class PreparedChunk:
    """A chunk ready to write: offsets ``first..last`` of ``tp`` under ``epoch``, its files (pending
    document and table each) and the dedupe keys of their readings per greenhouse-day."""

    tp: TopicPartition
    epoch: int
    first: int
    last: int
    planned: list[tuple[dict, pa.Table]]
    keys: dict[DayKey, Keys]


class LakeSink:
    """Consumes ``settings.topics.sensors`` and writes the lake, exactly once in effect.

    ``worker_id`` names this worker among those sharing the topic (default
    ``<sink.group_id>-0``): a worker restarted under the same name takes its partitions back at
    once, other workers wait for its leases to expire. ``seen_max_days`` and ``seen_max_keys``
    bound the memory of readings already in the lake (:mod:`app.ingest.dedupe`: 64
    greenhouse-days and 500,000 keys by default). ``metrics`` records rows, files, commit times,
    duplicates and dead letters (:mod:`app.ingest.sink_metrics`; default: Ray's metrics
    when this process is connected to Ray, else none).
    """

    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        lake: Lake,
        store: MetadataStore,
        *,
        worker_id: str | None = None,
        seen_max_days: int = MAX_DAYS,
        seen_max_keys: int = MAX_KEYS,
        metrics: SinkMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics if metrics is not None else sink_metrics()
        self.bus = bus
        self.lake = lake
        self.topic = settings.topics.sensors
        self.group = settings.sink.group_id
        self.worker_id = worker_id or f"{self.group}-0"
        self.batches = store.collection(LAKE_BATCHES)
        self.batches.create_index([("path", 1)], unique=True)
        self.batches.create_index([("status", 1), ("sink_group", 1)])
        self.seen = SeenKeys(self._load_keys, max_days=seen_max_days, max_keys=seen_max_keys)
        self._prefetched: dict[DayKey, DayKeys] = {}  # read ahead for ``seen``, several at once
        self._failpoint = self._parse_failpoint(settings.sink.failpoint)
        self.stats = SinkStats()
        self._consumer: Consumer | None = None
        self._buffered: dict[int, list[Message]] = defaultdict(list)  # partition -> its chunk so far
        self._since: dict[int, float] = {}  # partition -> when its chunk got its first message
        self._writers = ThreadPoolExecutor(max_workers=settings.sink.write_concurrency, thread_name_prefix="sink-write")
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink-commit")
        self._in_flight: tuple[PreparedChunk, Future[None]] | None = None  # the chunk being written
        bus.create_topic(self.topic, settings.topics.partitions)
        bus.create_topic(settings.topics.deadletter, settings.topics.partitions)
        self.partitions = bus.partitions_for(self.topic)
        self.ownership = PartitionOwnership(
            store, lake, topic=self.topic, group=self.group, worker_id=self.worker_id, partitions=self.partitions, lease_ttl_s=settings.sink.lease_ttl_s, stats=self.stats
        )

    def committed_offsets_total(self) -> int:
        """Sum over partitions of the checkpointed next offset: how many records are settled."""
        return self.ownership.committed_offsets_total()

    def _reassign(self) -> None:
        """Read exactly the owned partitions, each from its checkpoint (a checkpoint retention
        has passed raises :class:`LostRecordsError` at the first poll: see :meth:`_poll`)."""
        self._close_consumer()
        self.seen.clear()  # another worker may have written the greenhouse-days it remembers
        if not self.ownership.owned:
            return
        self._consumer = self.bus.consumer(self.group, [self.topic], partitions=sorted(self.ownership.owned), skip_lost=self.settings.sink.accept_data_loss)
        for partition in self.ownership.owned:
            tp = TopicPartition(self.topic, partition)
            checkpoint = self.ownership.checkpoint(tp)
            if checkpoint is not None:
                self._consumer.seek(tp, checkpoint)

    # -- dedupe ----------------------------------------------------------------------------
    def _load_keys(self, greenhouse_id: str, day: date) -> DayKeys:
        prefetched = self._prefetched.pop((greenhouse_id, day), None)
        return prefetched if prefetched is not None else self._lake_keys(greenhouse_id, day)

    def _prefetch_keys(self, day_keys: Iterable[tuple[str, date]]) -> None:
        """Read the lake's keys of the greenhouse-days ``seen`` does not hold, several at once
        (each is a round trip or two to a remote lake; a backlog meets many at a time)."""
        self._prefetched.clear()
        missing = [k for k in dict.fromkeys(day_keys) if k not in self.seen]
        if len(missing) > 1:
            self._prefetched = dict(zip(missing, self._writers.map(lambda k: self._lake_keys(*k), missing)))

    def _lake_keys(self, greenhouse_id: str, day: date) -> DayKeys:
        """``(device_id, ts_ms)`` of every committed reading the lake holds for one greenhouse-day."""
        paths = self.ownership.committed_files(self.lake.list_files(Lake.raw_partition(greenhouse_id, day)))
        if not paths:
            return DayKeys()
        table = self.lake.read_table(paths, columns=["device_id", "ts"])
        return DayKeys(device_keys(table["device_id"], pc.cast(table["ts"], pa.int64()).to_numpy()))

    # -- one chunk --------------------------------------------------------------------------
    def _readings(self, tp: TopicPartition, messages: list[Message]) -> ChunkColumns:
        """The chunk's valid readings as one table (:mod:`app.ingest.chunk`): the plain ones
        parsed in bulk (:mod:`app.contracts.reading_columns`), every other one by the contract's
        own check; messages that are no valid reading, or that cannot be made a row, are counted
        and dead-lettered."""
        plain = plain_readings([m.value for m in messages])
        slow: list[SlowRow] = []
        dead: list[tuple[OutgoingRecord, str]] = []  # with its reason code
        done = set(plain.positions.tolist())
        for pos, msg in enumerate(messages):
            if pos in done:
                continue
            try:
                reading = reading_from_bus(msg.value)
                slow.append(SlowRow(pos, reading.greenhouse_id, reading_row(reading, tp.topic, tp.partition, msg.offset, msg.timestamp_ms)))
            except ReadingError as exc:
                dead.append(self._reject(tp, msg, exc))
            except Exception as exc:  # a record the lake cannot take must not stop the sink for good
                log.exception("sink: message %s/%d@%d cannot be placed in the lake", tp.topic, tp.partition, msg.offset)
                dead.append(self._reject(tp, msg, ReadingError(f"value: cannot be placed in the lake ({type(exc).__name__})")))
        if dead:
            self.bus.produce(self.settings.topics.deadletter, [record for record, _ in dead])
            for reason, count in Counter(reason for _, reason in dead).items():
                self.metrics.dead_lettered(reason, count)
        return ChunkColumns(chunk_table(plain, slow, messages))

    def _reject(self, tp: TopicPartition, msg: Message, exc: ReadingError) -> tuple[OutgoingRecord, str]:
        self.stats.invalid += 1
        code = exc.reason_code
        self.stats.invalid_by_reason[code] = self.stats.invalid_by_reason.get(code, 0) + 1
        return OutgoingRecord(value=sink_dead_letter(tp, msg, exc).to_json()), code

    def _process_chunk(self, tp: TopicPartition, messages: list[Message]) -> None:
        """Prepare, write and finish one chunk, here and now (what the pipeline of :meth:`_flush`
        does with the write overlapping the next chunk's reading)."""
        chunk = self._prepare_chunk(tp, messages)
        self._write_chunk(chunk)
        self._finish_chunk(chunk)

    def _prepare_chunk(self, tp: TopicPartition, messages: list[Message]) -> PreparedChunk:
        """The chunk's new readings as one table per greenhouse-day, each with its pending
        document (nothing written yet)."""
        first, last = messages[0].offset, messages[-1].offset
        epoch = self.ownership.hold(tp.partition)  # also keeps a long run of chunks leased
        groups, keys = self._new_rows(tp, messages)
        now = datetime.now(timezone.utc)
        planned = [(self._pending_doc(tp, epoch, first, last, gid, day, table, now), table) for (gid, day), table in sorted(groups.items())]
        return PreparedChunk(tp, epoch, first, last, planned, keys)

    def _write_chunk(self, chunk: PreparedChunk) -> None:
        """Steps 1 to 4 of the module docstring for a prepared chunk (on the sink's commit thread
        when pipelined: it touches the store and the lake, never the consumer or ``seen``)."""
        tp, epoch, last, planned = chunk.tp, chunk.epoch, chunk.last, chunk.planned
        started = time.monotonic()

        # 1. pending documents, in one write (so that a crash after any file write can find and undo it)
        self.batches.insert_many_new([doc for doc, _ in planned])
        self._maybe_fail("after_pending")

        # 2. files, several at once (a remote lake's latency, not its bandwidth, bounds one write)
        stem = file_stem(tp.topic, tp.partition, epoch)
        try:
            list(self._writers.map(lambda planned_file: self.lake.write_parquet(planned_file[1], planned_file[0]["relative_path"], staging_prefix=stem, replace=False), planned))
        except Exception:  # WebHDFS reports a file deleted under a writer as RuntimeError, not OSError
            if self.ownership.still_holds(tp.partition, epoch):
                raise
            # fenced meanwhile: the new owner cleared this epoch's staged files as it took over
            self._undo(planned)
            raise PartitionFenced(f"partition {tp.partition}: epoch {epoch} was fenced while writing its files") from None
        self._maybe_fail("after_files")

        # 3. the commit point, under this worker's epoch only
        if not self.ownership.commit(tp, epoch, last + 1):
            self._undo(planned)
            raise PartitionFenced(f"partition {tp.partition}: epoch {epoch} was fenced by a newer one")
        self._maybe_fail("after_checkpoint")

        # 4. cosmetic after the commit point
        self.batches.update_many({"_id": {"$in": [doc["_id"] for doc, _ in planned]}}, {"$set": {"status": "committed", "committed_at": datetime.now(timezone.utc)}})
        rows = sum(t.num_rows for _, t in planned)
        self.stats.files += len(planned)
        self.stats.rows_written += rows
        self.stats.chunks += 1
        self.metrics.files_committed(tp.topic, len(planned), rows, time.monotonic() - started)
        for doc, _ in planned:
            log_committed_file(doc)

    def _finish_chunk(self, chunk: PreparedChunk) -> None:
        """After a chunk's commit point, on the consuming thread: remember its keys, and step 5
        (the consumer is not thread-safe)."""
        for (greenhouse_id, day), new_keys in chunk.keys.items():
            self.seen.add(greenhouse_id, day, new_keys)
        assert self._consumer is not None
        self._consumer.commit({chunk.tp: chunk.last + 1})
        self._maybe_fail("after_commit")

    def _new_rows(self, tp: TopicPartition, messages: list[Message]) -> tuple[dict[DayKey, pa.Table], dict[DayKey, Keys]]:
        """The chunk's readings not yet in the lake, as one table per greenhouse-day, and their keys."""
        chunk = self._readings(tp, messages)
        days = chunk.days()
        self._prefetch_keys(d.key for d in days)
        writing = self._in_flight[0].keys if self._in_flight is not None else {}  # not in ``seen`` yet
        tables: dict[DayKey, pa.Table] = {}
        keys: dict[DayKey, Keys] = {}
        for day in days:
            first = chunk.first_of_each_key(day.rows)
            in_flight = DayKeys(writing[day.key]) if day.key in writing else None
            rows, keys[day.key] = unseen(chunk.keys(first), first, self.seen.get(*day.key), in_flight)
            self.stats.duplicates += len(day.rows) - len(rows)
            self.metrics.duplicates_dropped(len(day.rows) - len(rows))
            if len(rows):
                tables[day.key] = chunk.lake_table(rows)
            else:
                del keys[day.key]
        self._prefetched.clear()  # read for this chunk only: never served later, when it may be stale
        return tables, keys

    def _undo(self, planned: list[tuple[dict, pa.Table]]) -> None:
        """Remove a fenced chunk's files and documents (they never became part of the lake)."""
        for doc, _ in planned:
            self.lake.delete(doc["path"])
        self.batches.delete_many({"_id": {"$in": [doc["_id"] for doc, _ in planned]}})
        self.stats.fenced_chunks += 1

    def _pending_doc(self, tp: TopicPartition, epoch: int, first: int, last: int, greenhouse_id: str, day: date, table: pa.Table, now: datetime) -> dict:
        """The ``lake_batches`` document of one file of chunk ``[first, last]``, status pending."""
        name = chunk_file_name(tp.topic, tp.partition, epoch, first, last)
        relative = f"{Lake.raw_partition(greenhouse_id, day)}/{name}"
        offsets = table["bus_offset"]
        return {
            "_id": f"{self.group}|{relative}",
            "kind": "raw_sensors",
            "sink_group": self.group,
            "topic": tp.topic,
            "partition": tp.partition,
            "epoch": epoch,
            "worker": self.worker_id,
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
        """Take this worker's partitions, then consume. Stops after ``idle_polls`` empty polls
        with no partition left free when ``until_idle``, after ``max_seconds``, or once
        ``should_stop()`` is true after an empty poll; otherwise runs until interrupted. Gives its
        leases back when it stops."""
        started = time.monotonic()
        if self.settings.sink.accept_data_loss:
            log.warning("sink %s: accept_data_loss is on: records deleted by retention before they are read will be skipped (logged, counted), not stop the sink", self.worker_id)
        tick_s = self.settings.sink.lease_ttl_s / 3  # renew well before a lease expires
        next_tick = 0.0
        first = True
        try:
            empty = 0
            while True:
                if time.monotonic() >= next_tick:
                    self._flush()  # chunks are written under the leases they were read under
                    if self.ownership.rebalance(first=first):
                        self._reassign()
                    first, next_tick = False, time.monotonic() + tick_s
                waiting = any(self._buffered.values())  # a chunk waits: an idle topic writes it sooner
                messages = self._poll(min(self.settings.sink.poll_timeout_s, self.settings.sink.idle_flush_s) if waiting else self.settings.sink.poll_timeout_s)
                if not messages:
                    self._flush()
                    empty += 0 if waiting else 1  # idle is counted in whole poll timeouts
                    if until_idle and empty >= idle_polls and not self.ownership.leases.free_partitions(self.partitions):
                        break
                    if should_stop is not None and should_stop():
                        break
                else:
                    empty = 0
                    self._consume(messages)
                    if on_progress:
                        on_progress(self.stats)
                if max_seconds is not None and time.monotonic() - started > max_seconds:
                    break
            self._flush()
        finally:
            self._buffered.clear()
            try:
                self._settle()  # never give the leases back under a write
            except Exception:
                log.exception("sink %s: the last chunk write failed", self.worker_id)
            self._close_consumer()
            self.ownership.leave()
            self.stats.elapsed_s = round(time.monotonic() - started, 3)
        return self.stats

    def _poll(self, timeout_s: float) -> list[Message]:
        if self._consumer is None:  # nothing to read until a lease comes free
            time.sleep(timeout_s)
            return []
        try:
            return self._consumer.poll(self.settings.sink.max_batch_records, timeout_s)
        except LostRecordsError as exc:
            raise LostRecordsError(
                exc.topic,
                exc.partition,
                exc.position,
                exc.earliest,
                context=f"lake sink {self.group} (worker {self.worker_id}, checkpoint in {SINK_CHECKPOINTS})",
                remedy="the lake can never have them; to move on past them anyway, run jobs.sink --accept-data-loss (sink.accept_data_loss)",
            ) from exc

    def _close_consumer(self) -> None:
        if self._consumer is not None:
            self.stats.offsets_skipped += sum(self._consumer.skipped.values())
            self._consumer.close()
            self._consumer = None

    def _consume(self, messages: list[Message]) -> None:
        """Add ``messages`` to their partitions' chunks; write the chunks that are full or old."""
        now = time.monotonic()
        for tp, part in _by_partition(messages):
            if tp.partition in self.ownership.owned:
                self._since.setdefault(tp.partition, now)
                self._buffered[tp.partition] += part
        wait_s, full = self.settings.sink.chunk_wait_s, self.settings.sink.max_batch_records
        self._flush([p for p, msgs in self._buffered.items() if msgs and (len(msgs) >= full or now - self._since[p] >= wait_s)])

    def _flush(self, partitions: list[int] | None = None) -> None:
        """Write the buffered chunks of ``partitions``, or (default) of all and wait until every
        write is done. One chunk's write (steps 1 to 4) runs on the commit thread while the sink
        reads and prepares the next: at most one is in flight, so chunks commit in order."""
        fenced = False
        for partition in sorted(self._buffered) if partitions is None else partitions:
            messages = self._buffered.pop(partition, [])
            self._since.pop(partition, None)
            if not messages or partition not in self.ownership.owned:
                continue
            self.stats.messages += len(messages)
            try:
                chunk = self._prepare_chunk(TopicPartition(self.topic, partition), messages)
            except PartitionFenced as exc:
                log.warning("%s: dropping the partition", exc)
                self.ownership.drop(partition)
                fenced = True
                continue
            fenced |= self._settle()
            if partition not in self.ownership.owned:  # the write in flight was of this partition, and fenced
                continue
            self._in_flight = (chunk, self._committer.submit(self._write_chunk, chunk))
        if partitions is None:
            fenced |= self._settle()
        if fenced:
            self._settle()
            self._reassign()

    def _settle(self) -> bool:
        """Wait for the chunk write in flight and finish it; True when it was fenced (its
        partition is dropped then). Any other failure of the write is raised here."""
        if self._in_flight is None:
            return False
        chunk, write = self._in_flight
        try:
            write.result()
        except PartitionFenced as exc:
            log.warning("%s: dropping the partition", exc)
            self.ownership.drop(chunk.tp.partition)
            return True
        finally:
            self._in_flight = None
        self._finish_chunk(chunk)
        return False


def log_committed_file(doc: dict) -> None:
    """One INFO line per committed lake file, with the ids that lead from a reading's bus offset
    (logged by the gateway) to its file: topic, partition, offset range, and the ``lake_batches``
    document id (``lake_batch_id``, what lineage names a lake batch)."""
    log.info(
        "committed lake file %s (%s/%d offsets %d..%d, %d rows)",
        doc["path"],
        doc["topic"],
        doc["partition"],
        doc["offset_start"],
        doc["offset_end"],
        doc["rows"],
        extra={
            "event": "lake_file_committed",
            "file": doc["path"],
            "topic": doc["topic"],
            "partition": doc["partition"],
            "first_offset": doc["offset_start"],
            "last_offset": doc["offset_end"],
            "rows": doc["rows"],
            "lake_batch_id": doc["_id"],
            "chunk": doc["relative_path"].rsplit("/", 1)[-1].removesuffix(".parquet"),
        },
    )


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
    """Messages grouped by partition, each group in offset order (as a poll returns them)."""
    out: dict[int, list[Message]] = defaultdict(list)
    topic = ""
    for msg in messages:
        out[msg.partition].append(msg)
        topic = msg.topic  # the sink consumes one topic
    return [(TopicPartition(topic, partition), msgs) for partition, msgs in out.items()]
