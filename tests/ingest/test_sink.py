"""The lake sink: layout, metadata, dedupe, and exactly-once across crashes (real subprocess kills)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pyarrow.compute as pc
import pytest

from app.bus import OutgoingRecord, open_bus
from app.config import Settings
from app.contracts.deadletter import DeadLetter
from app.ingest.gateway import JSON_V2, IngestService
from app.ingest.records import SCHEMA_FINGERPRINT
from app.ingest.sink import FAILPOINT_EXIT_CODE, LakeSink
from app.lake import Lake
from app.metadata import LAKE_BATCHES, open_metadata
from app.security.credentials import DeviceRegistry
from app.sim.credentials import FleetCredentials

REPO = Path(__file__).resolve().parents[2]
START = datetime(2026, 6, 1, 23, 40, tzinfo=timezone.utc)  # crosses midnight: two date partitions


def make_readings(n: int, greenhouses: int = 3, devices: int = 2) -> list[dict]:
    out = []
    for i in range(n):
        step, rest = divmod(i, greenhouses * devices)
        gh, dev = divmod(rest, devices)
        ts = START + timedelta(seconds=30 * step)
        out.append(
            {
                "greenhouse_id": f"gh-{gh + 1:02d}",
                "device_id": f"gh-{gh + 1:02d}-dev{dev}",
                "ts": ts.isoformat().replace("+00:00", "Z"),
                "measurements": {"air_temp_c": 20 + (i % 50) / 10, "rh_pct": 60.0},
            }
        )
    return out


def ingest(settings: Settings, readings: list[dict], batch: int = 200) -> int:
    """Produce through the gateway's own code path (no HTTP needed here), each device's readings
    with its own token (the devices are registered, or their tokens rotated, first)."""
    registry = DeviceRegistry(open_metadata(settings.metadata_url))
    credentials = FleetCredentials.register(registry, sorted({(r["device_id"], r["greenhouse_id"]) for r in readings}))
    service = IngestService(settings, open_bus(settings.bus_url), registry)
    by_device: dict[str, list[dict]] = defaultdict(list)
    for r in readings:
        by_device[r["device_id"]].append(r)
    accepted = 0
    for device, mine in by_device.items():
        for i in range(0, len(mine), batch):
            body = orjson.dumps({"records": [{"value": r} for r in mine[i : i + batch]]})
            res = service.produce(settings.topics.sensors, body, content_type=JSON_V2, authorization=f"Bearer {credentials.tokens[device]}")
            assert res.status == 200
            accepted += sum(1 for o in res.body["offsets"] if o["error_code"] is None)
    return accepted


def lake_rows(settings: Settings):
    return Lake.from_url(settings.lake_url).read_raw_sensors()


def assert_exactly_once(settings: Settings, expected: list[dict]) -> None:
    table = lake_rows(settings)
    assert table.num_rows == len(expected)
    keys = list(zip(table["device_id"].to_pylist(), pc.cast(table["ts"], "int64").to_pylist()))
    assert len(set(keys)) == len(keys), "duplicate readings in the lake"
    want = {(r["device_id"], int(datetime.fromisoformat(r["ts"]).timestamp() * 1000)) for r in expected}
    assert set(keys) == want, "lost or foreign readings in the lake"
    store = open_metadata(settings.metadata_url)
    docs = store.collection(LAKE_BATCHES).find({})
    assert all(d["status"] == "committed" for d in docs)
    assert sum(d["rows"] for d in docs) == len(expected)
    lake = Lake.from_url(settings.lake_url)
    files = lake.list_files("raw/sensors")
    assert sorted(d["path"] for d in docs) == files, "files and batch documents disagree"


def run_sink_process(settings: Settings, extra_env: dict | None = None, timeout: float = 120) -> subprocess.Popen:
    env = {**os.environ, "GH_DATA_DIR": str(settings.data_dir), "GH_SINK__MAX_BATCH_RECORDS": str(settings.sink.max_batch_records), "GH_SINK__POLL_TIMEOUT_S": "0.2"}
    env.update(extra_env or {})
    return subprocess.Popen([sys.executable, "-m", "jobs.sink"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_sink_writes_hive_layout_with_batch_documents(settings):
    readings = make_readings(600)
    readings.append({**readings[0], "firmware": "1.2.3", "measurements": {**readings[0]["measurements"], "leaf_wetness_pct": 12.5}})
    accepted = ingest(settings, readings)
    assert accepted == len(readings)
    stats = LakeSink(settings, open_bus(settings.bus_url), Lake.from_url(settings.lake_url), open_metadata(settings.metadata_url)).run()
    assert stats.rows_written == 600 and stats.duplicates == 1
    assert_exactly_once(settings, readings[:600])
    table = lake_rows(settings)
    assert set(table["greenhouse_id"].to_pylist()) == {"gh-01", "gh-02", "gh-03"}
    assert {str(d) for d in table["date"].to_pylist()} == {"2026-06-01", "2026-06-02"}
    docs = open_metadata(settings.metadata_url).collection(LAKE_BATCHES).find({})
    doc = docs[0]
    for field in ("topic", "partition", "offset_start", "offset_end", "rows", "ts_min", "ts_max", "path", "schema_fingerprint"):
        assert field in doc, field
    assert doc["schema_fingerprint"] == SCHEMA_FINGERPRINT
    assert doc["offset_start"] <= doc["offset_end"] and doc["ts_min"] <= doc["ts_max"]
    assert f"greenhouse_id={doc['greenhouse_id']}/date={doc['date']}/" in doc["path"]


def test_unknown_fields_are_kept_and_duplicates_across_runs_dropped(settings):
    first = make_readings(12)
    extra = {**first[0], "ts": "2026-06-03T00:00:00Z", "firmware": "2.0", "measurements": {"air_temp_c": 20.0, "leaf_wetness_pct": 3.5}}
    ingest(settings, first + [extra])
    sink = lambda: LakeSink(settings, open_bus(settings.bus_url), Lake.from_url(settings.lake_url), open_metadata(settings.metadata_url)).run()
    assert sink().rows_written == 13
    ingest(settings, first[:5])  # a device re-sends readings whose answer it lost
    again = sink()
    assert again.rows_written == 0 and again.duplicates == 5
    table = lake_rows(settings)
    assert table.num_rows == 13
    kept = [orjson.loads(x) for x in table["extra_json"].to_pylist() if x]
    assert kept == [{"measurements": {"leaf_wetness_pct": 3.5}, "firmware": "2.0"}]


def test_invalid_bus_messages_go_to_dead_letter_without_stopping_the_sink(settings):
    ingest(settings, make_readings(10))
    bus = open_bus(settings.bus_url)
    bus.produce(settings.topics.sensors, [OutgoingRecord(b"garbage", key=b"gh-01"), OutgoingRecord(orjson.dumps({"greenhouse_id": "gh-01"}), key=b"gh-01")])
    ingest(settings, make_readings(20)[10:])
    stats = LakeSink(settings, bus, Lake.from_url(settings.lake_url), open_metadata(settings.metadata_url)).run()
    assert stats.rows_written == 20 and stats.invalid == 2
    dead = sorted((DeadLetter.from_json(m.value) for m in bus.consumer("check", [settings.topics.deadletter]).poll(100, 1)), key=lambda d: d.error_code)
    assert [(d.source, d.source_topic, d.error_code) for d in dead] == [("sink", settings.topics.sensors, 42203), ("sink", settings.topics.sensors, 42206)]
    assert dead[0].payload == "garbage" and dead[0].reason.startswith("value: not JSON")
    assert dead[1].payload == {"greenhouse_id": "gh-01"} and dead[1].reason.startswith("device_id")
    assert all(d.source_partition is not None and d.source_offset is not None for d in dead)
    assert stats.invalid_by_reason == {"value": 1, "device_id": 1}


@pytest.mark.parametrize("phase", ["after_pending", "after_files", "after_checkpoint", "after_commit"])
def test_crash_at_each_phase_then_restart_loses_and_duplicates_nothing(tmp_path, phase):
    settings = Settings(data_dir=tmp_path / "gh", sink={"max_batch_records": 150})
    readings = make_readings(900)
    ingest(settings, readings)
    crashed = run_sink_process(settings, {"GH_SINK__FAILPOINT": f"{phase}:3"})
    out, err = crashed.communicate(timeout=120)
    assert crashed.returncode == FAILPOINT_EXIT_CODE, err.decode()[-2000:]
    resumed = run_sink_process(settings)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err.decode()[-2000:]
    summary = orjson.loads(out.decode().strip().splitlines()[-1])
    assert summary["ok"] is True
    if phase in ("after_pending", "after_files"):
        assert summary["rolled_back_files"] > 0
    if phase == "after_checkpoint":
        assert summary["rolled_forward_files"] > 0
    assert_exactly_once(settings, readings)


def test_random_kills_mid_stream_lose_and_duplicate_nothing(tmp_path):
    settings = Settings(data_dir=tmp_path / "gh", sink={"max_batch_records": 40})
    readings = make_readings(8000, greenhouses=4)
    ingest(settings, readings, batch=500)
    lake = Lake.from_url(settings.lake_url)
    rng = random.Random(7)
    for _attempt in range(5):
        seen = len(lake.list_files("raw"))
        proc = run_sink_process(settings)
        deadline = time.monotonic() + 60
        while len(lake.list_files("raw")) <= seen and time.monotonic() < deadline:
            time.sleep(0.02)  # wait until this run is writing, then kill it at a random moment
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    before = lake.read_raw_sensors().num_rows if lake.list_files("raw") else 0
    # the kills must have landed mid-stream, or this test proves nothing
    assert 0 < before < len(readings), before
    final = run_sink_process(settings)
    out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err.decode()[-2000:]
    assert_exactly_once(settings, readings)


def deep_json(levels: int) -> bytes:
    """An object nested ``levels`` deep, as JSON (orjson will not encode past 254 levels)."""
    return b'{"a":' * levels + b"1" + b"}" * levels


def with_field(reading: dict, name: str, raw_json: bytes) -> bytes:
    return orjson.dumps(reading)[:-1] + b',"' + name.encode() + b'":' + raw_json + b"}"


def test_messages_it_cannot_place_are_dead_lettered_and_the_sink_goes_on(settings):
    """Written straight to the bus (as an older gateway or another producer could): a greenhouse id
    HDFS refuses in a path, an unknown field nested 300 levels deep, an epoch ts of 1e20, JSON
    nested past what encoders take. None may stop the sink; each leaves a dead letter."""
    readings = make_readings(12)
    ingest(settings, readings[:6])
    bus = open_bus(settings.bus_url)
    bad = [orjson.dumps({**readings[6], "greenhouse_id": "gh:01"}), with_field(readings[7], "firmware", deep_json(300)), orjson.dumps({**readings[8], "ts": 1e20}), deep_json(1000)]
    bus.produce(settings.topics.sensors, [OutgoingRecord(v, key=b"gh-01") for v in bad])
    ingest(settings, readings[9:])
    stats = LakeSink(settings, bus, Lake.from_url(settings.lake_url), open_metadata(settings.metadata_url)).run()
    assert stats.rows_written == 9 and stats.invalid == 4
    assert_exactly_once(settings, readings[:6] + readings[9:])
    dead = [DeadLetter.from_json(m.value) for m in bus.consumer("check", [settings.topics.deadletter]).poll(100, 1)]
    assert sorted(d.reason.split(":")[0] for d in dead) == ["extra", "greenhouse_id", "greenhouse_id", "ts"]
    assert all(len(d.to_json()) < 20_000 for d in dead)  # deep payloads are cut, not copied whole


def test_the_duplicate_cache_is_bounded_and_reloads_what_it_forgot(settings):
    readings = make_readings(60, greenhouses=3)  # 3 greenhouse-days, 20 keys each... then 3 more (after midnight)
    ingest(settings, readings)
    sink = LakeSink(settings, open_bus(settings.bus_url), Lake.from_url(settings.lake_url), open_metadata(settings.metadata_url), seen_max_days=2, seen_max_keys=25)
    sink.run()
    assert sink.seen.days <= 2 and (len(sink.seen) <= 25 or sink.seen.days == 1)
    ingest(settings, readings)  # every reading again: all are duplicates, found via reloads from the lake
    again = LakeSink(settings, open_bus(settings.bus_url), Lake.from_url(settings.lake_url), open_metadata(settings.metadata_url), seen_max_days=1, seen_max_keys=1)
    stats = again.run()
    assert stats.rows_written == 0 and stats.duplicates == 60
    assert again.seen.days == 1 and again.seen.loads >= 3
    assert_exactly_once(settings, readings)
