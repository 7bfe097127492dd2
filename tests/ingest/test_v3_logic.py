"""REST Proxy v3 produce as plain Python (no Ray, no HTTP, an embedded bus in tmp_path): the record
envelope, the result lines, the concatenated-JSON reader, and that v3 goes through the v2 path
(validation, credentials, dead letters, counters). What needs HTTP is in ``test_v3_http.py``."""

from __future__ import annotations

import base64
import random

import orjson
import pytest

from app.bus import BusError
from app.ingest.gateway import RecordValue, Rejection
from app.ingest.json_stream import JsonStream
from app.ingest.v3 import produce_v3, v3_record_value, v3_status
from tests.ingest.test_gateway_logic import GH01, TOPIC, dead_letters, make_service

WRONG_TOKEN = "ghd_0123456789abcdef_" + "s3cret" * 7


def values_of(*records) -> list:
    return JsonStream(1 << 20).feed(b"".join(orjson.dumps(r) + b"\n" for r in records), final=True)


def v3(reading: dict, **fields) -> dict:
    return {"value": {"type": "JSON", "data": reading}, **fields}


def test_valid_records_get_200_results_with_offsets_and_land_on_the_bus(tmp_path, reading):
    service = make_service(tmp_path)
    results = produce_v3(service, GH01, TOPIC, values_of(v3(reading(0)), v3(reading(1), key={"type": "JSON", "data": "ignored"})))
    assert [r["error_code"] for r in results] == [200, 200]
    first = results[0]
    assert first["cluster_id"] == "greenhouse" and first["topic_name"] == TOPIC and first["timestamp"] == "2026-06-01T12:00:00.000Z"
    assert first["value"]["type"] == "JSON" and first["value"]["size"] > 0
    stored = {(m.partition, m.offset): orjson.loads(m.value) for m in service.bus.consumer("check", [TOPIC]).poll(100, 1)}
    assert stored[(first["partition_id"], first["offset"])]["ts"] == reading(0)["ts"]
    assert service.stats.accepted == 2


def test_a_bad_record_gets_its_own_error_line_and_the_others_are_written(tmp_path, reading):
    service = make_service(tmp_path)
    values = values_of(v3(reading(0)), v3(reading(1, rh_pct=140.0)), v3(reading(2, "gh-02")), {"value": {"type": "AVRO", "data": {}}}, v3(reading(3)))
    values += JsonStream(1024).feed(b"{not json}", final=True)
    results = produce_v3(service, GH01, TOPIC, values)
    assert [r["error_code"] for r in results] == [200, 422, 403, 422, 200, 400]
    assert results[1]["message"].startswith("measurements.rh_pct") and set(results[1]) == {"error_code", "message"}
    assert "greenhouse_id" in results[2]["message"] and "not valid JSON" in results[5]["message"]
    assert sorted(d.error_code for d in dead_letters(service)) == [40001, 40302, 42206, 42206]
    assert service.stats.accepted == 2 and service.stats.rejected == 4


def test_binary_and_string_values_and_partition_rules(reading):
    text = orjson.dumps(reading(0)).decode()
    assert v3_record_value({"value": {"type": "BINARY", "data": base64.b64encode(text.encode()).decode()}}) == RecordValue(reading(0))
    assert v3_record_value({"value": {"type": "STRING", "data": text}, "partition_id": 2}) == RecordValue(reading(0), 2)
    assert v3_record_value({"value": {"data": reading(0)}}) == RecordValue(reading(0))  # type defaults to JSON
    for bad, code in [
        ({"value": {"type": "BINARY", "data": "%%"}}, 42203),
        ({"value": {"type": "STRING", "data": "{"}}, 42203),
        ({"value": {"type": "JSON"}}, 42206),
        ({"value": reading(0)["measurements"] | {"type": "JSON"}}, 42206),
        (v3(reading(0), partition_id=-1), 42206),
        (v3(reading(0), headers=[{"name": 1}]), 42206),
        ([1, 2], 42206),
    ]:
        rejection = v3_record_value(bad)
        assert isinstance(rejection, Rejection) and rejection.code == code, bad
    assert v3_record_value(v3(reading(0), headers=[{"name": "fw", "value": None}])) == RecordValue(reading(0))
    assert [v3_status(c) for c in (42206, 40302, 40001, 50301, 404)] == [422, 403, 400, 503, 404]


def test_a_bus_that_refuses_the_write_fails_every_record_of_the_batch_with_503(tmp_path, reading):
    service = make_service(tmp_path)

    def refuse(topic, records):
        raise BusError("down", retriable=True)

    service.bus.produce = refuse  # type: ignore[method-assign]
    results = produce_v3(service, GH01, TOPIC, values_of(v3(reading(0)), v3(reading(1))))
    assert [r["error_code"] for r in results] == [503, 503] and "retry" in results[0]["message"]


def test_refused_credentials_are_counted_by_reason_and_no_token_is_kept(tmp_path):
    """v2 and v3 routes both authenticate through the service: every refusal is counted there."""
    service = make_service(tmp_path)
    refused = [(None, None), ("", None), (f"Bearer {WRONG_TOKEN}", None), (f"Bearer {WRONG_TOKEN}", "gh-01-climate"), (WRONG_TOKEN, None), ("Basic dXNlcjpwdw==", None), (None, "no-such-device")]
    for authorization, certified_device in refused:
        assert service.authenticate(authorization, certified_device) is None
    assert service.authenticate(service.auth("gh-01"), None) == GH01 and service.authenticate(None, "gh-01-climate") == GH01  # type: ignore[attr-defined]
    stats = service.stats.snapshot()
    assert stats["unauthorized_by_reason"] == {"missing_credential": 2, "invalid_token": 2, "malformed_authorization": 2, "invalid_certificate": 1}
    assert stats["unauthorized"] == 7 and b"s3cret" not in orjson.dumps(stats)


def test_json_stream_finds_every_value_however_the_body_is_chunked():
    body = b'{"a": 1}\n{"b": "x}\\"{"}{"c":[1,2,{"d":3}]} 5 "s" true\n{\n "e": 1\n}\n}{bad}\n12'
    expected = [({"a": 1}, None), ({"b": 'x}"{'}, None), ({"c": [1, 2, {"d": 3}]}, None), (5, None), ("s", None), (True, None), ({"e": 1}, None), ("}", "bad"), ("{bad}", "bad"), (12, None)]
    rng = random.Random(7)
    for _ in range(100):
        stream, found, at = JsonStream(1000), [], 0
        while at < len(body):
            size = rng.randint(1, 8)
            found += stream.feed(body[at : at + size])
            at += size
        found += stream.feed(b"", final=True)
        assert [(v.value, v.error and "bad") for v in found] == expected


@pytest.mark.parametrize("chunk", [b'{"a": "' + b"x" * 100, b"[" * 80, b"1" * 80])
def test_json_stream_breaks_on_a_value_over_the_limit(chunk):
    stream = JsonStream(50)
    (value,) = stream.feed(chunk)
    assert value.too_large and stream.broken and stream.feed(b'"}\n{"b": 1}\n') == []


def test_a_streamed_body_is_read_ahead_of_its_results_up_to_a_bound_only():
    """Past the bound the reader waits until results go out (the client's TCP window then holds
    its sending); taking the records makes room again, and the end is seen after them."""
    import asyncio

    from app.ingest.api_v3 import _ReadAhead

    async def scenario() -> None:
        ahead = _ReadAhead(limit_bytes=100)
        await ahead.put([1], 60)
        await ahead.put([2], 60)  # now over the bound: the next put waits
        blocked = asyncio.ensure_future(ahead.put([3], 10))
        await asyncio.sleep(0.05)
        assert not blocked.done()
        assert await ahead.take_all() == ([1, 2], False)
        await asyncio.wait_for(blocked, 1)
        ahead.end()
        assert await ahead.take_all() == ([3], True)

    asyncio.run(scenario())
