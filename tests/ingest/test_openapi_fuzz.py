"""A property-based run against the gateway's own OpenAPI document (schemathesis).

Requests are generated from ``/openapi.json`` (valid and invalid by the schema, with and without a
device credential) and sent to the FastAPI app in-process on an embedded bus (no Ray, no network).
Every answer must be documented: no 5xx, a documented status, media type and headers, a body
that validates against the response schema, and every 4xx in its API's error shape (v2: a 5-digit
``error_code`` of the status; v3: the status itself) with a reason. A v3 body that holds several
values (a negative body can: garbage split at its spaces) is answered with a line per value, each
checked on its own. REST Proxy v2 and v3 routes alike; about 4,000 requests in well under a minute on an idle machine.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timezone

import orjson
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
V3_PRODUCE = "/v3/clusters/{cluster_id}/topics/{topic}/records"
PRODUCE = (("POST", "/topics/{topic}"), ("POST", V3_PRODUCE))
# examples per (operation, mode); the produce routes' bodies cost the most to generate (~25 ms
# each, the invalid ones more), a GET ~5 ms
EXAMPLES = {("POST", "/topics/{topic}", "positive"): 450, ("POST", "/topics/{topic}", "negative"): 250}
EXAMPLES |= {("POST", V3_PRODUCE, "positive"): 350, ("POST", V3_PRODUCE, "negative"): 200}
EXAMPLES |= {("GET", path, mode): 575 for path in ("/topics", "/topics/{topic}") for mode in ("positive", "negative")}
EXAMPLES |= {("GET", path, mode): 150 for path in ("/v3/clusters", "/v3/clusters/{cluster_id}") for mode in ("positive", "negative")}
EXAMPLES |= {("GET", path, "positive"): 10 for path in ("/stats", "/healthz", "/readyz")}  # no parameters: nothing to negate
GUARDED = ("/topics", "/topics/{topic}", "/v3/clusters", "/v3/clusters/{cluster_id}", V3_PRODUCE)
TOTAL: Counter = Counter()


def error_shape(ctx, response, case) -> None:
    """A 4xx carries a reason and an ``error_code`` of its API's kind: v3's is the HTTP status,
    v2's the status * 100 + n."""
    if not 400 <= response.status_code < 500:
        return
    body = response.json()
    code = body["error_code"] if case.path.startswith("/v3/") else body["error_code"] // 100
    assert code == response.status_code, (case.path, response.status_code, body)
    assert isinstance(body["message"], str) and body["message"], body


V3_RESULT_FIELDS = {"error_code", "cluster_id", "topic_name", "partition_id", "offset", "timestamp", "value"}


def result_lines(ctx, response, case) -> None:
    """Each line of a v3 answer to several records is one record's result: where it went (200),
    or an error in v3's shape with a status the operation documents."""
    documented = set(case.operation.definition.raw["responses"])
    for line in response.content.splitlines():
        result = orjson.loads(line)
        assert set(result) == (V3_RESULT_FIELDS if result["error_code"] == 200 else {"error_code", "message"}), result
        assert str(result["error_code"]) in documented, result


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance, response_schema_conformance, error_shape]
# one line per record, not one JSON document: checked line by line instead of against the schema
LINES_CHECKS = [c for c in CHECKS if c is not response_schema_conformance] + [result_lines]


def checks_for(response) -> list:
    """The checks of an answer: :data:`LINES_CHECKS` for one of several result lines."""
    return LINES_CHECKS if len(response.content.strip().splitlines()) > 1 else CHECKS


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


def readings_in(body) -> list[dict]:
    """The readings of a generated JSON body: v2's ``records[].value``, or v3's one ``value.data``."""
    if not isinstance(body, dict):
        return []
    records = body.get("records") if "records" in body else [body]
    values = [r.get("value") for r in records if isinstance(r, dict)] if isinstance(records, list) else []
    values = [v.get("data") if "records" not in body and isinstance(v, dict) else v for v in values]
    return [v for v in values if isinstance(v, dict)]


def as_gh01_device(case) -> None:
    """Make generated readings gh-01's device's, so that valid ones get through to the bus."""
    for reading in readings_in(case.body):
        reading.update(greenhouse_id="gh-01", device_id=device_of("gh-01"))


@pytest.mark.parametrize("method, path, mode_name", list(EXAMPLES), ids=lambda x: str(x))
def test_every_generated_request_gets_a_documented_answer(api, method, path, mode_name):
    schema, client, auth = api
    mode = GenerationMode(mode_name)
    sent: Counter = Counter()

    @settings(max_examples=EXAMPLES[(method, path, mode_name)], deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)
    @given(case=schema[path][method].as_strategy(generation_mode=mode), credential=st.sampled_from(["device", "device", "none", "wrong"]))
    def run(case, credential: str) -> None:
        headers = {"device": {"authorization": auth}, "none": {}, "wrong": {"authorization": "Bearer ghd_0000000000000000_" + "x" * 43}}[credential]
        if credential == "device" and mode is GenerationMode.POSITIVE:
            as_gh01_device(case)
        response = case.call(session=client, headers=headers)
        case.validate_response(response, checks=checks_for(response), headers=headers)
        sent[response.status_code] += 1

    started = time.perf_counter()
    run()
    elapsed_s = time.perf_counter() - started
    TOTAL.update(sent)
    print(f"{method} {path} {mode}: {sum(sent.values())} requests in {elapsed_s:.1f} s, statuses {dict(sorted(sent.items()))}")
    assert not any(status >= 500 for status in sent)
    if path in GUARDED:
        assert sent[401] > 0  # the run also tried without a valid credential
    if (method, path) in PRODUCE and mode is GenerationMode.POSITIVE:
        assert sent[200] > 0 and sent[403] + sent[422] > 0  # it reached the bus, and the per-record checks


def test_several_values_in_one_v3_body_get_a_line_each_checked_on_its_own(api):
    """What a generated negative body sometimes is (bytes with spaces in them), made certain."""
    schema, client, auth = api
    body = b"\x12\xff R \xfe" + orjson.dumps({"value": {"type": "AVRO", "data": 1}})
    case = schema[V3_PRODUCE]["POST"].Case(path_parameters={"cluster_id": "greenhouse", "topic": "greenhouse.sensors"}, body=body, media_type="application/json")
    headers = {"authorization": auth}
    response = case.call(session=client, headers=headers)
    assert response.status_code == 200 and [orjson.loads(line)["error_code"] for line in response.content.splitlines()] == [400, 400, 400, 422]
    assert checks_for(response) is LINES_CHECKS
    case.validate_response(response, checks=LINES_CHECKS, headers=headers)


V2_ERROR = ("application/vnd.kafka.v2+json", {405: 40501, 404: 40400})
V3_ERROR = ("application/json", {405: 405, 404: 404})


@pytest.mark.parametrize(
    "method, path, allow, shape",
    [
        ("PUT", "/topics/greenhouse.sensors", "GET, POST", V2_ERROR),
        ("DELETE", "/topics", "GET", V2_ERROR),
        ("PATCH", "/healthz", "GET", V2_ERROR),
        ("PUT", "/v3/clusters/greenhouse/topics/greenhouse.sensors/records", "POST", V3_ERROR),
        ("GET", "/v3/clusters/greenhouse/topics/greenhouse.sensors/records", "POST", V3_ERROR),
        ("DELETE", "/v3/clusters", "GET", V3_ERROR),
        ("POST", "/v3/clusters/greenhouse", "GET", V3_ERROR),
    ],
)
def test_unsupported_methods_answer_405_with_allow_in_the_paths_error_shape(api, method, path, allow, shape):
    _, client, auth = api
    media_type, codes = shape
    r = client.request(method, f"http://{asgi.HOST}{path}", headers={"authorization": auth})
    assert r.status_code == 405 and r.headers["allow"] == allow, r.headers
    assert r.headers["content-type"].startswith(media_type) and r.json() == {"error_code": codes[405], "message": "Method Not Allowed"}


@pytest.mark.parametrize("path, shape", [("/nope", V2_ERROR), ("/topics/greenhouse.sensors/x", V2_ERROR), ("/v3/nope", V3_ERROR), ("/v3/clusters/greenhouse/topics", V3_ERROR), ("/v3", V3_ERROR)])
def test_a_path_with_no_route_is_404_in_the_paths_error_shape(api, path, shape):
    _, client, auth = api
    media_type, codes = shape
    r = client.post(f"http://{asgi.HOST}{path}", headers={"authorization": auth})
    assert r.status_code == 404 and r.headers["content-type"].startswith(media_type) and r.json()["error_code"] == codes[404]


def test_the_document_describes_v3_produce(api):
    schema, _, _ = api
    produce = schema.raw_schema["paths"][V3_PRODUCE]["post"]
    assert set(produce["requestBody"]["content"]) == {"application/json"}
    assert {"200", "400", "401", "403", "404", "406", "413", "415", "422", "500", "503"} == set(produce["responses"])
    assert all(set(r["content"]) == {"application/json"} for r in produce["responses"].values())
    assert produce["responses"]["401"]["headers"]["WWW-Authenticate"]
    assert [p["schema"]["enum"] for p in produce["parameters"]] == [["greenhouse"], ["greenhouse.sensors"]]
