"""A chunk's readings as one table (app.ingest.chunk) against a plain-Python reference: the same
greenhouse-days, the same first copies kept, the same lake rows, plain and slow readings mixed."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import numpy as np
import orjson

from app.bus import Message
from app.contracts.reading import ReadingError, reading_from_bus
from app.contracts.reading_columns import plain_readings
from app.ingest.chunk import ChunkColumns, SlowRow, chunk_table, unseen
from app.ingest.dedupe import DayKeys, Keys
from app.ingest.records import reading_row, rows_to_table

NOW = datetime(2026, 6, 5, tzinfo=timezone.utc)


def chunk_values(seed: int, n: int = 600) -> list[bytes]:
    """Readings of 3 greenhouses over two UTC days, with repeats, offsets other than Z, unknown
    fields (the slow path) and a few invalid values."""
    rng = random.Random(seed)
    start = datetime(2026, 6, 1, 23, 0, tzinfo=timezone.utc)
    values = []
    for _ in range(n):
        gh = f"gh-{rng.randrange(3)}"
        ts = start + timedelta(seconds=rng.randrange(0, 7200, 30))  # straddles midnight UTC
        text = ts.astimezone(timezone(timedelta(hours=rng.choice([0, 2, -5])))).isoformat()
        value = {"greenhouse_id": gh, "device_id": f"{gh}-d{rng.randrange(2)}", "ts": text, "measurements": {"air_temp_c": rng.uniform(10, 30)}}
        kind = rng.randrange(10)
        if kind == 0:
            value["firmware"] = "1.0"  # slow path
        elif kind == 1:
            value["measurements"] = {"air_temp_c": 1e9}  # invalid
        values.append(orjson.dumps(value))
    return values


def messages_of(values: list[bytes]) -> list[Message]:
    return [Message("t", 0, 1000 + i, None, v, 1_780_000_000_000 + i) for i, v in enumerate(values)]


def built(messages: list[Message]) -> ChunkColumns:
    plain = plain_readings([m.value for m in messages], now=NOW)
    done = set(plain.positions.tolist())
    slow = []
    for pos, m in enumerate(messages):
        if pos in done:
            continue
        try:
            reading = reading_from_bus(m.value, now=NOW)
        except ReadingError:
            continue
        slow.append(SlowRow(pos, reading.greenhouse_id, reading_row(reading, m.topic, m.partition, m.offset, m.timestamp_ms)))
    return ChunkColumns(chunk_table(plain, slow, messages))


def reference(messages: list[Message], known: set) -> dict:
    """Greenhouse-day -> (the lake rows of the first copy of each key not in ``known``, their keys)."""
    out: dict = {}
    for m in messages:
        try:
            reading = reading_from_bus(m.value, now=NOW)
        except ReadingError:
            continue
        day = (reading.greenhouse_id, reading.ts.date())
        rows, keys = out.setdefault(day, ([], []))
        key = (reading.device_id, reading.ts_ms)
        if key in keys or key in known:
            continue
        keys.append(key)
        rows.append(reading_row(reading, m.topic, m.partition, m.offset, m.timestamp_ms))
    return out


def test_days_first_copies_and_lake_rows_match_the_reference():
    for seed in range(3):
        messages = messages_of(chunk_values(seed))
        chunk = built(messages)
        expected = reference(messages, set())
        days = chunk.days()
        assert [d.key for d in days] == sorted(expected), "greenhouse-days differ (UTC days, sorted)"
        for day in days:
            first = chunk.first_of_each_key(day.rows)
            rows, keys = expected[day.key]
            assert chunk.keys(first).pairs() == keys, "not the first copy of each key, in message order"
            assert chunk.lake_table(first).equals(rows_to_table(rows))


def test_keys_already_known_are_dropped_with_their_rows():
    messages = messages_of(chunk_values(7))
    chunk = built(messages)
    day = chunk.days()[0]
    first = chunk.first_of_each_key(day.rows)
    keys = chunk.keys(first).pairs()
    known, in_flight = set(keys[::3]), set(keys[1::5])
    rows, kept = unseen(chunk.keys(first), first, DayKeys(Keys.of(sorted(known))), None, DayKeys(Keys.of(sorted(in_flight))))
    assert kept.pairs() == [k for k in keys if k not in known and k not in in_flight]
    assert chunk.keys(rows).pairs() == kept.pairs()
    assert unseen(chunk.keys(first), first, DayKeys(), None)[0] is first  # nothing known: nothing dropped


def test_an_empty_chunk_has_no_days():
    chunk = ChunkColumns(chunk_table(plain_readings([]), [], []))
    assert chunk.days() == [] and chunk.table.num_rows == 0
    assert np.array_equal(chunk.first_of_each_key(np.zeros(0, np.int64)), np.zeros(0, np.int64))
