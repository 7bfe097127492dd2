"""The bad-input corpus: what devices (or attackers) send that is not a clean reading.

Each bad record is posted between two valid ones: it gets a documented per-record 4xx code (or is
safely stored, when the contract keeps it), the valid ones are accepted, every rejection leaves a
decodable dead letter, and afterwards the lake holds every accepted reading exactly once. Bodies
that are not a produce request at all get a documented request-level 4xx and write nothing.
Nothing answers 5xx or raises.
"""

from __future__ import annotations

import base64
from datetime import datetime, timezone

import orjson
import pytest

from app.bus import open_bus
from app.config import Settings
from app.contracts.deadletter import CUT_MARK, DeadLetter
from app.ingest.gateway import BINARY_V2, JSON_V2, IngestService
from app.ingest.sink import LakeSink
from app.lake import Lake
from app.metadata import open_metadata
from tests.ingest.conftest import make_devices

TOPIC = "greenhouse.sensors"
NOW = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
GOOD = {"greenhouse_id": "gh-01", "device_id": "gh-01-climate", "ts": "2026-06-01T09:00:00Z", "measurements": {"air_temp_c": 21.0}}
STORED = None  # expected code of a record the contract keeps


def deep_json(levels: int, leaf: bytes = b"1") -> bytes:
    return b'{"a":' * levels + leaf + b"}" * levels


def good(i: int) -> dict:
    """The ``i``-th valid neighbour: a minute apart from 10:00, never at GOOD's time."""
    return {**GOOD, "ts": f"2026-06-01T{10 + i // 60:02d}:{i % 60:02d}:00Z"}


def raw_record(value_json: bytes) -> bytes:
    """A record whose value is given as raw JSON text (for what orjson would not encode)."""
    return b'{"value":' + value_json + b"}"


def field_json(name: str, raw: bytes) -> bytes:
    return orjson.dumps(GOOD)[:-1] + b',"' + name.encode() + b'":' + raw + b"}"


# (name, the bad record as raw JSON, expected per-record code, reason prefix)
RECORDS: list[tuple[str, bytes, int | None, str]] = [
    ("ts 1e20", raw_record(orjson.dumps({**GOOD, "ts": 1e20})), 42206, "ts"),
    ("ts 1e30", raw_record(orjson.dumps({**GOOD, "ts": 1e30})), 42206, "ts"),
    ("ts huge integer", raw_record(orjson.dumps(GOOD).replace(b'"2026-06-01T09:00:00Z"', b"1" + b"0" * 40)), 42206, "ts"),
    ("ts negative", raw_record(orjson.dumps({**GOOD, "ts": -1})), 42206, "ts"),
    ("ts past year 9999 in UTC", raw_record(orjson.dumps({**GOOD, "ts": "9999-12-31T23:59:59-01:00"})), 42206, "ts"),
    ("ts NaN as a string", raw_record(orjson.dumps({**GOOD, "ts": "NaN"})), 42206, "ts"),
    ("ts boolean", raw_record(orjson.dumps({**GOOD, "ts": True})), 42206, "ts"),
    ("ts nested arrays", raw_record(orjson.dumps(GOOD).replace(b'"2026-06-01T09:00:00Z"', b"[" * 500 + b"]" * 500)), 42206, "ts"),
    ("measurement NaN as a string", raw_record(orjson.dumps({**GOOD, "measurements": {"air_temp_c": "NaN"}})), 42206, "measurements.air_temp_c"),
    ("measurement Infinity as a string", raw_record(orjson.dumps({**GOOD, "measurements": {"rh_pct": "Infinity"}})), 42206, "measurements.rh_pct"),
    ("measurement 1e308", raw_record(orjson.dumps({**GOOD, "measurements": {"co2_ppm": 1e308}})), 42206, "measurements.co2_ppm"),
    ("measurement huge integer", raw_record(orjson.dumps(GOOD).replace(b"21.0", b"9" * 30)), 42206, "measurements.air_temp_c"),
    ("measurement wrong type", raw_record(orjson.dumps({**GOOD, "measurements": {"air_temp_c": [21]}})), 42206, "measurements.air_temp_c"),
    ("unknown measurement nested", raw_record(orjson.dumps({**GOOD, "measurements": {"air_temp_c": 1.0, "leaf": {"x": 1}}})), 42206, "measurements"),
    ("measurements not an object", raw_record(orjson.dumps({**GOOD, "measurements": "warm"})), 42206, "measurements"),
    ("measurements empty", raw_record(orjson.dumps({**GOOD, "measurements": {}})), 42206, "measurements"),
    ("greenhouse_id with ':'", raw_record(orjson.dumps({**GOOD, "greenhouse_id": "gh:01"})), 42206, "greenhouse_id"),
    ("greenhouse_id a number", raw_record(orjson.dumps({**GOOD, "greenhouse_id": 1})), 42206, "greenhouse_id"),
    ("device_id null", raw_record(orjson.dumps({**GOOD, "device_id": None})), 42206, "device_id"),
    ("device_id 100 kB", raw_record(orjson.dumps({**GOOD, "device_id": "d" * 100_000})), 42206, "device_id"),
    ("schema_version 2", raw_record(orjson.dumps({**GOOD, "schema_version": 2})), 42206, "schema_version"),
    ("unknown field nested 300 deep", raw_record(field_json("firmware", deep_json(300))), 42206, "extra"),
    ("unknown field nested 1000 deep", raw_record(field_json("firmware", deep_json(1000))), 42206, "extra"),
    ("unknown field nested 9 deep", raw_record(field_json("firmware", deep_json(9))), 42206, "extra"),
    ("value nested 1000 deep", raw_record(deep_json(1000)), 42206, "greenhouse_id"),
    ("value an array", raw_record(b"[1, 2, 3]"), 42206, "value"),
    ("value a string", raw_record(b'"reading"'), 42206, "value"),
    ("value null", raw_record(b"null"), 42206, "value"),
    ("value missing", b"{}", 42206, "value"),
    ("record a number", b"7", 42206, "record"),
    ("record nested 1000 deep", deep_json(1000), 42206, "value"),
    ("partition a string", b'{"value":' + orjson.dumps(GOOD) + b',"partition":"1"}', 42206, "partition"),
    ("partition huge", b'{"value":' + orjson.dumps(GOOD) + b',"partition":' + b"9" * 30 + b"}", 42206, "partition"),
    ("another greenhouse", raw_record(orjson.dumps({**GOOD, "greenhouse_id": "gh-02", "device_id": "gh-02-climate"})), 40302, "greenhouse_id"),
    ("another device", raw_record(orjson.dumps({**GOOD, "device_id": "gh-01-weather"})), 40303, "device_id"),
    # kept by the contract: stored, not rejected
    ("unknown field nested 8 deep", raw_record(field_json("firmware", deep_json(8))), STORED, ""),
    ("unknown field of 200 kB", raw_record(orjson.dumps({**GOOD, "note": "n" * 200_000})), STORED, ""),
    ("unknown measurement NaN as a string", raw_record(orjson.dumps({**GOOD, "measurements": {"air_temp_c": 1.0, "leaf_note": "NaN"}})), STORED, ""),
    ("unknown field with control characters", raw_record(orjson.dumps({**GOOD, "note": "\x00\x1b[31m\u2028"})), STORED, ""),
]


@pytest.fixture
def gateway(tmp_path):
    settings = Settings(data_dir=tmp_path / "gh")
    devices = make_devices(settings.metadata_url)
    service = IngestService(settings, open_bus(settings.bus_url), devices.registry, clock=lambda: NOW)
    return service, devices.auth()


def produce(service: IngestService, auth: str, body: bytes, content_type: str = JSON_V2):
    return service.produce(TOPIC, body, content_type=content_type, authorization=auth)


def test_each_bad_record_is_answered_per_record_and_its_neighbours_are_accepted_once(gateway):
    service, auth = gateway
    accepted: list[dict] = []
    for i, (name, bad, code, reason) in enumerate(RECORDS):
        before, after = good(2 * i), good(2 * i + 1)
        body = b'{"records":[' + orjson.dumps({"value": before}) + b"," + bad + b"," + orjson.dumps({"value": after}) + b"]}"
        r = produce(service, auth, body)
        assert r.status == 200, (name, r.body)
        offsets = r.body["offsets"]
        assert offsets[0]["error_code"] is None and offsets[2]["error_code"] is None, name
        assert offsets[1]["error_code"] == code, (name, offsets[1])
        if code is not None:
            assert offsets[1]["error"].startswith(reason) and len(offsets[1]["error"]) < 400, (name, offsets[1]["error"])
        accepted += [before, after] + ([orjson.loads(bad)["value"]] if code is None else [])
    letters = [DeadLetter.from_json(m.value) for m in service.bus.consumer("dead", [service.settings.topics.deadletter]).poll(10_000, 1)]
    assert len(letters) == sum(code is not None for _, _, code, _ in RECORDS)
    assert all(len(d.to_json()) < 300_000 for d in letters)
    assert any(CUT_MARK in d.to_json().decode() for d in letters)  # the 1000-deep ones, cut
    # the sink takes everything the gateway accepted, exactly once (the stored bad records share
    # GOOD's device and time: one row), and nothing else
    settings = service.settings
    stats = LakeSink(settings, open_bus(settings.bus_url), Lake.from_url(settings.lake_url), open_metadata(settings.metadata_url)).run()
    distinct = {r["ts"] for r in accepted}
    assert (stats.rows_written, stats.invalid, stats.duplicates) == (len(distinct), 0, len(accepted) - len(distinct))
    assert Lake.from_url(settings.lake_url).read_raw_sensors().num_rows == len(distinct)


def test_duplicate_records_are_accepted_and_stored_once(gateway):
    service, auth = gateway
    r = produce(service, auth, orjson.dumps({"records": [{"value": GOOD}, {"value": GOOD}, {"value": GOOD}]}))
    assert r.status == 200 and [o["error_code"] for o in r.body["offsets"]] == [None] * 3
    settings = service.settings
    stats = LakeSink(settings, open_bus(settings.bus_url), Lake.from_url(settings.lake_url), open_metadata(settings.metadata_url)).run()
    assert (stats.rows_written, stats.duplicates) == (1, 2)


@pytest.mark.parametrize(
    "name, body, status, code",
    [
        ("empty body", b"", 400, 40001),
        ("truncated JSON", b'{"records": [{"value": {"greenhouse_id": "gh-0', 400, 40001),
        ("invalid UTF-8", b'{"records": [{"value": "\xff\xfe"}]}', 400, 40001),
        ("lone surrogate escape", b'{"records": [{"value": "\\ud800"}]}', 400, 40001),
        ("NaN token", b'{"records": [{"value": {"ts": NaN}}]}', 400, 40001),
        ("Infinity token", b'{"records": [{"value": {"ts": Infinity}}]}', 400, 40001),
        ("number overflowing a double", b'{"records": [{"value": {"ts": 1e400}}]}', 400, 40001),
        ("nested past 1024 levels", b'{"records": [' + b"[" * 2000 + b"]" * 2000 + b"]}", 400, 40001),
        ("trailing garbage", b'{"records": []} {"records": []}', 400, 40001),
        ("a JSON array", b"[]", 422, 42206),
        ("null", b"null", 422, 42206),
        ("no records", b'{"value": 1}', 422, 42206),
        ("records not a list", b'{"records": "all"}', 422, 42206),
        ("records empty", b'{"records": []}', 422, 42206),
        ("too many records", orjson.dumps({"records": [{"value": GOOD}] * 5001}), 413, 41302),
        ("body over the limit", b'{"records": [{"value": "' + b"x" * (4 * 1024 * 1024) + b'"}]}', 413, 41301),
    ],
)
def test_bodies_that_are_no_produce_request_get_a_request_level_4xx_and_write_nothing(gateway, name, body, status, code):
    service, auth = gateway
    r = produce(service, auth, body)
    assert (r.status, r.body["error_code"]) == (status, code), name
    assert set(r.body) == {"error_code", "message"} and len(r.body["message"]) < 400
    assert sum(service.bus.end_offsets(TOPIC).values()) == 0


@pytest.mark.parametrize(
    "value, code",
    [
        ("%%%", 42203),
        (base64.b64encode(b"\xff\xfe not utf-8").decode(), 42203),
        (base64.b64encode(b'{"ts": NaN}').decode(), 42203),
        (base64.b64encode(deep_json(2000)).decode(), 42203),
        (base64.b64encode(orjson.dumps({**GOOD, "ts": 1e20})).decode(), 42206),
        (base64.b64encode(field_json("firmware", deep_json(300))).decode(), 42206),
        (12, 42203),
        ({"not": "base64"}, 42203),
    ],
)
def test_binary_records_that_do_not_decode_to_a_reading(gateway, value, code):
    service, auth = gateway
    ok = base64.b64encode(orjson.dumps(GOOD)).decode()
    r = produce(service, auth, orjson.dumps({"records": [{"value": ok}, {"value": value}]}), content_type=BINARY_V2)
    assert r.status == 200 and [o["error_code"] for o in r.body["offsets"]] == [None, code]
