"""The sink's duplicate cache: bounded by greenhouse-days and keys, least recently used out."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from app.ingest.dedupe import DayKeys, Keys, SeenKeys

DAY = date(2026, 6, 1)


def loader(keys_per_day: int):
    calls: list[tuple[str, date]] = []

    def load(greenhouse_id: str, day: date):
        calls.append((greenhouse_id, day))
        return DayKeys(Keys.of([(f"{greenhouse_id}-dev", i) for i in range(keys_per_day)]))

    return load, calls


def test_days_beyond_the_bound_are_dropped_least_recently_used_first():
    load, calls = loader(3)
    seen = SeenKeys(load, max_days=2, max_keys=1000)
    seen.get("gh-01", DAY)
    seen.get("gh-02", DAY)
    seen.get("gh-01", DAY)  # used again: gh-02 is now the oldest
    seen.get("gh-03", DAY)
    assert (seen.days, len(seen)) == (2, 6)
    seen.get("gh-01", DAY)
    assert calls.count(("gh-01", DAY)) == 1  # still held
    seen.get("gh-02", DAY)
    assert calls.count(("gh-02", DAY)) == 2  # forgotten, read again


def test_keys_beyond_the_bound_are_dropped_but_never_the_day_in_use():
    load, _ = loader(10)
    seen = SeenKeys(load, max_days=100, max_keys=15)
    seen.get("gh-01", DAY)
    seen.get("gh-02", DAY)
    assert (seen.days, len(seen)) == (1, 10)
    big = SeenKeys(loader(50)[0], max_days=100, max_keys=15)
    assert len(big.get("gh-01", DAY)) == 50 and big.days == 1  # alone over the bound: kept while in use


def test_added_keys_count_and_a_forgotten_day_is_left_to_the_lake():
    load, _ = loader(2)
    seen = SeenKeys(load, max_days=1, max_keys=100)
    seen.get("gh-01", DAY)
    seen.add("gh-01", DAY, Keys.of([("gh-01-dev", 99), ("gh-01-dev", 1)]))  # 1 is held already
    assert seen.get("gh-01", DAY).contains(Keys.of([("gh-01-dev", 99), ("gh-01-dev", 98), ("other", 99)])).tolist() == [True, False, False]
    assert len(seen) == 3
    seen.add("gh-09", DAY, Keys.of([("x", 1)]))  # not held: nothing to update
    assert seen.days == 1 and len(seen) == 3


def test_bounds_must_be_positive():
    with pytest.raises(ValueError):
        SeenKeys(loader(1)[0], max_days=0)


def test_day_keys_answer_as_a_set_of_pairs_would():
    rng = np.random.default_rng(3)
    held_pairs = [(f"d{rng.integers(4)}", int(rng.integers(0, 500))) for _ in range(300)]
    asked = [(f"d{rng.integers(5)}", int(rng.integers(0, 500))) for _ in range(400)]
    day = DayKeys(Keys.of(held_pairs))
    assert len(day) == len(set(held_pairs))
    assert day.contains(Keys.of(asked)).tolist() == [pair in set(held_pairs) for pair in asked]
    assert not DayKeys().contains(Keys.of(asked)).any()
