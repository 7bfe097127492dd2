"""REST Proxy v3 produce over real HTTP through Ray Serve (the ingress the product ships), on the
embedded bus and on the stack's Kafka: one record, several concatenated, streaming with a chunked
body read line by line, and the request-level errors in v3's shape. The record rules themselves are
tested as plain Python in ``test_v3_logic.py``."""

from __future__ import annotations

import uuid

import httpx
import orjson
import pytest

from app.bus import open_bus
from app.config import Settings
from tests.helpers.engines import engine_url
from tests.ingest.conftest import make_devices
from tests.ingest.test_gateway_http import unauthorized_counted

pytestmark = pytest.mark.serve

JSON = "application/json"


@pytest.fixture(scope="module", params=["embedded", "kafka"])
def gateway(request, ray_serve, tmp_path_factory):
    """``(client as gh-01's device, settings, records URL)`` of a gateway on the embedded bus or Kafka."""
    from ray import serve

    from app.serve.args import AppArgs
    from app.serve.ingest import build_app

    root = tmp_path_factory.mktemp(f"v3-{request.param}")
    run = uuid.uuid4().hex[:8]
    topics = {"sensors": f"v3.sensors.{run}", "deadletter": f"v3.dead.{run}", "control": f"v3.control.{run}", "partitions": 3}
    bus = {"bus_url": engine_url("kafka")} if request.param == "kafka" else {}
    settings = Settings(data_dir=root, topics=topics, ingest={"topics": [topics["sensors"]], "max_body_bytes": 16 * 1024, "max_records_per_request": 20}, **bus)
    devices = make_devices(settings.metadata_url)
    name = f"ingest-v3-{request.param}"
    serve.run(build_app(AppArgs(settings=settings.for_replicas())), name=name, route_prefix=f"/{name}")
    base = f"{ray_serve}/{name}"
    with httpx.Client(base_url=base, timeout=60, headers={"authorization": devices.auth()}) as client:
        yield client, settings, f"/v3/clusters/greenhouse/topics/{topics['sensors']}/records"
    serve.delete(name)


def record(reading: dict, **fields) -> dict:
    return {"value": {"type": "JSON", "data": reading}, **fields}


def on_bus(settings: Settings, results: list[dict]) -> list[dict]:
    """The bus values at the results' partitions and offsets."""
    consumer = open_bus(settings.bus_url).consumer(f"check-{uuid.uuid4().hex[:6]}", [settings.topics.sensors])
    stored = {}
    for _ in range(20):
        stored |= {(m.partition, m.offset): orjson.loads(m.value) for m in consumer.poll(1000, 1)}
        if all((r["partition_id"], r["offset"]) in stored for r in results):
            break
    consumer.close()
    return [stored[(r["partition_id"], r["offset"])] for r in results]


def test_one_record_gets_its_result_and_status(gateway, reading):
    client, settings, url = gateway
    r = client.post(url, content=orjson.dumps(record(reading(0))), headers={"content-type": JSON})
    assert r.status_code == 200 and r.headers["content-type"].startswith(JSON)
    body = r.json()
    assert body["error_code"] == 200 and body["topic_name"] == settings.topics.sensors and body["value"]["type"] == "JSON"
    assert on_bus(settings, [body])[0]["ts"] == reading(0)["ts"]
    r = client.post(url, content=orjson.dumps(record(reading(1, co2_ppm=-5.0))), headers={"content-type": JSON})
    assert r.status_code == 422 and r.json()["error_code"] == 422 and r.json()["message"].startswith("measurements.co2_ppm")


def test_concatenated_records_in_one_body_get_a_line_each(gateway, reading):
    client, settings, url = gateway
    body = orjson.dumps(record(reading(10))) + orjson.dumps(record(reading(11, rh_pct=140.0))) + b"\n" + orjson.dumps(record(reading(12)))
    r = client.post(url, content=body, headers={"content-type": JSON})
    assert r.status_code == 200
    lines = [orjson.loads(line) for line in r.content.splitlines()]
    assert [x["error_code"] for x in lines] == [200, 422, 200]
    assert [v["ts"] for v in on_bus(settings, [lines[0], lines[2]])] == [reading(10)["ts"], reading(12)["ts"]]


def test_streaming_a_chunked_body_answers_every_record_in_order(gateway, reading):
    client, settings, url = gateway
    sent = [record(reading(100 + i)) if i % 10 != 3 else record(reading(100 + i, "gh-02")) for i in range(45)]

    def chunks():
        data = b"".join(orjson.dumps(x) + b"\n" for x in sent) + b'{"value": nope}\n'
        for at in range(0, len(data), 700):  # records split across chunks
            yield data[at : at + 700]

    with client.stream("POST", url, content=chunks(), headers={"content-type": JSON}) as r:
        assert r.status_code == 200 and "content-length" not in r.headers
        lines = [orjson.loads(line) for line in r.iter_lines() if line]
    assert len(lines) == len(sent) + 1
    assert [x["error_code"] for x in lines] == [403 if i % 10 == 3 else 200 for i in range(45)] + [400]
    accepted = [x for x in lines if x["error_code"] == 200]
    assert [v["ts"] for v in on_bus(settings, accepted)] == [x["value"]["data"]["ts"] for i, x in enumerate(sent) if i % 10 != 3]
    assert len({(x["partition_id"], x["offset"]) for x in accepted}) == len(accepted)


def test_a_streamed_record_over_the_limit_gets_413_and_one_never_ending_ends_the_stream(gateway, reading):
    client, _, url = gateway

    def chunks():
        yield orjson.dumps(record(reading(200))) + b"\n"
        yield b'{"value": {"type": "STRING", "data": "' + b"x" * 10_000
        yield b"x" * 10_000 + b'"}}\n'  # complete, but over max_body_bytes: 413, and the stream goes on
        yield orjson.dumps(record(reading(201))) + b"\n"
        yield b'{"value": {"type": "STRING", "data": "' + b"x" * 20_000  # no end in sight: 413, the stream ends

    with client.stream("POST", url, content=chunks(), headers={"content-type": JSON}) as r:
        lines = [orjson.loads(line) for line in r.iter_lines() if line]
    assert [x["error_code"] for x in lines] == [200, 413, 200, 413]


@pytest.mark.parametrize(
    "path, headers, status",
    [
        ("/v3/clusters/other/topics/{topic}/records", {}, 404),
        ("/v3/clusters/greenhouse/topics/greenhouse.nope/records", {}, 404),
        ("/v3/clusters/greenhouse/topics/{topic}/records", {"content-type": "text/plain"}, 415),
        ("/v3/clusters/greenhouse/topics/{topic}/records", {"authorization": "Bearer wrong"}, 401),
        ("/v3/clusters/greenhouse/topics/{topic}/records", {"authorization": ""}, 401),
        ("/v3/clusters/greenhouse/topics/{topic}/records", {"accept": "text/html"}, 406),
        ("/v3/clusters/greenhouse/topics/{topic}/records", {"accept": "application/vnd.kafka.v2+json"}, 406),  # v2's type: not what v3 answers
    ],
)
def test_request_level_errors_have_the_v3_shape(gateway, reading, path, headers, status):
    client, settings, _ = gateway
    r = client.post(path.format(topic=settings.topics.sensors), content=orjson.dumps(record(reading(0))), headers={"content-type": JSON, **headers})
    assert r.status_code == status and r.json()["error_code"] == status and set(r.json()) == {"error_code", "message"}
    assert r.headers["content-type"].startswith(JSON)


def test_routing_errors_under_the_route_prefix_have_the_paths_shape(gateway):
    """405 (with Allow) and a 404 for no route: v3's shape under /v3, v2's elsewhere, also when
    Serve mounts the app under a route prefix."""
    client, _, url = gateway
    r = client.put(url, content=b"{}", headers={"content-type": JSON})
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.headers["content-type"].startswith(JSON)
    assert r.json() == {"error_code": 405, "message": "Method Not Allowed"}
    r = client.post("/v3/clusters/greenhouse/topics")
    assert r.status_code == 404 and r.json()["error_code"] == 404 and r.headers["content-type"].startswith(JSON)
    r = client.delete("/topics")
    assert r.status_code == 405 and r.json()["error_code"] == 40501 and r.headers["content-type"].startswith("application/vnd.kafka.v2+json")


def test_refused_credentials_are_counted_in_stats_by_reason(gateway, reading):
    client, _, url = gateway
    body = orjson.dumps(record(reading(0)))

    def send() -> None:
        for authorization in ("", "Bearer wrong-s3cret", "Basic s3cret"):
            assert client.post(url, content=body, headers={"content-type": JSON, "authorization": authorization}).status_code == 401
        assert client.get("/v3/clusters", headers={"authorization": ""}).status_code == 401

    assert unauthorized_counted(client, send) == {"missing_credential": 2, "invalid_token": 1, "malformed_authorization": 1}
    assert "s3cret" not in client.get("/stats").text


def test_empty_and_oversized_bodies_and_the_cluster_listing(gateway):
    client, _, url = gateway
    assert client.post(url, content=b"  ", headers={"content-type": JSON}).status_code == 400
    r = client.post(url, content=b"[" + b"1," * 9000 + b"1]", headers={"content-type": JSON})
    assert r.status_code == 413 and r.json()["error_code"] == 413
    assert client.get("/v3/clusters").json()["data"] == [{"kind": "KafkaCluster", "cluster_id": "greenhouse"}]
    assert client.get("/v3/clusters/greenhouse").json()["cluster_id"] == "greenhouse"
    assert client.get("/v3/clusters/nope").status_code == 404
