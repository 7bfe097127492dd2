"""The monitor's sink lag, on the embedded engines and (marked ``stack``) on Kafka + FerretDB +
HDFS: N records produced and no sink -> lag N; the sink runs -> 0; more records with the sink
stopped -> the lag grows, because it is read from the sink's durable checkpoints, not from a
running sink. Scraped over HTTP, and from a real ``python -m app.entrypoints.monitor`` process;
``promtool check metrics`` accepts the exposition; a source that is down is reported, not fatal."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from app.bus import OutgoingRecord, open_bus
from app.config import Settings
from app.ingest.sink import LakeSink
from app.lake import Lake
from app.metadata import open_metadata
from app.observability.monitor import Monitor
from tests.helpers.stack import stack_settings
from tests.ingest.test_sink import make_readings

REPO = Path(__file__).resolve().parents[2]
PARTITIONS = 3


@pytest.fixture(params=["embedded", pytest.param("stack", marks=pytest.mark.stack)])
def lag_settings(request, tmp_path) -> Iterator[Settings]:
    """A fresh sensor topic (3 partitions) and sink group, on the embedded engines or the stack's."""
    sink = {"poll_timeout_s": 0.2, "lease_ttl_s": 3.0}
    if request.param == "embedded":
        yield Settings(data_dir=tmp_path / "gh", topics={"partitions": PARTITIONS}, sink=sink)
        return
    run, settings = stack_settings(tmp_path, "monitor", partitions=PARTITIONS, sink_batch_records=500)
    yield settings.model_copy(update={"sink": settings.sink.model_copy(update=sink)})
    store = open_metadata(settings.metadata_url)
    store.client.drop_database(f"gh_monitor_{run}")
    store.close()


def produce(settings: Settings, readings: list[dict]) -> dict[int, int]:
    """Produce ``readings`` to the sensor topic (key: greenhouse); records per partition."""
    bus = open_bus(settings.bus_url, topics=settings.topics)
    bus.create_topic(settings.topics.sensors, PARTITIONS)
    results = bus.produce(settings.topics.sensors, [OutgoingRecord(value=orjson.dumps(r), key=r["greenhouse_id"].encode()) for r in readings])
    bus.close()
    assert all(r.ok for r in results)
    counts: dict[int, int] = {}
    for r in results:
        counts[r.partition] = counts.get(r.partition, 0) + 1
    return counts


def run_sink(settings: Settings) -> None:
    stats = LakeSink(settings, open_bus(settings.bus_url, topics=settings.topics), Lake.from_url(settings.lake_url), open_metadata(settings.metadata_url)).run(idle_polls=2)
    assert stats.rows_written > 0


def scrape(monitor: Monitor) -> dict[str, dict[tuple, float]]:
    """Serve ``monitor`` on a free port the way the monitor process does, GET /metrics, parse it:
    sample name -> {sorted label items: value}."""
    registry = CollectorRegistry()
    registry.register(monitor)
    server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10) as answer:
            return parse(answer.read().decode())
    finally:
        server.shutdown()


def parse(text: str) -> dict[str, dict[tuple, float]]:
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def lag_of(metrics: dict[str, dict[tuple, float]], topic: str) -> dict[int, float]:
    found = metrics.get("gh_sink_lag_records", {})
    return {int(dict(labels)["partition"]): value for labels, value in found.items() if dict(labels)["topic"] == topic}


def test_lag_counts_from_the_sinks_checkpoints_and_grows_while_it_is_stopped(lag_settings):
    settings = lag_settings
    topic = settings.topics.sensors
    readings = make_readings(240, greenhouses=3)
    monitor = Monitor(settings, open_jobs_client=_no_ray)

    first = produce(settings, readings[:150])
    monitor.refresh()
    metrics = scrape(monitor)
    assert lag_of(metrics, topic) == {p: first.get(p, 0) for p in range(PARTITIONS)}
    assert sum(lag_of(metrics, topic).values()) == 150
    assert metrics["gh_monitor_source_up"][(("source", "bus"),)] == 1.0
    assert metrics["gh_monitor_source_up"][(("source", "metadata"),)] == 1.0

    run_sink(settings)
    monitor.refresh()
    assert lag_of(scrape(monitor), topic) == dict.fromkeys(range(PARTITIONS), 0.0)

    more = produce(settings, readings[150:])  # the sink is stopped now
    monitor.refresh()
    assert lag_of(scrape(monitor), topic) == {p: more.get(p, 0) for p in range(PARTITIONS)}
    produce(settings, make_readings(30, greenhouses=3)[:30])
    monitor.refresh()
    assert sum(lag_of(scrape(monitor), topic).values()) == 90 + 30
    monitor.close()


def test_a_source_that_is_down_is_reported_and_the_monitor_recovers(settings):
    produce(settings, make_readings(12))
    failing = {"bus": True}

    def flaky_bus():
        if failing["bus"]:
            raise ConnectionError("bus is down")
        return open_bus(settings.bus_url)

    monitor = Monitor(settings, open_bus=flaky_bus, open_jobs_client=_no_ray)
    monitor.refresh()
    metrics = scrape(monitor)
    up = metrics["gh_monitor_source_up"]
    assert up[(("source", "bus"),)] == 0.0 and up[(("source", "metadata"),)] == 1.0 and up[(("source", "ray"),)] == 0.0
    assert "gh_sink_lag_records" not in metrics  # unknown, not stale
    assert metrics["gh_job_runs_total"][(("job_name", "sink"), ("outcome", "failed"))] == 0.0  # counters sit at 0

    failing["bus"] = False
    monitor.refresh()
    metrics = scrape(monitor)
    assert metrics["gh_monitor_source_up"][(("source", "bus"),)] == 1.0
    assert sum(lag_of(metrics, settings.topics.sensors).values()) == 12


def test_the_monitor_process_serves_metrics_promtool_accepts(tmp_path):
    settings = Settings(data_dir=tmp_path / "gh", topics={"partitions": PARTITIONS})
    produce(settings, make_readings(20))
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("GH_") or k.startswith("GH_TEST_")}  # only this test's settings
    env = {**inherited, "GH_DATA_DIR": str(tmp_path / "gh"), "GH_TOPICS__PARTITIONS": str(PARTITIONS), "GH_MONITOR__RAY_JOBS_URL": "http://127.0.0.1:9"}
    proc = subprocess.Popen([sys.executable, "-m", "app.entrypoints.monitor", "--port", "0", "--interval-s", "0.5"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "serving http://127.0.0.1:" in line, proc.stderr.read() if proc.poll() is not None else line
        url = line.split("serving ", 1)[1].split(",", 1)[0]
        text = _wait_for(url, "gh_sink_lag_records")
        assert sum(lag_of(parse(text), settings.topics.sensors).values()) == 20
        assert 'gh_monitor_source_up{source="ray"} 0.0' in text  # no Ray there: reported, still serving
        promtool = shutil.which("promtool") or "/usr/bin/promtool"
        if not Path(promtool).exists():
            pytest.skip("promtool is not installed (Debian: prometheus)")
        checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def _wait_for(url: str, needle: str, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
        if needle in text or time.monotonic() > deadline:
            return text
        time.sleep(0.3)


def _no_ray():
    raise ConnectionError("no Ray cluster in this test")
