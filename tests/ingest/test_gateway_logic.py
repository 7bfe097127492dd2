"""The ingest gateway's logic as plain Python: no Ray, no HTTP, an embedded bus in tmp_path.

Every REST Proxy v2 answer the README's table lists (status, error code, message shape), the
per-record results and the dead-letter records. Requests carry real device tokens (the device
registry on an embedded store); the credential rules themselves are in ``test_gateway_auth.py``,
what needs HTTP in ``test_gateway_http.py``.
"""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from app.bus import BusError, OutgoingRecord, ProduceResult, open_bus, partition_for_key
from app.config import Settings
from app.contracts.deadletter import DeadLetter
from app.ingest.gateway import BINARY_V2, JSON_V2, IngestResponse, IngestService, Rejection, convert_record, parse_produce_body
from app.security.credentials import DeviceIdentity
from tests.ingest.conftest import make_devices

TOPIC = "greenhouse.sensors"
NOW = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
GH01 = DeviceIdentity("gh-01-climate", "gh-01")


def make_service(tmp_path, bus=None, *, on_result=None, **ingest) -> IngestService:
    """A service on an embedded bus whose registry knows gh-01-climate and gh-02-climate;
    ``service.auth(gh)`` is the Authorization header of the greenhouse's device."""
    settings = Settings(data_dir=tmp_path / "gh", ingest={"max_body_bytes": 64 * 1024, "max_records_per_request": 50, **ingest})
    devices = make_devices(settings.metadata_url)
    service = IngestService(settings, bus or open_bus(settings.bus_url), devices.registry, clock=lambda: NOW, on_result=on_result)
    service.auth = devices.auth  # type: ignore[attr-defined]
    return service


@pytest.fixture
def service(tmp_path) -> IngestService:
    return make_service(tmp_path)


def post(service: IngestService, body, content_type: str | None = JSON_V2, topic: str = TOPIC, greenhouse_id: str = "gh-01", **headers) -> IngestResponse:
    """POST as the greenhouse's device (``authorization=`` overrides)."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    headers.setdefault("authorization", service.auth(greenhouse_id))  # type: ignore[attr-defined]
    return service.produce(topic, data, content_type=content_type, **headers)


def records_of(*values) -> dict:
    return {"records": [{"value": v} for v in values]}


def dead_letters(service: IngestService) -> list[DeadLetter]:
    consumer = service.bus.consumer("check-dead", [service.settings.topics.deadletter])
    return [DeadLetter.from_json(m.value) for m in consumer.poll(1000, 0.5)]


def test_valid_records_get_offsets_and_land_on_the_bus_keyed_by_greenhouse(service, reading):
    r = post(service, records_of(*(reading(i) for i in range(4))), accept="application/vnd.kafka.v2+json")
    assert r.status == 200
    assert r.body["key_schema_id"] is None and r.body["value_schema_id"] is None and "error_code" not in r.body
    assert len(r.body["offsets"]) == 4
    stored = {(m.partition, m.offset): m for m in service.bus.consumer("check", [TOPIC]).poll(1000, 0.5)}
    for i, entry in enumerate(r.body["offsets"]):
        assert entry["error_code"] is None and entry["error"] is None
        msg = stored[(entry["partition"], entry["offset"])]
        assert msg.key == reading(i)["greenhouse_id"].encode()
        value = orjson.loads(msg.value)
        assert value["greenhouse_id"] == reading(i)["greenhouse_id"] and value["measurements"]["air_temp_c"] == 21.5
    assert dead_letters(service) == []
    assert (service.stats.requests, service.stats.accepted, service.stats.rejected) == (1, 4, 0)


def test_binary_embedded_format(service, reading):
    good = base64.b64encode(orjson.dumps(reading(7))).decode()
    not_json = base64.b64encode(b"not json").decode()
    r = post(service, records_of(good, "%%%", not_json, 12), content_type=BINARY_V2)
    assert r.status == 200
    codes = [o["error_code"] for o in r.body["offsets"]]
    assert codes == [None, 42203, 42203, 42203]
    assert r.body["offsets"][1]["partition"] is None and r.body["offsets"][1]["error"] == "value: not base64-encoded JSON"
    assert r.body["offsets"][3]["error"] == "value: binary records need a base64 string"


def test_mixed_batch_accepts_valid_rejects_invalid_and_dead_letters_them(tmp_path, reading):
    seen = []
    service = make_service(tmp_path, on_result=lambda a, r: seen.append((a, r)))
    records = [
        {"value": reading(0)},
        {"value": reading(1, rh_pct=140.0)},
        {"value": {**reading(2), "ts": "yesterday"}},
        {"value": reading(3)},
        {"value": {"greenhouse_id": "gh-01"}},
        "not an object",
        {"value": reading(4, air_temp_c=1e6)},
        {"value": None},
    ]
    r = post(service, {"records": records})
    assert r.status == 200
    offsets = r.body["offsets"]
    assert [o["error_code"] for o in offsets] == [None, 42206, 42206, None, 42206, 42206, 42206, 42206]
    assert "rh_pct" in offsets[1]["error"] and "100" in offsets[1]["error"]
    assert offsets[2]["error"].startswith("ts")
    assert "device_id" in offsets[4]["error"]
    assert offsets[5]["error"] == "record: must be an object with a 'value'"
    assert offsets[7]["error"] == "value: a record needs a non-null 'value'"
    assert all(o["partition"] is None and o["offset"] is None for o in offsets if o["error_code"])

    dead = dead_letters(service)  # unkeyed: spread over partitions, so in no particular order
    assert sorted((d.reason, orjson.dumps(d.payload)) for d in dead) == sorted((offsets[i]["error"], orjson.dumps(records[i])) for i in (1, 2, 4, 5, 6, 7))
    assert {(d.source, d.source_topic, d.error_code, d.received_at, d.source_partition) for d in dead} == {("gateway", TOPIC, 42206, NOW, None)}

    reasons = ["measurements.rh_pct", "ts", "device_id", "record", "measurements.air_temp_c", "value"]
    assert seen == [(2, reasons)]
    assert service.stats.rejected == 6 and service.stats.rejected_by_reason["ts"] == 1


def test_no_record_accepted_is_422_with_per_record_results(service, reading):
    r = post(service, records_of(reading(0, co2_ppm=-5.0), reading(1, rh_pct=float("nan"))))
    assert r.status == 422
    assert r.body["error_code"] == 42206 and r.body["message"] == "no record was accepted: 2 rejected (see offsets[].error)"
    assert [o["error_code"] for o in r.body["offsets"]] == [42206, 42206]
    assert "co2_ppm" in r.body["offsets"][0]["error"]
    assert len(dead_letters(service)) == 2


def test_the_time_window_uses_the_clock_and_the_configured_skew(tmp_path, reading):
    service = make_service(tmp_path, max_future_skew_s=3600.0)

    def at(ts: datetime) -> dict:
        return {**reading(0), "ts": ts.isoformat()}

    r = post(service, records_of(at(NOW + timedelta(seconds=3599)), at(NOW + timedelta(seconds=3601)), at(datetime(1999, 12, 31, tzinfo=timezone.utc)), {**reading(0), "ts": "2026-06-01T12:00:00"}))
    offsets = r.body["offsets"]
    assert offsets[0]["error_code"] is None
    assert "more than 3600 s in the future" in offsets[1]["error"]
    assert "before 2000-01-01" in offsets[2]["error"]
    assert "UTC offset" in offsets[3]["error"]


@pytest.mark.parametrize(
    "body, status, code, message",
    [
        (b"{not json", 400, 40001, "request body is not valid JSON"),
        (b"", 400, 40001, "request body is not valid JSON"),
        (b"[1, 2]", 422, 42206, "request body must be an object with a 'records' list"),
        (b'{"records": {"value": 1}}', 422, 42206, "request body must be an object with a 'records' list"),
        (b'{"records": []}', 422, 42206, "records may not be empty"),
    ],
)
def test_malformed_bodies(service, body, status, code, message):
    r = post(service, body)
    assert r.status == status
    assert set(r.body) == {"error_code", "message"}
    assert r.body["error_code"] == code and r.body["message"].startswith(message)


def test_parse_produce_body_returns_the_records_or_the_error():
    assert parse_produce_body(b'{"records": [{"value": 1}, 2]}', 2) == [{"value": 1}, 2]
    too_many = parse_produce_body(b'{"records": [1, 2, 3]}', 2)
    assert too_many == IngestResponse(413, {"error_code": 41302, "message": "3 records exceed the limit of 2 per request"})


def test_oversized_body_and_too_many_records(service, reading):
    big = orjson.dumps({"records": [{"value": reading(0), "pad": "x" * 70_000}]})
    r = post(service, big)
    assert r.status == 413 and r.body == {"error_code": 41301, "message": f"request body of {len(big)} bytes exceeds {64 * 1024} bytes"}
    r = post(service, records_of(*(reading(i) for i in range(51))))
    assert r.status == 413 and r.body["error_code"] == 41302
    assert service.bus.end_offsets(TOPIC) == {p: 0 for p in range(service.settings.topics.partitions)}


def test_unknown_topic(service, reading):
    r = post(service, records_of(reading(0)), topic="greenhouse.nope")
    assert r.status == 404 and r.body == {"error_code": 40401, "message": "Topic greenhouse.nope not found."}
    # the control topic exists on the bus but devices may not produce to it
    r = post(service, records_of(reading(0)), topic=service.settings.topics.control)
    assert r.status == 404 and r.body["error_code"] == 40401


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "application/vnd.kafka.avro.v2+json", "", None])
def test_wrong_content_type(service, reading, content_type):
    r = post(service, records_of(reading(0)), content_type=content_type)
    assert r.status == 415
    assert r.body["error_code"] == 41501 and JSON_V2 in r.body["message"] and BINARY_V2 in r.body["message"]


def test_content_type_parameters_and_case_are_ignored(service, reading):
    r = post(service, records_of(reading(0)), content_type="Application/VND.kafka.json.v2+json; charset=utf-8")
    assert r.status == 200


@pytest.mark.parametrize(
    "accept, status", [("text/html", 406), ("text/html, application/xml", 406), ("application/json", 200), ("*/*", 200), ("text/html, application/vnd.kafka.v2+json; q=0.9", 200), (None, 200)]
)
def test_accept_header(service, reading, accept, status):
    r = post(service, records_of(reading(0)), accept=accept)
    assert r.status == status
    if status == 406:
        assert r.body["error_code"] == 40601 and accept in r.body["message"]


def test_request_checks_run_in_order_auth_accept_topic_content_type_size(service):
    huge = b"x" * (64 * 1024 + 1)
    assert post(service, huge, content_type="text/plain", topic="nope", accept="text/html", authorization=None).body["error_code"] == 40101
    assert post(service, huge, content_type="text/plain", topic="nope", accept="text/html").body["error_code"] == 40601
    assert post(service, huge, content_type="text/plain", topic="nope").body["error_code"] == 40401
    assert post(service, huge, content_type="text/plain").body["error_code"] == 41501
    assert post(service, huge).body["error_code"] == 41301


def test_explicit_partitions_only_the_greenhouses_own(service, reading):
    own = partition_for_key(b"gh-01", service.settings.topics.partitions)
    other = (own + 1) % service.settings.topics.partitions
    records = [
        {"value": reading(0), "partition": 99},
        {"value": reading(1), "partition": own},
        {"value": reading(2), "partition": other},
        {"value": reading(3), "partition": -1},
        {"value": reading(4), "partition": True},
        {"value": reading(5), "partition": "0"},
    ]
    r = post(service, {"records": records})
    assert r.status == 200
    far, mine, foreign, *bad = r.body["offsets"]
    assert (far["error_code"], far["error"]) == (40304, f"partition: greenhouse 'gh-01' writes to partition {own} only (got 99)")
    assert mine["partition"] == own and mine["error_code"] is None
    assert foreign["error_code"] == 40304 and foreign["partition"] is None
    assert [(b["error_code"], b["error"]) for b in bad] == [(42206, "partition: must be a non-negative integer")] * 3
    assert service.bus.end_offsets(TOPIC)[other] == 0


def test_topic_info(service):
    r = service.topic_info(TOPIC)
    assert r.status == 200 and r.body["name"] == TOPIC
    assert [p["partition"] for p in r.body["partitions"]] == list(range(service.settings.topics.partitions))
    assert service.topic_info("greenhouse.nope").body == {"error_code": 40401, "message": "Topic greenhouse.nope not found."}


class FlakyBus:
    """The embedded bus, except that writes to the sensor topic fail as told."""

    def __init__(self, inner, *, refuse: bool = False, results: list[ProduceResult] | None = None) -> None:
        self.inner, self.refuse, self.results = inner, refuse, results

    def produce(self, topic: str, records: list[OutgoingRecord]) -> list[ProduceResult]:
        if topic == TOPIC and self.refuse:
            raise BusError("broker down", retriable=True)
        if topic == TOPIC and self.results is not None:
            return self.results[: len(records)]
        return self.inner.produce(topic, records)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def test_bus_refusing_the_write_is_503_and_rejected_records_are_still_dead_lettered(tmp_path, reading):
    settings = Settings(data_dir=tmp_path / "gh")
    service = make_service(tmp_path, FlakyBus(open_bus(settings.bus_url), refuse=True))
    r = post(service, records_of(reading(0), reading(1, rh_pct=-1.0)))
    assert r.status == 503 and r.body["error_code"] == 50301 and "nothing was written" in r.body["message"]
    assert [d.reason.split(":")[0] for d in dead_letters(service)] == ["measurements.rh_pct"]


def test_per_record_bus_failures_map_to_broker_codes(tmp_path, reading):
    settings = Settings(data_dir=tmp_path / "gh")
    results = [ProduceResult(None, None, "timed out", retriable=True), ProduceResult(None, None, "unknown partition 7"), ProduceResult(None, None, "message too large"), ProduceResult(0, 5)]
    service = make_service(tmp_path, FlakyBus(open_bus(settings.bus_url), results=results))
    r = post(service, records_of(*(reading(i) for i in range(4))))
    assert r.status == 200
    assert [(o["error_code"], o["error"]) for o in r.body["offsets"]] == [(50003, "timed out"), (40402, "unknown partition 7"), (50002, "message too large"), (None, None)]
    assert (service.stats.accepted, service.stats.rejected) == (1, 3)
    assert dead_letters(service) == []  # the device was told to retry; nothing is known wrong with them


def test_convert_record_normalises_the_reading_it_writes(reading):
    own = partition_for_key(b"gh-01", 4)
    out = convert_record({"value": {**reading(0), "ts": 1780315200000, "firmware": "2.1"}, "partition": own}, binary=False, now=NOW, max_future_skew_s=86_400.0, identity=GH01, partitions=4)
    assert isinstance(out, OutgoingRecord) and out.partition == own and out.key == b"gh-01"
    value = orjson.loads(out.value)
    assert value["ts"] == "2026-06-01T12:00:00Z" and value["firmware"] == "2.1" and value["schema_version"] == 1
    rejected = convert_record({"value": {**reading(0), "ts": 1780315200000}}, binary=False, now=NOW - timedelta(days=2), max_future_skew_s=86_400.0, identity=GH01, partitions=4)
    assert isinstance(rejected, Rejection) and rejected.code == 42206 and "in the future" in rejected.reason
