"""The sink and records the bus deleted before it read them (retention): an error and a metric,
never a silent skip; ``--accept-data-loss`` moves on, logged and counted. On the embedded bus and
on the real Kafka (records deleted with DeleteRecords, what retention does to a partition's head)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pyarrow.compute as pc
import pytest

from app.bus import OutgoingRecord, open_bus, partition_for_key
from app.bus.metrics import lost_offsets
from app.config import Settings
from app.entrypoints.sink import main as sink_main
from app.ingest.sink import LakeSink
from app.lake import Lake
from app.metadata import open_metadata
from tests.helpers.engines import engine_url

START = datetime(2026, 6, 1, tzinfo=timezone.utc)
PARTITIONS = 2


def readings(first: int, count: int, greenhouse_id: str) -> list[OutgoingRecord]:
    out = []
    for i in range(first, first + count):
        reading = {
            "greenhouse_id": greenhouse_id,
            "device_id": f"{greenhouse_id}-climate",
            "ts": (START + timedelta(minutes=i)).isoformat().replace("+00:00", "Z"),
            "measurements": {"air_temp_c": 20.0 + i / 100, "rh_pct": 70.0},
        }
        out.append(OutgoingRecord(orjson.dumps(reading), key=greenhouse_id.encode()))
    return out


@pytest.fixture(params=["embedded", "kafka"])
def settings(request, tmp_path, monkeypatch) -> Settings:
    """Settings of this test alone (fresh topics on Kafka, which keeps topics between runs), also
    in the environment for ``jobs.sink``."""
    run = uuid.uuid4().hex[:10]
    env = {
        "GH_DATA_DIR": str(tmp_path / "gh"),
        "GH_TOPICS__SENSORS": f"t-sensors-{run}",
        "GH_TOPICS__DEADLETTER": f"t-dead-{run}",
        "GH_TOPICS__PARTITIONS": str(PARTITIONS),
        "GH_SINK__POLL_TIMEOUT_S": "0.2",
        "GH_SINK__GROUP_ID": f"sink-{run}",
    }
    if request.param == "kafka":
        env["GH_BUS_URL"] = engine_url("kafka")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def run_sink(settings: Settings):
    return LakeSink(settings, open_bus(settings.bus_url, topics=settings.topics), Lake.from_url(settings.lake_url), open_metadata(settings.metadata_url)).run()


def summary(capsys) -> dict:
    return orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_sink_stops_on_records_lost_to_retention_and_moves_on_only_when_told(settings, capsys):
    bus = open_bus(settings.bus_url, topics=settings.topics)
    bus.create_topic(settings.topics.sensors, PARTITIONS)
    bus.produce(settings.topics.sensors, readings(0, 20, "gh-01") + readings(0, 20, "gh-04"))
    assert run_sink(settings).rows_written == 40

    # 20 more readings each; retention then deletes the first 10 new ones of gh-01 before the sink ran
    bus.produce(settings.topics.sensors, readings(20, 20, "gh-01") + readings(20, 20, "gh-04"))
    lost_partition = partition_for_key(b"gh-01", PARTITIONS)
    assert lost_partition != partition_for_key(b"gh-04", PARTITIONS)
    bus.delete_records(settings.topics.sensors, {lost_partition: 30})
    refused = lost_offsets(settings.topics.sensors, lost_partition, skipped=False)

    assert sink_main([]) == 1
    failed = summary(capsys)
    assert failed["ok"] is False and failed["error"].startswith("LostRecordsError")
    for fragment in (f"lake sink {settings.sink.group_id}", f"{settings.topics.sensors}/{lost_partition}", "next offset to read, 20", "earliest offset held: 30", "--accept-data-loss"):
        assert fragment in failed["error"], fragment
    assert lost_offsets(settings.topics.sensors, lost_partition, skipped=False) == refused + 10
    assert sink_main([]) == 1, "a second run refuses again: nothing was skipped"
    capsys.readouterr()
    assert Lake.from_url(settings.lake_url).read_raw_sensors().num_rows == 40

    assert sink_main(["--accept-data-loss"]) == 0
    done = summary(capsys)
    assert done["ok"] is True and done["offsets_skipped"] == 10 and done["rows_written"] == 30
    assert lost_offsets(settings.topics.sensors, lost_partition, skipped=True) >= 10
    table = Lake.from_url(settings.lake_url).read_raw_sensors()
    keys = list(zip(table["device_id"].to_pylist(), pc.cast(table["ts"], "int64").to_pylist()))
    assert len(keys) == len(set(keys)) == 70
    gh01_minutes = sorted(int((ts - int(START.timestamp() * 1000)) / 60_000) for device, ts in keys if device == "gh-01-climate")
    assert gh01_minutes == list(range(20)) + list(range(30, 40))

    assert sink_main([]) == 0, "past the gap, the sink runs without the flag again"
    assert summary(capsys)["rows_written"] == 0
