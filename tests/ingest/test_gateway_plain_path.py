"""The gateway's fast path for plain readings (app.contracts.reading_plain) against the contract's
own check: it may only take values validate_reading accepts, and must write the same bytes of them."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from app.contracts.reading import ReadingError, reading_json, validate_reading
from app.contracts.reading_plain import plain_reading
from tests.ingest.test_plain_readings import HOSTILE, plain

NOW = datetime(2026, 6, 2, tzinfo=timezone.utc)
SKEW_S = 86_400.0


def slow(value) -> bytes | None:
    try:
        return reading_json(validate_reading(value, now=NOW, max_future_skew_s=SKEW_S))
    except ReadingError:
        return None


def assert_agrees(value) -> bool:
    """The fast path takes ``value`` only when the model accepts it, and writes what the model
    would; True when it took it."""
    fast = plain_reading(value, now=NOW, max_future_skew_s=SKEW_S)
    if fast is not None:
        assert fast.json == slow(value), value
        decoded = orjson.loads(fast.json)
        assert (fast.greenhouse_id, fast.device_id) == (decoded["greenhouse_id"], decoded["device_id"])
    return fast is not None


def test_plain_readings_take_the_fast_path_and_write_what_the_model_writes():
    assert all(assert_agrees(plain(i)) for i in range(200))
    assert assert_agrees(plain(1, schema_version=1))
    assert assert_agrees(plain(2, ts="2026-06-01T03:00:00.5+02:30", measurements={"co2_ppm": 10_000, "vent_pct": 0}))


@pytest.mark.parametrize("raw", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_values_are_never_taken_unless_valid(raw):
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = raw.decode("utf-8", "replace")
    assert_agrees(value)


def test_generated_values_agree_with_the_model():
    rng = random.Random(11)
    names = ["air_temp_c", "rh_pct", "co2_ppm", "wind_m_s", "screen_pct", "leaf_wetness_pct"]
    numbers = [0, -0.0, 1, 21.5, 99.99, 100, 100.0001, -50, 70.0, 1e-7, 3000, 1e308, -1, True, None, "5", 2**70]
    stamps = ["2026-06-01T00:00:00Z", "2026-06-02T23:59:59.999999+00:00", "2026-06-03T01:00:00+00:00", "2026-06-03T00:30:00+01:00", "2000-01-01T00:00:00Z", "1999-12-31T23:59:59.9Z"]
    stamps += ["2026-06-01 00:00:00Z", "2026-06-01t00:00:00z", "2026-06-01T00:00:60Z", "2026-06-01T00:00:00.1234567Z", "2026-06-01T00:00:00+24:00", "２026-06-01T00:00:00Z"]
    ids = ["gh-01", "a", "x" * 64, "x" * 65, "-a", "a b", "gh\n", "ünï", ""]

    def pick(options: list, good: int):  # mostly one of the first ``good`` (valid) options
        return rng.choice(options[:good] if rng.random() < 0.8 else options)

    taken = 0
    for _ in range(3000):
        value = plain(0, ts=pick(stamps, 5), greenhouse_id=pick(ids, 3), device_id=pick(ids, 3))
        value["measurements"] = {pick(names, 5): pick(numbers, 11) for _ in range(rng.randint(0, 3))}
        if rng.random() < 0.1:
            value[rng.choice(["schema_version", "firmware"])] = rng.choice([1, 2, None, True, "1"])
        taken += assert_agrees(value)
    assert taken > 300  # the generator reaches the fast path often enough to mean something


def test_the_future_bound_is_the_models():
    edge = (NOW + timedelta(seconds=SKEW_S)).isoformat().replace("+00:00", "Z")
    late = (NOW + timedelta(seconds=SKEW_S, microseconds=1)).isoformat().replace("+00:00", "Z")
    assert assert_agrees(plain(0, ts=edge)) and slow(plain(0, ts=late)) is None and not assert_agrees(plain(0, ts=late))
