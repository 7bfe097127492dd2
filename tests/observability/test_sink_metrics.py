"""The lake sink's metrics and its per-file log line: what it records through the narrow
:class:`~app.ingest.sink_metrics.SinkMetrics` interface matches what it really wrote (files,
rows, duplicates, dead letters), and each committed lake file is logged once with the ids that lead
from a bus offset to the file and its ``lake_batches`` document. No Ray needed; the Ray
implementation is exercised on a local Ray worker."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections import Counter

import orjson

from app.bus import OutgoingRecord, open_bus
from app.config import Settings
from app.ingest.sink import LakeSink
from app.ingest.sink_metrics import NoSinkMetrics, RaySinkMetrics, sink_metrics
from app.lake import Lake
from app.metadata import LAKE_BATCHES, open_metadata
from tests.ingest.test_sink import make_readings


class RecordedMetrics:
    """A :class:`SinkMetrics` that keeps what it is told."""

    def __init__(self) -> None:
        self.files: Counter[str] = Counter()
        self.rows: Counter[str] = Counter()
        self.commits_s: list[float] = []
        self.duplicates = 0
        self.dead: Counter[str] = Counter()

    def files_committed(self, topic: str, files: int, rows: int, duration_s: float) -> None:
        self.files[topic] += files
        self.rows[topic] += rows
        self.commits_s.append(duration_s)

    def duplicates_dropped(self, count: int) -> None:
        self.duplicates += count

    def dead_lettered(self, reason: str, count: int) -> None:
        self.dead[reason] += count


def sink_with(settings: Settings, metrics) -> LakeSink:
    return LakeSink(settings, open_bus(settings.bus_url), Lake.from_url(settings.lake_url), open_metadata(settings.metadata_url), metrics=metrics)


def test_recorded_metrics_match_what_the_sink_wrote(settings):
    readings = make_readings(300)
    values = [orjson.dumps(r) for r in readings] + [orjson.dumps(readings[0]), orjson.dumps(readings[1])]  # two duplicates
    values += [b"not json", orjson.dumps({**readings[2], "measurements": {"rh_pct": 250.0}})]
    bus = open_bus(settings.bus_url)
    bus.create_topic(settings.topics.sensors, settings.topics.partitions)
    assert all(r.ok for r in bus.produce(settings.topics.sensors, [OutgoingRecord(value=v) for v in values]))

    metrics = RecordedMetrics()
    stats = sink_with(settings, metrics).run()
    topic = settings.topics.sensors
    assert stats.rows_written == 300 and stats.duplicates == 2 and stats.invalid == 2
    assert metrics.rows[topic] == 300 and metrics.files[topic] == stats.files > 0
    assert len(metrics.commits_s) == stats.chunks and all(s >= 0 for s in metrics.commits_s)
    assert metrics.duplicates == 2
    assert metrics.dead == Counter(stats.invalid_by_reason) and sum(metrics.dead.values()) == 2


def test_each_committed_file_is_logged_once_with_its_offsets_and_batch_id(settings, caplog):
    readings = make_readings(120)
    bus = open_bus(settings.bus_url)
    bus.create_topic(settings.topics.sensors, settings.topics.partitions)
    results = bus.produce(settings.topics.sensors, [OutgoingRecord(value=orjson.dumps(r), key=r["greenhouse_id"].encode()) for r in readings])
    with caplog.at_level(logging.INFO, logger="app.ingest.sink"):
        sink_with(settings, NoSinkMetrics()).run()
    logged = [r for r in caplog.records if getattr(r, "event", None) == "lake_file_committed"]
    docs = {d["_id"]: d for d in open_metadata(settings.metadata_url).collection(LAKE_BATCHES).find({"status": "committed"})}
    assert sorted(r.lake_batch_id for r in logged) == sorted(docs)  # once per file
    for record in logged:
        doc = docs[record.lake_batch_id]
        assert (record.file, record.topic, record.partition, record.rows) == (doc["path"], settings.topics.sensors, doc["partition"], doc["rows"])
        assert (record.first_offset, record.last_offset) == (doc["offset_start"], doc["offset_end"])
    # a reading's offset, as the gateway logs it, leads to the file holding it
    where = results[57]
    holding = [r for r in logged if r.partition == where.partition and r.first_offset <= where.offset <= r.last_offset]
    table = Lake.from_url(settings.lake_url).read_table([r.file for r in holding], columns=["bus_partition", "bus_offset"]) if holding else None
    assert table is not None and (where.partition, where.offset) in set(zip(table["bus_partition"].to_pylist(), table["bus_offset"].to_pylist()))


def test_outside_ray_the_sink_records_no_metrics():
    # a fresh process: this test session may have started Ray already
    probe = "import ray; from app.ingest.sink_metrics import NoSinkMetrics, sink_metrics; assert not ray.is_initialized(); print(type(sink_metrics()).__name__)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == NoSinkMetrics.__name__, done.stderr[-2000:]


def test_inside_ray_the_sink_records_ray_metrics(ray_local):
    metrics = sink_metrics()
    assert isinstance(metrics, RaySinkMetrics)
    metrics.files_committed("greenhouse.sensors", 2, 40, 0.3)
    metrics.duplicates_dropped(0)  # a Ray counter refuses 0: nothing recorded, nothing raised
    metrics.dead_lettered("measurements.rh_pct", 1)
    assert not metrics._warned  # every record reached Ray's metrics
