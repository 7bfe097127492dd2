"""The ingest gateway over real HTTP through Ray Serve: what needs HTTP (headers in and out, the
bounded body read, routes, OpenAPI, the Serve app's settings). The validation logic, every error
code and the dead-letter records are tested as plain Python in ``test_gateway_logic.py``."""

from __future__ import annotations

import httpx
import orjson
import pytest

from app.bus import open_bus
from app.config import Settings

pytestmark = pytest.mark.serve

JSON_V2 = "application/vnd.kafka.json.v2+json"
BINARY_V2 = "application/vnd.kafka.binary.v2+json"
TOPIC = "greenhouse.sensors"
TOKEN = "device-secret-1"


@pytest.fixture(scope="module")
def gateway(ray_serve, tmp_path_factory):
    from ray import serve

    from app.serve.args import AppArgs
    from app.serve.ingest import build_app

    root = tmp_path_factory.mktemp("gateway")
    settings = Settings(data_dir=root, ingest={"max_body_bytes": 64 * 1024, "max_records_per_request": 50})
    serve.run(build_app(AppArgs(settings=settings.for_replicas())), name="ingest-test", route_prefix="/")
    secure = Settings(data_dir=root, ingest={"api_tokens": [TOKEN]})
    serve.run(build_app(AppArgs(settings=secure.for_replicas())), name="ingest-secure", route_prefix="/secure")
    with httpx.Client(base_url=ray_serve, timeout=30) as client:
        yield client, settings
    serve.delete("ingest-test")
    serve.delete("ingest-secure")


def post(client, body, content_type=JSON_V2, topic=TOPIC, **headers):
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post(f"/topics/{topic}", content=data, headers={"content-type": content_type, **headers})


def test_valid_json_records_get_offsets_and_land_on_the_bus(gateway, reading):
    client, settings = gateway
    r = post(client, {"records": [{"value": reading(i)} for i in range(4)]}, accept="application/vnd.kafka.v2+json")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/vnd.kafka.v2+json")
    body = r.json()
    assert body["key_schema_id"] is None and body["value_schema_id"] is None
    assert len(body["offsets"]) == 4
    for entry in body["offsets"]:
        assert entry["error_code"] is None and entry["error"] is None
        assert isinstance(entry["partition"], int) and isinstance(entry["offset"], int)
    bus = open_bus(settings.bus_url)
    consumer = bus.consumer("check-valid", [TOPIC])
    stored = {(m.partition, m.offset): orjson.loads(m.value) for m in consumer.poll(1000, 2)}
    for entry, i in zip(body["offsets"], range(4)):
        value = stored[(entry["partition"], entry["offset"])]
        assert value["greenhouse_id"] == reading(i)["greenhouse_id"]
        assert value["measurements"]["air_temp_c"] == 21.5


def test_oversized_body_by_content_length(gateway, reading):
    client, _ = gateway
    big = orjson.dumps({"records": [{"value": reading(0), "pad": "x" * 70_000}]})
    r = post(client, big)
    assert r.status_code == 413 and r.json()["error_code"] == 41301
    assert r.headers["content-type"].startswith("application/vnd.kafka.v2+json")


def test_oversized_chunked_body_without_content_length(gateway):
    client, _ = gateway

    def chunks():
        yield b'{"records": ['
        for _ in range(100):
            yield b'{"value": "' + b"x" * 1000 + b'"},'
        yield b'{"value": 1}]}'

    r = client.post(f"/topics/{TOPIC}", content=chunks(), headers={"content-type": JSON_V2})
    assert r.status_code == 413 and r.json()["error_code"] == 41301


@pytest.mark.parametrize(
    "content_type, headers, topic, status, code", [(JSON_V2, {}, "greenhouse.nope", 404, 40401), ("text/plain", {}, TOPIC, 415, 41501), (JSON_V2, {"accept": "text/html"}, TOPIC, 406, 40601)]
)
def test_request_headers_reach_the_checks(gateway, reading, content_type, headers, topic, status, code):
    client, _ = gateway
    r = post(client, {"records": [{"value": reading(0)}]}, content_type=content_type, topic=topic, **headers)
    assert r.status_code == status and r.json()["error_code"] == code and set(r.json()) == {"error_code", "message"}


def test_per_record_results_and_422_over_http(gateway, reading):
    client, _ = gateway
    r = post(client, {"records": [{"value": reading(0)}, {"value": reading(1, rh_pct=140.0)}]})
    assert r.status_code == 200 and [o["error_code"] for o in r.json()["offsets"]] == [None, 42206]
    r = post(client, {"records": [{"value": reading(0, co2_ppm=-5.0)}]})
    assert r.status_code == 422 and r.json()["error_code"] == 42206 and r.json()["offsets"][0]["error_code"] == 42206
    r = post(client, b"{not json")
    assert r.status_code == 400 and r.json()["error_code"] == 40001


def test_bearer_token_auth(gateway, reading):
    client, _ = gateway
    body = {"records": [{"value": reading(0)}]}
    r = client.post(f"/secure/topics/{TOPIC}", content=orjson.dumps(body), headers={"content-type": JSON_V2})
    assert r.status_code == 401 and r.json()["error_code"] == 40101
    r = client.post(f"/secure/topics/{TOPIC}", content=orjson.dumps(body), headers={"content-type": JSON_V2, "authorization": "Bearer wrong"})
    assert r.status_code == 401
    r = client.post(f"/secure/topics/{TOPIC}", content=orjson.dumps(body), headers={"content-type": JSON_V2, "authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json()["offsets"][0]["error_code"] is None
    # the read routes are guarded too
    assert client.get("/secure/topics").json()["error_code"] == 40101
    assert client.get(f"/secure/topics/{TOPIC}").status_code == 401
    assert client.get("/secure/topics", headers={"authorization": f"Bearer {TOKEN}"}).json() == [TOPIC]


def test_topic_listing_health_and_openapi(gateway):
    client, settings = gateway
    assert client.get("/topics").json() == [TOPIC]
    info = client.get(f"/topics/{TOPIC}").json()
    assert info["name"] == TOPIC and len(info["partitions"]) == settings.topics.partitions
    assert client.get("/topics/greenhouse.nope").json()["error_code"] == 40401
    assert client.get("/healthz").json() == {"status": "ok"}
    spec = client.get("/openapi.json").json()
    produce = spec["paths"]["/topics/{topic}"]["post"]
    assert set(produce["requestBody"]["content"]) == {JSON_V2, BINARY_V2}
    assert {"200", "400", "404", "413", "415", "422"} <= set(produce["responses"])
    stats = client.get("/stats").json()
    assert stats["accepted"] > 0 and stats["rejected"] > 0
