"""The ingest gateway over real HTTP through Ray Serve: every REST Proxy v2 response shape."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

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


def reading(i: int = 0, **measurements) -> dict:
    ts = datetime(2026, 6, 1, tzinfo=timezone.utc) + timedelta(minutes=i)
    return {
        "greenhouse_id": f"gh-0{1 + i % 2}",
        "device_id": "climate-1",
        "ts": ts.isoformat().replace("+00:00", "Z"),
        "measurements": measurements or {"air_temp_c": 21.5, "rh_pct": 70.0},
    }


@pytest.fixture(scope="module")
def gateway(ray_serve, tmp_path_factory):
    from ray import serve

    from app.serve.ingest import IngestAppArgs, build_app

    root = tmp_path_factory.mktemp("gateway")
    settings = Settings(data_dir=root, ingest={"max_body_bytes": 64 * 1024, "max_records_per_request": 50})
    serve.run(build_app(IngestAppArgs(settings=settings.for_replicas())), name="ingest-test", route_prefix="/")
    secure = Settings(data_dir=root, ingest={"api_tokens": [TOKEN]})
    serve.run(build_app(IngestAppArgs(settings=secure.for_replicas())), name="ingest-secure", route_prefix="/secure")
    with httpx.Client(base_url=ray_serve, timeout=30) as client:
        yield client, settings
    serve.delete("ingest-test")
    serve.delete("ingest-secure")


def post(client, body, content_type=JSON_V2, topic=TOPIC, **headers):
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post(f"/topics/{topic}", content=data, headers={"content-type": content_type, **headers})


def test_valid_json_records_get_offsets_and_land_on_the_bus(gateway):
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


def test_binary_embedded_format(gateway):
    client, _ = gateway
    value = base64.b64encode(orjson.dumps(reading(7))).decode()
    bad = base64.b64encode(b"not json").decode()
    r = post(client, {"records": [{"value": value}, {"value": "%%%"}, {"value": bad}]}, content_type=BINARY_V2)
    assert r.status_code == 200
    offsets = r.json()["offsets"]
    assert offsets[0]["error_code"] is None
    assert offsets[1]["error_code"] == 42203 and offsets[1]["partition"] is None
    assert offsets[2]["error_code"] == 42203


def test_mixed_batch_accepts_valid_and_rejects_invalid_with_reasons(gateway):
    client, settings = gateway
    records = [
        {"value": reading(0)},
        {"value": reading(1, rh_pct=140.0)},
        {"value": {**reading(2), "ts": "yesterday"}},
        {"value": reading(3)},
        {"value": {"greenhouse_id": "gh-01"}},
        "not an object",
        {"value": reading(4, air_temp_c=float(1e6))},
    ]
    r = post(client, {"records": records})
    assert r.status_code == 200
    offsets = r.json()["offsets"]
    ok = [o["error_code"] is None for o in offsets]
    assert ok == [True, False, False, True, False, False, False]
    assert "rh_pct" in offsets[1]["error"] and "100" in offsets[1]["error"]
    assert offsets[2]["error"].startswith("ts")
    assert "device_id" in offsets[4]["error"]
    assert all(o["error_code"] == 42206 for o, good in zip(offsets, ok) if not good)
    # rejected records are kept, with their reason, on the dead-letter topic
    consumer = open_bus(settings.bus_url).consumer("check-dead", [settings.topics.deadletter])
    dead = [orjson.loads(m.value) for m in consumer.poll(1000, 2)]
    reasons = [d["reason"] for d in dead]
    assert any("rh_pct" in reason for reason in reasons)
    assert all(d["source_topic"] == TOPIC and d["error_code"] in (42203, 42206) for d in dead)


def test_all_records_invalid_is_422_with_per_record_results(gateway):
    client, _ = gateway
    r = post(client, {"records": [{"value": reading(0, co2_ppm=-5.0)}]})
    assert r.status_code == 422
    body = r.json()
    assert body["error_code"] == 42206 and "no record was accepted" in body["message"]
    assert body["offsets"][0]["error_code"] == 42206 and "co2_ppm" in body["offsets"][0]["error"]


def test_future_timestamps_are_rejected(gateway):
    client, _ = gateway
    future = (datetime.now(timezone.utc) + timedelta(days=3)).isoformat()
    r = post(client, {"records": [{"value": {**reading(0), "ts": future}}]})
    assert r.status_code == 422
    assert "future" in r.json()["offsets"][0]["error"]


@pytest.mark.parametrize(
    "body, status, code, needle",
    [
        (b"{not json", 400, 40001, "not valid JSON"),
        (b"", 400, 40001, "not valid JSON"),
        (b"[1, 2]", 422, 42206, "'records' list"),
        (b'{"records": []}', 422, 42206, "records may not be empty"),
        (b'{"records": {"value": 1}}', 422, 42206, "'records' list"),
    ],
)
def test_malformed_bodies(gateway, body, status, code, needle):
    client, _ = gateway
    r = post(client, body)
    assert r.status_code == status
    assert r.json()["error_code"] == code and needle in r.json()["message"]


def test_oversized_body_and_too_many_records(gateway):
    client, _ = gateway
    big = orjson.dumps({"records": [{"value": reading(0), "pad": "x" * 70_000}]})
    r = post(client, big)
    assert r.status_code == 413 and r.json()["error_code"] == 41301
    r = post(client, {"records": [{"value": reading(i)} for i in range(51)]})
    assert r.status_code == 413 and r.json()["error_code"] == 41302


def test_oversized_chunked_body_without_content_length(gateway):
    client, _ = gateway

    def chunks():
        yield b'{"records": ['
        for _ in range(100):
            yield b'{"value": "' + b"x" * 1000 + b'"},'
        yield b'{"value": 1}]}'

    r = client.post(f"/topics/{TOPIC}", content=chunks(), headers={"content-type": JSON_V2})
    assert r.status_code == 413 and r.json()["error_code"] == 41301


def test_unknown_topic(gateway):
    client, _ = gateway
    r = post(client, {"records": [{"value": reading(0)}]}, topic="greenhouse.nope")
    assert r.status_code == 404
    assert r.json() == {"error_code": 40401, "message": "Topic greenhouse.nope not found."}
    # the control topic exists on the bus but devices may not produce to it
    r = post(client, {"records": [{"value": reading(0)}]}, topic="greenhouse.control")
    assert r.status_code == 404 and r.json()["error_code"] == 40401


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "application/vnd.kafka.avro.v2+json", ""])
def test_wrong_content_type(gateway, content_type):
    client, _ = gateway
    r = post(client, {"records": [{"value": reading(0)}]}, content_type=content_type)
    assert r.status_code == 415
    assert r.json()["error_code"] == 41501 and "vnd.kafka.json.v2+json" in r.json()["message"]


def test_unacceptable_accept_header(gateway):
    client, _ = gateway
    r = post(client, {"records": [{"value": reading(0)}]}, accept="text/html")
    assert r.status_code == 406 and r.json()["error_code"] == 40601


def test_explicit_partition_out_of_range_fails_that_record_only(gateway):
    client, _ = gateway
    r = post(client, {"records": [{"value": reading(0), "partition": 99}, {"value": reading(1), "partition": 1}]})
    assert r.status_code == 200
    first, second = r.json()["offsets"]
    assert first["error_code"] == 40402 and first["partition"] is None
    assert second["partition"] == 1 and second["error_code"] is None


def test_bearer_token_auth(gateway):
    client, _ = gateway
    body = {"records": [{"value": reading(0)}]}
    r = client.post(f"/secure/topics/{TOPIC}", content=orjson.dumps(body), headers={"content-type": JSON_V2})
    assert r.status_code == 401 and r.json()["error_code"] == 40101
    r = client.post(f"/secure/topics/{TOPIC}", content=orjson.dumps(body), headers={"content-type": JSON_V2, "authorization": "Bearer wrong"})
    assert r.status_code == 401
    r = client.post(f"/secure/topics/{TOPIC}", content=orjson.dumps(body), headers={"content-type": JSON_V2, "authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json()["offsets"][0]["error_code"] is None


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
