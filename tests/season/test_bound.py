"""The plant-knowing bound holds the band's lower edge with less heat than the tuned thermostat."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from app.contracts.command import Setpoints
from app.control.core import ControlPolicy
from app.control.policy import RuleTuning, ScreenRule
from app.season.bound import bound_row, edge_oracle, format_bound_rows, run_bound_trial
from app.season.sweep import Tuning
from app.season.trial import TrialController, run_trial
from app.season.twins import evaluation_twins
from app.sim.fleet import FleetSimulator

WINTER_NIGHT = datetime(2026, 1, 15, 5, tzinfo=timezone.utc)
TUNING = Tuning(RuleTuning(heat_full_offset_c=0.4, heat_band_c=1.5), ScreenRule(dark_below_solar_w_m2=250.0))
"""A winter thermostat as the sweep tunes it: full heat 0.4 K above the edge."""


def test_the_oracle_looks_into_an_exact_copy_and_the_least_heat_is_monotone():
    twin = evaluation_twins(1)[0]
    fleet = FleetSimulator(1, WINTER_NIGHT, seed=twin.seed, base_params=twin.params, vary_greenhouses=False)
    gh = fleet.greenhouse_ids[0]
    fleet.apply_setpoints(gh, Setpoints(vent_pct=0.0, heat_pct=100.0, screen_pct=100.0))
    while fleet.state(gh).air_temp_c < 18.5:  # warm the cold start above the edge
        fleet.step()
    before = fleet.state(gh)
    oracle = edge_oracle(ControlPolicy(), lookahead_min=10.0)
    held = {"heat_pct": 0.0, "vent_pct": 0.0, "screen_pct": 100.0}
    least = oracle.least_heat_pct(fleet, gh, held)
    assert fleet.state(gh) == before  # the lookahead stepped copies only
    assert 0.0 < least <= 100.0 and oracle.holds(fleet, gh, held, min(100.0, least + 5.0))
    if least > 1.0:
        assert not oracle.holds(fleet, gh, held, least - 1.0)


def test_the_bound_keeps_the_edge_with_no_more_heat_than_the_thermostat():
    twin, days, warmup_h = evaluation_twins(1)[0], 0.5, 3.0
    base = ControlPolicy()
    bound = run_bound_trial(twin, WINTER_NIGHT, days, TUNING, base, lookahead_min=15.0, warmup_h=warmup_h, keep_series=True)
    thermo = run_trial(twin, WINTER_NIGHT, days, TrialController("thermostat", TUNING.policy(base)), warmup_h=warmup_h)
    low_c = base.targets.band_low_c
    temps = bound.series["air_temp_c"]
    assert bound.controller == "bound" and bound.figures.mpc_share_pct == 0.0
    assert bound.figures.below_band_pct <= 1.0
    assert sum(t >= low_c - 0.05 for t in temps) >= 0.99 * len(temps)
    assert bound.figures.mean_temp_c < thermo.figures.mean_temp_c
    assert 0.0 < bound.figures.heating_kwh <= thermo.figures.heating_kwh
    row = bound_row("winter", [(bound.figures, thermo.figures)], 15.0)
    assert row.energy_ratio == pytest.approx(bound.figures.heating_kwh / thermo.figures.heating_kwh)
    assert 0.0 <= row.largest_saving < 0.5 and "largest saving" in format_bound_rows([row], {"winter": 0.99})
