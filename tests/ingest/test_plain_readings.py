"""The sink's bulk parser (app.contracts.reading_columns) against the contract's own check: it may
only pick values that reading_from_bus accepts, and must make the same lake rows of them."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import orjson
import pyarrow as pa
import pytest

from app.bus import Message
from app.contracts.reading import MEASUREMENT_BOUNDS, ReadingError, reading_from_bus
from app.contracts.reading_columns import BLOCK, plain_readings
from app.ingest.records import plain_table, reading_row, rows_to_table

NOW = datetime(2026, 6, 2, tzinfo=timezone.utc)


def plain(i: int, **changes) -> dict:
    ts = datetime(2026, 6, 1, tzinfo=timezone.utc) + timedelta(seconds=7 * i, microseconds=1000 * (i % 3) + 17 * (i % 2))
    value = {"greenhouse_id": f"gh-{i % 3}", "device_id": f"gh-{i % 3}-d{i % 2}", "ts": ts.isoformat().replace("+00:00", "Z"), "measurements": {"air_temp_c": 20 + i % 7, "rh_pct": 55.5}}
    value.update(changes)
    return value


HOSTILE: list[bytes] = [
    orjson.dumps(plain(1, schema_version=None)),  # explicit null: refused by the contract
    orjson.dumps(plain(2, schema_version=2)),
    orjson.dumps(plain(3, greenhouse_id="gh:01")),
    orjson.dumps(plain(4, device_id="")),
    orjson.dumps(plain(5, ts="2026-06-01T00:00:00")),  # no offset
    orjson.dumps(plain(6, ts="1999-12-31T23:59:59Z")),
    orjson.dumps(plain(7, ts="2026-13-01T00:00:00Z")),
    orjson.dumps(plain(8, ts="9999-12-31T23:59:59-01:00")),  # past datetime.max in UTC
    orjson.dumps(plain(9, ts=1780272000000)),  # epoch ms: valid, left to the slow path
    orjson.dumps(plain(10, measurements={})),
    orjson.dumps(plain(11, measurements={"air_temp_c": None})),
    orjson.dumps(plain(12, measurements={"air_temp_c": 1e6})),
    orjson.dumps(plain(13, measurements={"rh_pct": -0.1})),
    orjson.dumps(plain(14, measurements={"air_temp_c": 21, "leaf_wetness_pct": 3})),  # unknown measurement: extra_json
    orjson.dumps(plain(15, firmware="1.2")),  # unknown field: extra_json
    orjson.dumps(plain(16, firmware=None)),  # an unknown field that is null is still kept
    orjson.dumps(plain(17, measurements={"air_temp_c": "21"})),
    orjson.dumps(plain(18, measurements={"air_temp_c": True})),
    b'{"greenhouse_id":"gh-0","greenhouse_id":"gh-1","device_id":"d","ts":"2026-06-01T00:00:00Z","measurements":{"rh_pct":1}}',
    b'{"schema\\u005fversion":null,"greenhouse_id":"gh-0","device_id":"d","ts":"2026-06-01T00:00:00Z","measurements":{"rh_pct":1}}',
    b'{"greenhouse_id":"gh-0",\n"device_id":"d","ts":"2026-06-01T00:00:00Z","measurements":{"rh_pct":1}}',
    b'{"greenhouse_id":"gh-0","device_id":"d","ts":"2026-06-01T00:00:00Z","measurements":{"rh_pct":1e400}}',
    b"garbage",
    b"",
    b"[1, 2]",
    b"null",
    orjson.dumps(plain(19, ts="2126-06-01T00:00:00Z")),  # far in the future
    orjson.dumps(plain(20, ts="2026-02-30T00:00:00Z")),  # no such day: Arrow refuses its whole block
    orjson.dumps(plain(21, ts="0000-01-01T00:00:00Z")),  # Arrow reads a year 0, Python none
]


def as_messages(values: list[bytes]) -> list[Message]:
    return [Message("t", 0, 100 + i, None, v, 1_780_000_000_000 + i) for i, v in enumerate(values)]


def slow_rows(messages: list[Message]) -> dict[int, dict]:
    out = {}
    for i, m in enumerate(messages):
        try:
            reading = reading_from_bus(m.value, now=NOW)
        except ReadingError:
            continue
        out[i] = reading_row(reading, m.topic, m.partition, m.offset, m.timestamp_ms)
    return out


def assert_same_rows(values: list[bytes]) -> list[int]:
    messages = as_messages(values)
    found = plain_readings(values, now=NOW)
    positions = found.positions.tolist()
    valid = slow_rows(messages)
    assert set(positions) <= set(valid), f"picked values the contract refuses: {sorted(set(positions) - set(valid))}"
    if positions:
        fast = plain_table(found, list(range(len(positions))), [messages[p] for p in positions])
        slow = rows_to_table([valid[p] for p in positions])
        assert fast.sort_by([("bus_offset", "ascending")]).equals(slow.sort_by([("bus_offset", "ascending")]))
    return positions


def test_plain_values_are_picked_and_give_the_same_rows():
    values = [orjson.dumps(plain(i)) for i in range(500)]
    assert assert_same_rows(values) == list(range(500))


def test_hostile_values_are_left_to_the_contract_and_do_not_hide_their_neighbours():
    values = [orjson.dumps(plain(i)) for i in range(40)]
    mixed = [v for pair in zip(values, HOSTILE + values[: 40 - len(HOSTILE)], strict=False) for v in pair]
    picked = assert_same_rows(mixed)
    hostile_positions = {mixed.index(h) for h in HOSTILE}
    assert sorted(picked) == [i for i in range(len(mixed)) if i not in hostile_positions], "a hostile value sent good neighbours to the slow path"


@pytest.mark.parametrize("seed", range(5))
def test_random_mutations_never_pick_what_the_contract_refuses(seed):
    rng = random.Random(seed)
    names = list(MEASUREMENT_BOUNDS)
    values = []
    for i in range(BLOCK + 300):  # more than one block
        v = plain(i)
        kind = rng.randrange(8)
        if kind == 0:
            name = rng.choice(names)
            low, high = MEASUREMENT_BOUNDS[name]
            v["measurements"] = {name: rng.choice([low, high, low - 0.001, high + 0.001, (low + high) / 2])}
        elif kind == 1:
            v["ts"] = rng.choice(["2026-06-01T00:00:00.1234567Z", "2026-06-01T00:00:00+0200", "2026-06-01 00:00:00Z", "2026-06-01T00:00:00.5+14:00", "2000-01-01T00:00:00Z"])
        elif kind == 2:
            v["greenhouse_id"] = rng.choice(["a" * 64, "a" * 65, "-x", "x.y_z", "ü"])
        elif kind == 3:
            v["schema_version"] = rng.choice([1, 2, 0])
        values.append(orjson.dumps(v))
    picked = assert_same_rows(values)
    assert len(picked) > len(values) // 2


def test_the_plain_table_has_the_lake_schema():
    values = [orjson.dumps(plain(i)) for i in range(3)]
    found = plain_readings(values, now=NOW)
    table = plain_table(found, [0, 1, 2], as_messages(values))
    assert table.schema == rows_to_table([]).schema and table["extra_json"].null_count == 3
    assert table["ts"].type == pa.timestamp("ms", tz="UTC")
