"""The ingest gateway's metrics as Prometheus reads them: the gateway runs in Ray Serve on the real
Kafka and FerretDB of the stack, and the node's metrics agent exports what the replica recorded
(``ray_`` prefix, ``_total`` on counters, the product's labels)."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import httpx
import orjson
import pytest

from app.metadata import LAKE_BATCHES, open_metadata
from tests.helpers.stack import stack_settings
from tests.ingest.conftest import _reading as reading
from tests.ingest.conftest import make_devices
from tests.observability.test_alert_rules import promtool  # noqa: F401  (fixture: the promtool binary)
from tests.serve.prometheus_text import exposition, product_lint_problems, samples, value_of

JSON_V2 = "application/vnd.kafka.json.v2+json"
SEEDED_AT = datetime(2026, 5, 31, 18, tzinfo=timezone.utc)


@pytest.mark.serve
@pytest.mark.stack
def test_the_gateway_exports_requests_auth_failures_and_freshness(ray_serve, ray_local, tmp_path, promtool):  # noqa: F811
    from ray import serve

    from app.serve.args import AppArgs
    from app.serve.ingest import build_app

    run, settings = stack_settings(tmp_path / "gh", "metrics", partitions=2, sink_batch_records=100)
    store = open_metadata(settings.metadata_url)
    devices = make_devices(settings.metadata_url)
    # gh-02 has posted nothing to this gateway; the lake knows its newest reading: the seed
    store.collection(LAKE_BATCHES).insert_one({"_id": f"seed-{run}", "greenhouse_id": "gh-02", "status": "committed", "ts_max": SEEDED_AT})
    serve.run(build_app(AppArgs(settings=settings.for_replicas())), name="ingest-metrics", route_prefix="/ingest-metrics")
    topic = settings.topics.sensors
    try:
        with httpx.Client(base_url=f"{ray_serve}/ingest-metrics", timeout=60) as client:
            body = orjson.dumps({"records": [{"value": reading(3)}, {"value": reading(1)}]})
            ok = client.post(f"/topics/{topic}", content=body, headers={"content-type": JSON_V2, "authorization": devices.auth("gh-01")})
            assert ok.status_code == 200, ok.text
            refused = client.post(f"/topics/{topic}", content=body, headers={"content-type": JSON_V2, "authorization": "Bearer d_nobody.wrong"})
            assert refused.status_code == 401
        newest = datetime(2026, 6, 1, 0, 3, tzinfo=timezone.utc).timestamp()  # reading(3)
        wanted = {
            "200": lambda t: value_of(t, "ray_gh_ingest_requests_total", api="v2", code="200", application="ingest-metrics"),
            "401": lambda t: value_of(t, "ray_gh_ingest_requests_total", api="v2", code="401", application="ingest-metrics"),
            "auth": lambda t: value_of(t, "ray_gh_auth_failures_total", surface="ingest", reason="invalid_token", application="ingest-metrics"),
            "gh-01": lambda t: value_of(t, "ray_gh_greenhouse_last_reading_timestamp_seconds", greenhouse_id="gh-01", application="ingest-metrics"),
            "gh-02": lambda t: value_of(t, "ray_gh_greenhouse_last_reading_timestamp_seconds", greenhouse_id="gh-02", application="ingest-metrics"),
            "duration": lambda t: value_of(t, "ray_gh_ingest_request_duration_seconds_count", api="v2", application="ingest-metrics"),
            "bytes": lambda t: value_of(t, "ray_gh_ingest_request_body_bytes_bucket", api="v2", le="+Inf", application="ingest-metrics"),
        }
        deadline, seen = time.monotonic() + 90, {}
        while time.monotonic() < deadline:  # the agent reports every few seconds
            text = exposition(ray_local)
            seen = {k: f(text) for k, f in wanted.items()}
            if all(v is not None for v in seen.values()) and seen["duration"] >= 2:
                break
            time.sleep(2)
        assert seen == {"200": 1.0, "401": 1.0, "auth": 1.0, "gh-01": newest, "gh-02": SEEDED_AT.timestamp(), "duration": 2.0, "bytes": 1.0}, seen
        le = {lab["le"] for lab, _ in samples(text, "ray_gh_ingest_request_duration_seconds_bucket")}
        assert "1.0" in le and "0.001" in le  # bounds as Python prints them
        assert product_lint_problems(text, promtool) == []  # promtool check metrics on the agent's exposition
    finally:
        serve.delete("ingest-metrics")
        store.client.drop_database(f"gh_metrics_{run}")
