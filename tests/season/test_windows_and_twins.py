"""The season weeks and their windows; the evaluation twins vary wider than the training fleet."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime, timedelta, timezone

import pytest

from app.season.twins import EVALUATION_SPREAD, describe, evaluation_params, evaluation_twins
from app.season.weeks import SEASON_WEEKS, SeasonWeek, season_weeks
from app.sim.fleet import vary_params
from app.sim.twin import GreenhouseParams


def test_each_week_starts_at_local_midnight_and_its_windows_end_where_it_starts():
    for name, week in SEASON_WEEKS.items():
        assert week.name == name and week.start.hour == 5 and week.days == 7  # UTC-5: local midnight
        assert week.end - week.start == timedelta(days=7)
        assert week.tuning_start() == week.start - timedelta(days=7)
        assert week.training_start(14) == week.start - timedelta(days=14)
    assert [w.start.month for w in season_weeks(["winter", "spring", "summer"])] == [1, 4, 7]
    short = season_weeks(["summer"], days=2)[0]
    assert short.days == 2 and short.start == SEASON_WEEKS["summer"].start and short.tuning_start() == short.start - timedelta(days=2)
    with pytest.raises(KeyError, match="autumn"):
        season_weeks(["autumn"])
    with pytest.raises(ValueError):
        SeasonWeek("x", datetime(2026, 1, 1))  # naive
    with pytest.raises(ValueError):
        SeasonWeek("x", datetime(2026, 1, 1, tzinfo=timezone.utc), days=0)


def test_evaluation_twins_are_seeded_distinct_and_stay_within_their_spread():
    twins = evaluation_twins(6)
    assert [t.twin_id for t in twins] == [f"ev-{i:02d}" for i in range(1, 7)] and len({t.seed for t in twins}) == 6
    assert evaluation_twins(6) == twins and evaluation_twins(6, seed=1)[0].params != twins[0].params
    base = GreenhouseParams()
    for t in twins:
        size = t.params.floor_area_m2 / base.floor_area_m2
        assert EVALUATION_SPREAD["size"][0] <= size <= EVALUATION_SPREAD["size"][1]
        low, high = EVALUATION_SPREAD["screen_insulation_fraction"]
        assert low * base.screen_insulation_fraction <= t.params.screen_insulation_fraction <= high * base.screen_insulation_fraction
        assert set(describe(t.params)) <= {f.name for f in fields(GreenhouseParams)}
    with pytest.raises(ValueError):
        evaluation_twins(0)


def test_the_twins_vary_more_than_the_training_fleet_and_in_what_it_never_varies():
    """Plant mismatch: over many draws the evaluation range of each shared factor is wider than
    the training fleet's, and the screen and heating loop vary only here."""
    base = GreenhouseParams()
    train = [vary_params(base, 0, f"gh-{i:02d}") for i in range(200)]
    evaluation = [evaluation_params(7_000, i) for i in range(200)]

    def spread(params, name):
        ratios = [getattr(p, name) / getattr(base, name) for p in params]
        return max(ratios) - min(ratios)

    for name in ("floor_area_m2", "cover_u_w_m2_k", "thermal_mass_j_k", "leakage_air_changes_per_h"):
        assert spread(evaluation, name) > spread(train, name), name
    for name in ("screen_insulation_fraction", "heat_time_constant_s", "disturbance_w_m2"):
        assert spread(train, name) == 0 < spread(evaluation, name), name
