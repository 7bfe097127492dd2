"""The thermostat's tuning rule and the season table's margins and verdict."""

from __future__ import annotations

from dataclasses import replace

import pytest

from app.control.core import ControlPolicy
from app.control.policy import RuleTuning
from app.season.sweep import STAGES, SweepPoint, Tuning, choose, heating_stage, screen_stage, stage_level, vent_stage
from app.season.table import Target, format_rows, season_row, verdict
from app.season.trial import Figures


def point(in_band: float, kwh: float, rh: float = 5.0, offset: float = 0.0) -> SweepPoint:
    return SweepPoint(Tuning(RuleTuning(heat_full_offset_c=offset)), in_band, kwh, rh)


def test_the_tuned_setting_is_the_cheapest_that_keeps_time_in_band_near_the_best():
    points = [point(99.5, 1000, offset=0.2), point(99.2, 900, offset=0.1), point(98.8, 800, offset=0.0), point(97.0, 700, offset=-0.2)]
    level = stage_level(points, 0.0, 0.5)
    assert level == 99.0
    assert choose(points, level).heating_kwh == 900  # 800 kWh costs 0.7 points: too much
    assert stage_level(points, 99.3, 0.5) == 99.3 and choose(points, 99.3).heating_kwh == 1000  # an earlier stage's level holds
    assert choose(points, 99.9).in_band_pct == 99.5  # none reaches the level: the most in band
    # within 1 % of the least energy it is a tie: more time in band, then less humidity wins
    ties = [point(99.1, 900.0, rh=4.0), point(99.4, 905.0, rh=6.0), point(99.4, 904.0, rh=3.0)]
    assert choose(ties, 99.0) == ties[2]
    with pytest.raises(ValueError):
        choose([], 0.0)


def test_each_stage_moves_its_own_knobs_around_the_current_setting_and_keeps_the_rest():
    start = Tuning()
    assert [len(stage(start)) for stage in STAGES] == [12, 8, 9, 12]
    assert start in heating_stage(start) and all(t.screen == start.screen for t in heating_stage(start) + vent_stage(start))
    chosen = replace(start, rule=replace(start.rule, heat_full_offset_c=0.2))
    assert all(t.rule.heat_full_offset_c == 0.2 for t in vent_stage(chosen) + screen_stage(chosen))
    assert {t.screen.dark_below_solar_w_m2 for t in screen_stage(chosen)} == {50.0, 150.0, 250.0}
    policy = chosen.policy(ControlPolicy())
    assert policy.rule == chosen.rule and policy.screen_rule == chosen.screen and "edge+0.2 K" in chosen.label()


def figures(in_band: float, kwh: float, rh: float = 5.0) -> Figures:
    return Figures(in_band, 100 - in_band, 0.0, rh, 18.5, kwh, 500.0, 50.0, 200.0, 20.0, 12.0, 100.0, 7.0)


def test_the_verdict_says_which_target_is_met_and_by_how_much_it_is_missed():
    assert verdict(0.88, -0.3, -1.0) == (True, "MET (energy): energy +12.0% saved, in band -0.30 pts, above RH ceiling -1.00 pts")
    met, said = verdict(1.0, 2.5, 0.0)
    assert met and said.startswith("MET (time in band)")
    met, said = verdict(0.95, -0.8, 0.4)
    assert not met and "energy saving 5.0% short of 10%" in said and "0.30 pts below" in said and "humidity 0.40 pts above" in said
    assert not verdict(1.01, 3.0, 0.0)[0]  # more time in band but more energy
    assert not verdict(0.99, 3.0, 0.5)[0]  # more time in band bought with humidity
    assert verdict(0.95, 0.0, 0.0, Target(energy_saving=0.05))[0]


def test_a_season_row_holds_the_spread_over_twins_and_margins_per_twin():
    pairs = [(figures(99.0, 900), figures(99.2, 1000)), (figures(97.0, 850), figures(97.6, 1000)), (figures(95.0, 940, rh=4.0), figures(95.0, 1000))]
    row = season_row("winter", pairs)
    assert row.twins == 3 and row.mpc["heating_kwh"].mean == pytest.approx(896.667, abs=1e-3)
    assert (row.mpc["in_band_pct"].low, row.mpc["in_band_pct"].high) == (95.0, 99.0)
    assert row.energy_ratio == pytest.approx(2690 / 3000) and (row.energy_ratio_spread.low, row.energy_ratio_spread.high) == (0.85, 0.94)
    assert row.in_band_diff_pts.mean == pytest.approx(-0.2667, abs=1e-3) and row.in_band_diff_pts.low == pytest.approx(-0.6)
    assert row.rh_diff_pts.mean == pytest.approx(-1 / 3) and row.met
    text = format_rows([row])
    assert "winter: 3 twins" in text and "energy ratio MPC/thermostat: 0.897" in text and "MET (energy)" in text
    with pytest.raises(ValueError):
        season_row("winter", [])
