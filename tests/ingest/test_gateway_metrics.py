"""The gateway's metrics and its id-carrying log line, without Ray: the service's hooks, the
metric classes fed through an in-memory recorder (a stand-in for ``ray.serve.metrics`` in these
tests only), and the ASGI middleware under FastAPI's test client."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import orjson
import pytest
from fastapi.testclient import TestClient

from app.bus import open_bus
from app.config import Settings
from app.ingest.api import create_api
from app.ingest.gateway import JSON_V2, IngestService, Written, partition_offsets, reading_time_s
from app.metadata import LAKE_BATCHES, open_metadata
from app.serve.ingest_metrics import FreshnessTracker, IngestMetrics, RequestMetricsMiddleware, newest_committed_readings
from tests.ingest.conftest import make_devices
from tests.serve.metric_recorder import MetricRecorder

TOPIC = "greenhouse.sensors"
NOW = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)


@pytest.fixture
def wired(tmp_path):
    """A service whose hooks feed :class:`IngestMetrics` on a recorder; ``(service, recorder, devices)``."""
    recorder = MetricRecorder()
    metrics = IngestMetrics(recorder)
    settings = Settings(data_dir=tmp_path / "gh")
    devices = make_devices(settings.metadata_url)
    service = IngestService(settings, open_bus(settings.bus_url), devices.registry, clock=lambda: NOW, on_result=metrics.records, on_refused=metrics.auth_failure, on_reading=metrics.reading_accepted)
    return service, recorder, devices, metrics


def produce(service: IngestService, values: list, authorization: str | None):
    return service.produce(TOPIC, orjson.dumps({"records": [{"value": v} for v in values]}), content_type=JSON_V2, authorization=authorization)


def test_accepted_records_set_the_greenhouses_newest_reading_time_and_count_records(wired, reading):
    service, recorder, devices, _ = wired
    r = produce(service, [reading(5), reading(2), {**reading(9), "measurements": {"rh_pct": 140.0}}], devices.auth("gh-01"))
    assert r.status == 200
    newest = datetime(2026, 6, 1, 0, 5, tzinfo=timezone.utc).timestamp()  # reading(5): the newest accepted, not the rejected 9
    assert recorder["gh_greenhouse_last_reading_timestamp_seconds"].value(greenhouse_id="gh-01") == newest
    assert recorder["gh_ingest_records_accepted"].total() == 2
    assert sum(recorder["gh_ingest_records_rejected"].totals.values()) == 1
    produce(service, [reading(1)], devices.auth("gh-01"))  # older: the gauge keeps the newest
    assert recorder["gh_greenhouse_last_reading_timestamp_seconds"].value(greenhouse_id="gh-01") == newest


@pytest.mark.parametrize(("authorization", "reason"), [("Bearer d_nope.nope", "invalid_token"), (None, "missing_credential"), ("Basic abc", "malformed_authorization")])
def test_each_refused_credential_is_counted_with_the_reason_stats_gives(wired, reading, authorization, reason):
    service, recorder, _, _ = wired
    assert produce(service, [reading(0)], authorization).status == 401
    assert recorder["gh_auth_failures"].total(surface="ingest", reason=reason) == 1
    assert service.stats.unauthorized_by_reason == {reason: 1}
    assert recorder["gh_greenhouse_last_reading_timestamp_seconds"].values == {}


def test_an_accepted_request_logs_its_batch_with_the_kafka_offsets(wired, reading, caplog):
    service, _, devices, _ = wired
    caplog.set_level(logging.INFO, logger="app.ingest.gateway")
    r = produce(service, [reading(i) for i in range(3)], devices.auth("gh-01"))
    (line,) = [rec for rec in caplog.records if getattr(rec, "event", None) == "ingest_batch"]
    offsets = [o["offset"] for o in r.body["offsets"]]
    partition = r.body["offsets"][0]["partition"]
    assert line.getMessage() == "ingest batch accepted"
    assert (line.greenhouse_id, line.device_id, line.records, line.topic) == ("gh-01", "gh-01-climate", 3, TOPIC)
    assert line.partition_offsets == {partition: [min(offsets), max(offsets)]}
    assert len(line.batch_id) == 32 and int(line.batch_id, 16) >= 0
    caplog.clear()
    produce(service, [{"greenhouse_id": "gh-01"}], devices.auth("gh-01"))  # nothing accepted: no batch line
    assert not [rec for rec in caplog.records if getattr(rec, "event", None) == "ingest_batch"]


def test_partition_offsets_and_reading_times():
    assert partition_offsets([Written(1, 7, 10), Written(0, 3, 10), Written(1, 5, 10)]) == {1: [5, 7], 0: [3, 3]}
    assert reading_time_s({"ts": "2026-06-01T00:00:00Z"}) == datetime(2026, 6, 1, tzinfo=timezone.utc).timestamp()
    assert reading_time_s({"ts": "2026-06-01T02:00:00+02:00"}) == datetime(2026, 6, 1, tzinfo=timezone.utc).timestamp()
    assert reading_time_s({"ts": 1_780_272_000_000}) == 1_780_272_000.0
    assert reading_time_s({"ts": "yesterday"}) is None and reading_time_s("x") is None and reading_time_s({"ts": True}) is None


def test_freshness_is_capped_with_one_warning_and_refresh_sets_every_gauge_again(caplog):
    recorder = MetricRecorder()
    metrics = IngestMetrics(recorder, max_greenhouses=2)
    gauge = recorder["gh_greenhouse_last_reading_timestamp_seconds"]
    with caplog.at_level(logging.WARNING, logger="app.serve.ingest_metrics"):
        for i, gh in enumerate(["gh-a", "gh-b", "gh-c", "gh-d"]):
            metrics.reading_accepted(gh, 100.0 + i)
    assert gauge.values.keys() == {(("greenhouse_id", "gh-a"),), (("greenhouse_id", "gh-b"),)}
    assert len([r for r in caplog.records if "not tracked" in r.getMessage()]) == 1
    metrics.reading_accepted("gh-a", 500.0)  # a tracked greenhouse still moves on
    assert gauge.value(greenhouse_id="gh-a") == 500.0
    before = gauge.sets
    metrics.refresh()
    assert gauge.sets == before + 2 and gauge.value(greenhouse_id="gh-b") == 101.0


def test_freshness_tracker_keeps_the_newest():
    tracker = FreshnessTracker(10)
    assert tracker.note("g", 5.0) and not tracker.note("g", 4.0) and not tracker.note("g", 5.0) and tracker.note("g", 6.0)
    assert tracker.snapshot() == {"g": 6.0}


def test_seed_reads_the_newest_committed_lake_batch_per_greenhouse(tmp_path):
    batches = open_metadata(f"file://{tmp_path / 'meta'}").collection(LAKE_BATCHES)
    day = datetime(2026, 6, 1, tzinfo=timezone.utc)
    batches.insert_one({"_id": "a1", "greenhouse_id": "gh-01", "status": "committed", "ts_max": day.replace(hour=3)})
    batches.insert_one({"_id": "a2", "greenhouse_id": "gh-01", "status": "committed", "ts_max": day.replace(hour=5)})
    batches.insert_one({"_id": "a3", "greenhouse_id": "gh-01", "status": "pending", "ts_max": day.replace(hour=9)})
    batches.insert_one({"_id": "b1", "greenhouse_id": "gh-02", "status": "pending", "ts_max": day})
    assert newest_committed_readings(batches, ["gh-01", "gh-02", "gh-03"]) == {"gh-01": day.replace(hour=5).timestamp()}
    recorder = MetricRecorder()
    IngestMetrics(recorder).seed({"gh-01": 42.0})
    assert recorder["gh_greenhouse_last_reading_timestamp_seconds"].value(greenhouse_id="gh-01") == 42.0


def test_the_middleware_counts_produce_requests_by_api_and_status_with_their_bytes(wired, reading):
    service, recorder, devices, metrics = wired
    api = create_api(service)
    api.add_middleware(RequestMetricsMiddleware, observe=metrics.request)
    body = orjson.dumps({"records": [{"value": reading(0)}]})
    v3_body = orjson.dumps({"value": {"type": "JSON", "data": reading(1)}})
    with TestClient(api) as client:
        assert client.post(f"/topics/{TOPIC}", content=body, headers={"content-type": JSON_V2, "authorization": devices.auth()}).status_code == 200
        assert client.post(f"/topics/{TOPIC}", content=body, headers={"content-type": JSON_V2, "authorization": "Bearer d_x.y"}).status_code == 401
        v3 = client.post(f"/v3/clusters/greenhouse/topics/{TOPIC}/records", content=v3_body, headers={"content-type": "application/json", "authorization": devices.auth()})
        assert v3.status_code == 200, v3.text
        assert client.get("/healthz").status_code == 200  # not a produce request: not counted
    requests = recorder["gh_ingest_requests"]
    assert dict(requests.totals) == {(("api", "v2"), ("code", "200")): 1, (("api", "v2"), ("code", "401")): 1, (("api", "v3"), ("code", "200")): 1}
    assert recorder["gh_ingest_request_body_bytes"].observations(api="v2") == [len(body)]  # the 401 body was never read
    assert recorder["gh_ingest_request_body_bytes"].observations(api="v3") == [len(v3_body)]
    durations = recorder["gh_ingest_request_duration_seconds"].observations(api="v2")
    assert len(durations) == 2 and all(0 < d < 10 for d in durations)
    assert recorder["gh_auth_failures"].total(surface="ingest", reason="invalid_token") == 1
