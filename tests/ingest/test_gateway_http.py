"""The ingest gateway over real HTTP through Ray Serve: what needs HTTP (headers in and out, the
bounded body read, routes, OpenAPI, the Serve app's settings and device registry). The validation
logic, every error code and the dead-letter records are tested as plain Python in
``test_gateway_logic.py``, the credential rules in ``test_gateway_auth.py``."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

import httpx
import orjson
import pytest

from app.bus import open_bus
from app.config import Settings
from tests.ingest.conftest import make_devices

pytestmark = pytest.mark.serve

JSON_V2 = "application/vnd.kafka.json.v2+json"
BINARY_V2 = "application/vnd.kafka.binary.v2+json"
TOPIC = "greenhouse.sensors"


@pytest.fixture(scope="module")
def gateway(ray_serve, tmp_path_factory):
    from ray import serve

    from app.serve.args import AppArgs
    from app.serve.ingest import build_app

    root = tmp_path_factory.mktemp("gateway")
    settings = Settings(data_dir=root, ingest={"max_body_bytes": 64 * 1024, "max_records_per_request": 50})
    devices = make_devices(settings.metadata_url)  # the replica reads the same registry
    serve.run(build_app(AppArgs(settings=settings.for_replicas())), name="ingest-test", route_prefix="/")
    with httpx.Client(base_url=ray_serve, timeout=30, headers={"authorization": devices.auth()}) as client:
        yield client, settings
    serve.delete("ingest-test")


def post(client, body, content_type=JSON_V2, topic=TOPIC, **headers):
    """POST as gh-01's device (the client's default Authorization)."""
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

    r = client.post(f"/topics/{TOPIC}", content=chunks(), headers={"content-type": JSON_V2})  # Authorization from the client
    assert r.status_code == 413 and r.json()["error_code"] == 41301


@pytest.mark.parametrize(
    "content_type, headers, topic, status, code", [(JSON_V2, {}, "greenhouse.nope", 404, 40401), ("text/plain", {}, TOPIC, 415, 41501), (JSON_V2, {"accept": "text/html"}, TOPIC, 406, 40601)]
)
def test_request_headers_reach_the_checks(gateway, reading, content_type, headers, topic, status, code):
    client, _ = gateway
    r = post(client, {"records": [{"value": reading(0)}]}, content_type=content_type, topic=topic, **headers)
    assert r.status_code == status and r.json()["error_code"] == code and set(r.json()) == {"error_code", "message"}
    assert r.headers["content-type"].startswith("application/vnd.kafka.v2+json")


def test_per_record_results_and_422_over_http(gateway, reading):
    client, _ = gateway
    r = post(client, {"records": [{"value": reading(0)}, {"value": reading(1, rh_pct=140.0)}]})
    assert r.status_code == 200 and [o["error_code"] for o in r.json()["offsets"]] == [None, 42206]
    r = post(client, {"records": [{"value": reading(0, co2_ppm=-5.0)}]})
    assert r.status_code == 422 and r.json()["error_code"] == 42206 and r.json()["offsets"][0]["error_code"] == 42206
    r = post(client, b"{not json")
    assert r.status_code == 400 and r.json()["error_code"] == 40001


def test_device_credentials_over_http(gateway, reading):
    client, _ = gateway
    body = orjson.dumps({"records": [{"value": reading(0)}]})
    for authorization in ("", "Bearer wrong"):
        r = client.post(f"/topics/{TOPIC}", content=body, headers={"content-type": JSON_V2, "authorization": authorization})
        assert r.status_code == 401 and r.json() == {"error_code": 40101, "message": "missing or invalid credentials"}
        assert r.headers["www-authenticate"].startswith("Bearer")
    r = post(client, {"records": [{"value": reading(1, "gh-02")}]})
    assert r.status_code == 403 and r.json()["error_code"] == 40302
    assert client.get("/topics", headers={"authorization": ""}).json()["error_code"] == 40101
    assert client.get(f"/topics/{TOPIC}", headers={"authorization": "Bearer wrong"}).status_code == 401


def unauthorized_counted(client: httpx.Client, send: Callable[[], None]) -> Counter:
    """The 401 answers ``/stats`` counted, by reason, while ``send()`` ran (the replica is shared
    with other tests: only the difference is theirs)."""
    before = Counter(client.get("/stats").json()["unauthorized_by_reason"])
    send()
    return Counter(client.get("/stats").json()["unauthorized_by_reason"]) - before


def test_refused_credentials_are_counted_in_stats_by_reason(gateway, reading):
    client, _ = gateway
    body = orjson.dumps({"records": [{"value": reading(0)}]})

    def send() -> None:
        for authorization in ("", "Bearer wrong-s3cret", "s3cret-without-scheme"):
            assert client.post(f"/topics/{TOPIC}", content=body, headers={"content-type": JSON_V2, "authorization": authorization}).status_code == 401
        assert client.get("/topics", headers={"authorization": ""}).status_code == 401

    assert unauthorized_counted(client, send) == {"missing_credential": 2, "invalid_token": 1, "malformed_authorization": 1}
    stats = client.get("/stats")
    assert "s3cret" not in stats.text and stats.json()["unauthorized"] >= 4


def test_topic_listing_health_and_openapi(gateway):
    client, settings = gateway
    assert client.get("/topics").json() == [TOPIC]
    info = client.get(f"/topics/{TOPIC}").json()
    assert info["name"] == TOPIC and len(info["partitions"]) == settings.topics.partitions
    assert client.get("/topics/greenhouse.nope").json()["error_code"] == 40401
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and set(health["dependencies"]) == {"bus", "metadata"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert {name: dep["ok"] for name, dep in ready.json()["dependencies"].items()} == {"bus": True, "metadata": True}
    spec = client.get("/openapi.json").json()
    produce = spec["paths"]["/topics/{topic}"]["post"]
    assert set(produce["requestBody"]["content"]) == {JSON_V2, BINARY_V2}
    assert {"200", "400", "401", "403", "404", "406", "413", "415", "422", "503"} == set(produce["responses"])
    assert all(set(r["content"]) == {"application/vnd.kafka.v2+json"} for r in produce["responses"].values())
    refs = {m.group(1) for m in re.finditer(r'"#/components/schemas/([^"]+)"', orjson.dumps(spec).decode())}
    assert refs and refs <= set(spec["components"]["schemas"]), "every referenced schema is defined"
    r = client.put(f"/topics/{TOPIC}")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST" and r.json()["error_code"] == 40501
    assert r.headers["content-type"].startswith("application/vnd.kafka.v2+json")
    stats = client.get("/stats").json()
    assert stats["accepted"] > 0 and stats["rejected"] > 0
