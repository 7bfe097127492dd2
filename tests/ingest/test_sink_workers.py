"""Several sink workers on one topic: partition leases, epoch fencing, takeover of a killed
worker's partitions, two sinks started at once. Each fault test runs on the embedded engines and
on the real stack (Kafka, FerretDB, HDFS; skipped outside CI when the stack is down)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import orjson
import pytest
import yaml

from app.bus import TopicPartition, open_bus
from app.config import Settings
from app.ingest.leases import PartitionLeases, fair_share, plan_rebalance
from app.ingest.ownership import PartitionFenced, chunk_file_name
from app.ingest.sink import LakeSink
from app.ingest.sink_stats import merge_stats
from app.lake import Lake
from app.metadata import LAKE_BATCHES, open_metadata
from tests.helpers.stack import stack_settings
from tests.ingest.test_sink import assert_exactly_once, ingest, make_readings

REPO = Path(__file__).resolve().parents[2]
LEASE_TTL_S = 2.0


# -- pure policy ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("partitions", "workers", "share"), [(4, 1, 4), (4, 2, 2), (4, 3, 2), (5, 2, 3), (3, 5, 1), (4, 0, 4)])
def test_fair_share_is_the_ceiling_of_partitions_per_live_worker(partitions, workers, share):
    assert fair_share(partitions, workers) == share


def test_rebalance_gives_back_above_the_share_and_takes_free_partitions_up_to_it():
    assert plan_rebalance(owned=[0, 1, 2, 3], free=[], share=2).release == [2, 3]
    assert plan_rebalance(owned=[0, 1, 2, 3], free=[], share=2).take == []
    assert plan_rebalance(owned=[1], free=[0, 2, 3], share=2).take == [0]
    assert plan_rebalance(owned=[], free=[3, 1], share=4).take == [1, 3]
    assert plan_rebalance(owned=[0, 1], free=[2], share=2) == plan_rebalance(owned=[0, 1], free=[], share=2)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 6, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def test_a_heartbeat_that_loses_an_upsert_race_updates_the_document_instead(tmp_path):
    """Two workers under one name upserting their document at once: MongoDB inserts for both and
    refuses one (E11000). That one's heartbeat goes on as an update (a CI run's sink exited 1 here)."""
    from app.metadata import DuplicateKeyError

    store, clock = open_metadata(f"file://{tmp_path / 'meta'}"), Clock()
    worker = PartitionLeases(store, "g", "t", "a", ttl_s=10, now=clock)
    real_update, raced = worker.workers.update_one, []

    def update_losing_the_race_once(*args, **kwargs):
        if not raced:
            raced.append(True)
            real_update(*args, **kwargs)  # the other process's insert
            raise DuplicateKeyError("sink_workers: E11000 duplicate key error")
        return real_update(*args, **kwargs)

    worker.workers.update_one = update_losing_the_race_once  # type: ignore[method-assign]
    assert worker.heartbeat() == 1 and raced == [True]


def test_leases_move_only_when_free_expired_or_reclaimed_by_the_same_name(tmp_path):
    store, clock = open_metadata(f"file://{tmp_path / 'meta'}"), Clock()
    a = PartitionLeases(store, "g", "t", "a", ttl_s=10, now=clock)
    b = PartitionLeases(store, "g", "t", "b", ttl_s=10, now=clock)
    assert a.acquire(0) == 1
    assert b.acquire(0) is None and b.free_partitions(2) == [1]
    clock.advance(5)
    assert a.renew(0, 1)
    clock.advance(9)  # 9 s after the renewal: still a's
    assert b.acquire(0) is None
    clock.advance(2)
    assert b.acquire(0) == 2  # expired: b takes it with a new epoch
    assert not a.renew(0, 1)  # a is fenced
    a_again = PartitionLeases(store, "g", "t", "b", ttl_s=10, now=clock)  # b restarted under its name
    assert a_again.acquire(0) is None and a_again.acquire(0, reclaim=True) == 3
    a_again.release(0, 3)
    assert a.acquire(0) == 4  # released: free at once
    assert a.heartbeat() == 1 and b.heartbeat() == 2
    clock.advance(11)
    assert a.heartbeat() == 1  # b stopped beating


# -- engines --------------------------------------------------------------------------------------
@pytest.fixture(params=["embedded", pytest.param("stack", marks=pytest.mark.stack)])
def sink_settings(request, tmp_path) -> Iterator[Settings]:
    """Settings for a sink shared by workers: 4 partitions, small chunks, 2-s leases."""
    sink = {"max_batch_records": 200, "poll_timeout_s": 0.2, "lease_ttl_s": LEASE_TTL_S}
    if request.param == "embedded":
        yield Settings(data_dir=tmp_path / "gh", topics={"partitions": 4}, sink=sink)
        return
    run, settings = stack_settings(tmp_path, "sinkworkers", partitions=4, sink_batch_records=200)
    settings = settings.model_copy(update={"sink": settings.sink.model_copy(update=sink)})
    yield settings
    store = open_metadata(settings.metadata_url)
    store.client.drop_database(f"gh_sinkworkers_{run}")
    store.close()


def new_sink(settings: Settings, worker_id: str) -> LakeSink:
    return LakeSink(settings, open_bus(settings.bus_url), Lake.from_url(settings.lake_url), open_metadata(settings.metadata_url), worker_id=worker_id)


def sink_process(settings: Settings, config: Path, *args: str) -> subprocess.Popen:
    config.write_text(yaml.safe_dump(settings.for_replicas()))
    # stderr to a file: the sink logs a line per lake file, and a pipe nobody reads until the end
    # fills up (64 KB) and blocks the sink mid-run (it then misses its lease renewals)
    stderr = config.with_suffix(".stderr").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "jobs.sink", "--config", str(config), *args], cwd=REPO, env=dict(os.environ), stdout=subprocess.PIPE, stderr=stderr)
    stderr.close()
    proc.stderr_path = config.with_suffix(".stderr")  # type: ignore[attr-defined]
    return proc


def summary_of(proc: subprocess.Popen, timeout: float = 240) -> dict:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, proc.stderr_path.read_text()[-3000:]  # type: ignore[attr-defined]
    return orjson.loads(out.decode().strip().splitlines()[-1])


def zombie_with_a_chunk_read(settings: Settings) -> tuple[LakeSink, TopicPartition, list]:
    """A worker named "zombie" that took every partition and read one partition's chunk (not
    written yet): the partition and its messages."""
    zombie = new_sink(settings, "zombie")
    assert zombie.ownership.rebalance(first=True)
    zombie._reassign()
    batch = zombie._consumer.poll(1000, 5.0)
    assert batch, "nothing to read"
    tp = TopicPartition(batch[0].topic, batch[0].partition)
    return zombie, tp, [m for m in batch if m.partition == tp.partition]


def test_a_fenced_worker_cannot_commit_and_removes_only_its_own_files(sink_settings):
    settings = sink_settings
    readings = make_readings(400, greenhouses=4)
    ingest(settings, readings)
    zombie, tp, messages = zombie_with_a_chunk_read(settings)
    time.sleep(LEASE_TTL_S + 0.5)  # the zombie pauses past its lease...
    heir = new_sink(settings, "heir")
    stats = heir.run()  # ...another worker takes every partition and sinks everything
    assert stats.partitions_taken == 4 and stats.rows_written == len(readings)
    lake = Lake.from_url(settings.lake_url)
    heirs_files = lake.list_files("raw/sensors")
    with pytest.raises(PartitionFenced):  # the zombie wakes up and tries to write its chunk
        zombie._process_chunk(tp, messages)
    assert lake.list_files("raw/sensors") == heirs_files, "the zombie left or removed a file"
    assert_exactly_once(settings, readings)
    docs = open_metadata(settings.metadata_url).collection(LAKE_BATCHES).find({})
    assert {d["worker"] for d in docs} == {"heir"}


def test_a_write_failing_because_the_worker_was_fenced_is_a_fence_not_a_crash(sink_settings):
    """A zombie whose files the heir removed mid-write sees its lake write fail (WebHDFS raises
    RuntimeError for a file deleted under its writer): that is PartitionFenced, which the sink
    survives, not an error that stops the job."""
    settings = sink_settings
    readings = make_readings(200, greenhouses=2)
    ingest(settings, readings)
    zombie, tp, messages = zombie_with_a_chunk_read(settings)
    chunk = zombie._prepare_chunk(tp, messages)
    time.sleep(LEASE_TTL_S + 0.5)
    assert new_sink(settings, "heir").run().rows_written == len(readings)

    def write_under_a_deleted_file(*args, **kwargs):
        raise RuntimeError("LeaseExpiredException: No lease on /_staging/x: File does not exist")

    zombie.lake.write_parquet = write_under_a_deleted_file  # type: ignore[method-assign]
    with pytest.raises(PartitionFenced):
        zombie._write_chunk(chunk)
    assert_exactly_once(settings, readings)


def test_two_workers_share_the_partitions_exactly_once(sink_settings):
    settings = sink_settings
    sinks = [new_sink(settings, f"w{i}") for i in range(2)]
    done = threading.Event()
    results: dict[int, object] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, sinks[i].run(until_idle=False, should_stop=done.is_set))) for i in range(2)]
    for t in threads:
        t.start()
    wait_for(lambda: all(len(s.ownership.owned) == 2 for s in sinks), "the workers never split the partitions 2 + 2")
    readings = make_readings(6000, greenhouses=8)
    ingest(settings, readings, batch=500)
    wait_for(lambda: sum(s.committed_offsets_total() for s in sinks[:1]) >= len(readings), "the workers did not sink every reading")
    done.set()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 2, "a worker did not finish"
    assert merge_stats(results.values()).rows_written == len(readings)  # type: ignore[arg-type]
    assert_exactly_once(settings, readings)
    writers = {d["worker"] for d in open_metadata(settings.metadata_url).collection(LAKE_BATCHES).find({})}
    assert writers == {"w0", "w1"}, f"one worker did all the work: {writers}"


def wait_for(condition, message: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.1)


def test_two_sinks_started_at_once_under_one_name_are_fenced_and_lose_nothing(sink_settings, tmp_path):
    """Two `jobs.sink` processes with the default worker name (an operator starting the job
    twice): the later one fences the earlier; no file of one is deleted by the other."""
    settings = sink_settings
    readings = make_readings(4000, greenhouses=6)
    ingest(settings, readings, batch=500)
    procs = [sink_process(settings, tmp_path / f"sink{i}.yaml", "--idle-polls", "5") for i in range(2)]
    summaries = [summary_of(p) for p in procs]
    assert sum(s["rows_written"] for s in summaries) == len(readings)
    assert_exactly_once(settings, readings)


def test_a_killed_workers_partitions_move_to_the_survivor(sink_settings, tmp_path):
    settings = sink_settings
    store = open_metadata(settings.metadata_url)
    leases = store.collection("sink_leases")

    def holders() -> dict[str, int]:
        now = datetime.now(timezone.utc)
        out: dict[str, int] = {}
        for d in leases.find({"group": settings.sink.group_id, "expires_at": {"$gt": now}}):
            out[d["owner"]] = out.get(d["owner"], 0) + 1
        return out

    survivor = sink_process(settings, tmp_path / "survivor.yaml", "--worker-id", "survivor", "--follow", "--max-seconds", "45")
    victim = sink_process(settings, tmp_path / "victim.yaml", "--worker-id", "victim", "--follow")
    wait_for(lambda: holders() == {"survivor": 2, "victim": 2}, "the two workers never split the partitions 2 + 2")
    readings = make_readings(8000, greenhouses=8)
    ingest(settings, readings, batch=500)
    wait_for(lambda: store.collection(LAKE_BATCHES).count_documents({"worker": "victim"}) > 0, "the victim never wrote: this test proves nothing", timeout_s=60)
    victim.send_signal(signal.SIGKILL)  # mid-stream, its chunks half done
    victim.wait(timeout=30)
    wait_for(lambda: holders() == {"survivor": 4}, "the survivor never took the victim's partitions", timeout_s=30)
    summary = summary_of(survivor, timeout=120)
    assert summary["partitions_taken"] >= 4, summary
    assert Lake.from_url(settings.lake_url).read_raw_sensors().num_rows == len(readings)
    assert_exactly_once(settings, readings)


def test_the_sink_job_runs_its_workers_as_ray_actors(sink_settings, tmp_path):
    """`python -m jobs.sink --workers 2`: two actors on a local Ray cluster share the partitions."""
    settings = sink_settings
    readings = make_readings(3000, greenhouses=8)
    ingest(settings, readings, batch=500)
    summary = summary_of(sink_process(settings, tmp_path / "sink.yaml", "--workers", "2", "--idle-polls", "5"), timeout=300)
    assert [w["worker"] for w in summary["workers"]] == [f"{settings.sink.group_id}-0", f"{settings.sink.group_id}-1"]
    assert summary["rows_written"] == len(readings) == sum(w["rows_written"] for w in summary["workers"])
    assert_exactly_once(settings, readings)


@pytest.mark.parametrize("args", [["--workers", "0"], ["--workers", "2", "--worker-id", "x"]])
def test_the_sink_job_refuses_a_bad_worker_option(args):
    done = subprocess.run([sys.executable, "-m", "jobs.sink", *args], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--worker" in done.stderr.splitlines()[-1]


def test_a_fenced_zombies_uncommitted_file_does_not_count_as_in_the_lake(sink_settings):
    """A zombie's file of a chunk it never committed, left in a greenhouse-day it was fenced out
    of (it deletes it a moment later): the owner must not take its readings as already in the
    lake, or it drops them as duplicates and the lake loses them when the zombie cleans up."""
    settings = sink_settings
    readings = make_readings(120, greenhouses=1, devices=2)
    ingest(settings, readings, batch=120)
    lake = Lake.from_url(settings.lake_url)
    bus = open_bus(settings.bus_url, topics=settings.topics)
    topic = settings.topics.sensors
    partition = next(p for p in range(bus.partitions_for(topic)) if bus.end_offsets(topic).get(p))
    day = datetime.fromisoformat(readings[0]["ts"]).date()
    sink = LakeSink(settings, bus, lake, open_metadata(settings.metadata_url), worker_id="owner")
    zombie_chunk = sink._readings(TopicPartition(topic, partition), bus.consumer("peek", [topic], partitions=[partition]).poll(1000, 5.0))
    name = chunk_file_name(topic, partition, 0, 0, len(readings) - 1)  # an earlier epoch, never committed
    lake.write_parquet(zombie_chunk.lake_table(np.arange(len(readings))), f"{Lake.raw_partition(readings[0]['greenhouse_id'], day)}/{name}")
    stats = sink.run(until_idle=True, idle_polls=2)
    assert (stats.rows_written, stats.duplicates) == (len(readings), 0)
