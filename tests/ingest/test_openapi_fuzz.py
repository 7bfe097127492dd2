"""A property-based run against the gateway's own OpenAPI document (schemathesis).

Requests are generated from ``/openapi.json`` (valid and invalid by the schema, with and without a
device credential) and sent to the FastAPI app in-process on an embedded bus (no Ray, no network).
Every answer must be documented: no 5xx, a documented status, media type and headers, and a body
that validates against the response schema. About 3,000 requests in well under a minute on an idle
machine.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timezone

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import content_type_conformance, response_headers_conformance, response_schema_conformance, status_code_conformance

from app.bus import open_bus
from app.config import Settings
from app.ingest.api import create_api
from app.ingest.gateway import IngestService
from tests.ingest.conftest import device_of, make_devices

NOW = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance, response_schema_conformance]
# examples per (operation, mode); the produce route's bodies cost the most to generate (~25 ms
# each, the invalid ones more), a GET ~5 ms
EXAMPLES = {("POST", "/topics/{topic}", "positive"): 450, ("POST", "/topics/{topic}", "negative"): 250}
EXAMPLES |= {("GET", path, mode): 575 for path in ("/topics", "/topics/{topic}") for mode in ("positive", "negative")}
EXAMPLES |= {("GET", "/stats", "positive"): 10, ("GET", "/healthz", "positive"): 10}  # no parameters: nothing to negate
GUARDED = ("/topics", "/topics/{topic}")
TOTAL: Counter = Counter()


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """``(schema, ASGI client, gh-01's Authorization header)`` on a fresh embedded bus; at most 4
    records per request (the document says so), to keep generation quick."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("fuzz") / "gh", ingest={"max_records_per_request": 4, "max_body_bytes": 256 * 1024})
    devices = make_devices(settings.metadata_url)
    service = IngestService(settings, open_bus(settings.bus_url), devices.registry, clock=lambda: NOW)
    app = create_api(service, edge_secret=b"fuzz-edge-secret")
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    with asgi.get_client(app) as client:
        yield schema, client, devices.auth("gh-01")
    print(f"\nopenapi fuzz: {sum(TOTAL.values())} requests, statuses {dict(sorted(TOTAL.items()))}")


def as_gh01_device(case) -> None:
    """Make generated readings gh-01's device's, so that valid ones get through to the bus."""
    records = case.body.get("records") if isinstance(case.body, dict) else None
    for record in records if isinstance(records, list) else []:
        value = record.get("value") if isinstance(record, dict) else None
        if isinstance(value, dict):
            value.update(greenhouse_id="gh-01", device_id=device_of("gh-01"))


@pytest.mark.parametrize("method, path, mode_name", list(EXAMPLES), ids=lambda x: str(x))
def test_every_generated_request_gets_a_documented_answer(api, method, path, mode_name):
    schema, client, auth = api
    mode = GenerationMode(mode_name)
    sent: Counter = Counter()

    @settings(max_examples=EXAMPLES[(method, path, mode_name)], deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)
    @given(case=schema[path][method].as_strategy(generation_mode=mode), credential=st.sampled_from(["device", "device", "none", "wrong"]))
    def run(case, credential: str) -> None:
        headers = {"device": {"authorization": auth}, "none": {}, "wrong": {"authorization": "Bearer ghd_0000000000000000_" + "x" * 43}}[credential]
        if credential == "device" and mode is GenerationMode.POSITIVE and case.media_type and "json.v2" in case.media_type:
            as_gh01_device(case)
        response = case.call_and_validate(session=client, headers=headers, checks=CHECKS)
        sent[response.status_code] += 1

    started = time.perf_counter()
    run()
    elapsed_s = time.perf_counter() - started
    TOTAL.update(sent)
    print(f"{method} {path} {mode}: {sum(sent.values())} requests in {elapsed_s:.1f} s, statuses {dict(sorted(sent.items()))}")
    assert not any(status >= 500 for status in sent)
    if path in GUARDED:
        assert sent[401] > 0  # the run also tried without a valid credential
    if (method, path, mode_name) == ("POST", "/topics/{topic}", "positive"):
        assert sent[200] > 0 and sent[403] + sent[422] > 0  # it reached the bus, and the per-record checks


def test_unsupported_methods_answer_405_with_allow(api):
    _, client, auth = api
    for method, path, allow in [("PUT", "/topics/greenhouse.sensors", "GET, POST"), ("DELETE", "/topics", "GET"), ("PATCH", "/healthz", "GET")]:
        r = client.request(method, f"http://{asgi.HOST}{path}", headers={"authorization": auth})
        assert r.status_code == 405 and r.headers["allow"] == allow, (method, path, r.headers)
        assert r.json()["error_code"] == 40501
