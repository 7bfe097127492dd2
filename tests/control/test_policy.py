"""Control policy: no setpoint ever outside limits (property-based), the cheapest candidate wins, the grid is what it says."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.config import Limits
from app.contracts.vocabulary import ACTUATORS
from app.control.policy import Targets, clamp_setpoints, thermostat

ACTS = ACTUATORS
anything = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-1e6, 1e6))
limits_st = st.builds(
    Limits,
    vent_min_pct=st.floats(0, 40),
    vent_max_pct=st.floats(60, 100),
    heat_min_pct=st.floats(0, 40),
    heat_max_pct=st.floats(60, 100),
    screen_min_pct=st.floats(0, 40),
    screen_max_pct=st.floats(60, 100),
    vent_rate_pct_per_min=st.floats(0, 50),
    heat_rate_pct_per_min=st.floats(0, 50),
    screen_rate_pct_per_min=st.floats(0, 50),
)


@settings(max_examples=300)
@given(st.fixed_dictionaries({a: anything for a in ACTS}), st.fixed_dictionaries({a: st.floats(-50, 150) for a in ACTS}), limits_st, st.floats(0, 3600))
def test_clamped_setpoints_are_always_within_limits_and_rates(proposed, current, limits, dt_s):
    out = clamp_setpoints(proposed, current, limits, dt_s)
    for a in ACTS:
        low, high = limits.bounds(a)
        assert low - 1e-6 <= out[a] <= high + 1e-6
        cur = min(high, max(low, current[a]))
        assert abs(out[a] - cur) <= limits.rate(a) * dt_s / 60 + 1e-3


@settings(max_examples=100)
@given(st.floats(-10, 45), st.floats(0, 100), st.fixed_dictionaries({a: st.floats(0, 100) for a in ACTS}), limits_st)
def test_thermostat_commands_are_within_limits(temp, rh, current, limits):
    d = thermostat(temp, rh, current, limits=limits, targets=Targets())
    for a in ACTS:
        low, high = limits.bounds(a)
        assert low - 1e-6 <= d.setpoints[a] <= high + 1e-6


def test_mpc_aims_inside_the_margin_and_ignores_horizons_beyond_the_cost_limit():

    import numpy as np

    from app.control.policy import candidate_plans, pick_best

    current = {"vent_pct": 0.0, "heat_pct": 0.0, "screen_pct": 0.0}
    lim = Limits(heat_rate_pct_per_min=100)
    plans = candidate_plans(current, lim, 300, levels={"heat_pct": range(0, 101, 5), "vent_pct": (0,)}, fixed={"screen_pct": 0.0})
    assert sorted(set(plans[:, 1])) == list(range(0, 101, 5)) and set(plans[:, 0]) == {0.0}

    # 15-min forecast rises 0.02 K per heat-percent from 17.5 C; the 60-min one says "freezing"
    keys = ["air_temp_c_15min", "air_temp_c_60min"]
    forecasts = np.column_stack([17.5 + 0.02 * plans[:, 1], 5.0 + 0.1 * plans[:, 1]])
    plain = pick_best(plans, forecasts, keys, current, limits=lim, targets=Targets(), max_horizon_min=15)
    margin = pick_best(plans, forecasts, keys, current, limits=lim, targets=Targets(margin_c=0.3), max_horizon_min=15)
    assert plain.setpoints["heat_pct"] == 25.0  # 17.5 + 0.5 = 18.0: just in band, least heat
    assert margin.setpoints["heat_pct"] == 40.0  # aims at 18.3
    assert margin.candidate_index is not None and plans[margin.candidate_index].tolist() == [margin.setpoints[a] for a in ACTUATORS]
    every = pick_best(plans, forecasts, keys, current, limits=lim, targets=Targets())
    assert every.setpoints["heat_pct"] == 100.0  # the held-for-an-hour forecast dominates when it counts


def test_the_least_cost_candidate_wins_and_non_finite_forecasts_never_win():
    import math

    import numpy as np

    from app.control.policy import Weights, candidate_costs, candidate_plans, pick_best

    current = {"vent_pct": 10.0, "heat_pct": 20.0, "screen_pct": 0.0}
    lim = Limits(heat_rate_pct_per_min=100, vent_rate_pct_per_min=100)
    plans = candidate_plans(current, lim, 300, levels={"heat_pct": range(0, 101, 10), "vent_pct": (0, 50)}, fixed={"screen_pct": 0.0})
    keys = ["air_temp_c_5min", "air_temp_c_15min", "rh_pct_5min", "rh_pct_15min", "air_temp_c_60min"]
    vent, heat = plans[:, 0], plans[:, 1]
    values = np.column_stack([17.0 + 0.03 * heat - 0.02 * vent, 16.8 + 0.04 * heat, 85 + 0.1 * heat - 0.2 * vent, 90 - 0.1 * vent, np.full(len(plans), 10.0)])
    targets = Targets(margin_c=0.2)
    best = pick_best(plans, values, keys, current, limits=lim, targets=targets, max_horizon_min=15)
    assert plans[best.candidate_index].tolist() == [best.setpoints[a] for a in ACTUATORS]
    # the chosen cost is the least of the per-candidate costs, each computed alone
    costs = [float(candidate_costs(plans[i : i + 1], values[i : i + 1], keys, current, targets, Weights(), 15)[0]) for i in range(len(plans))]
    assert best.cost == round(min(costs), 4) and costs.index(min(costs)) == best.candidate_index

    broken = values.copy()
    broken[best.candidate_index, 0] = math.nan  # the winner's forecast is broken: it must not win
    second = pick_best(plans, broken, keys, current, limits=lim, targets=targets, max_horizon_min=15)
    assert second.candidate_index != best.candidate_index and math.isfinite(second.cost)
    with pytest.raises(ValueError, match="finite"):
        pick_best(plans, np.full_like(values, math.inf), keys, current, limits=lim, targets=targets)
    with pytest.raises(ValueError):
        pick_best(plans[:3], values, keys, current, limits=lim, targets=targets)


@settings(max_examples=300, deadline=None)
@given(
    current=st.fixed_dictionaries({a: st.one_of(st.floats(-20, 130), st.just(float("nan"))) for a in ("vent_pct", "heat_pct", "screen_pct")}),
    levels=st.one_of(
        st.lists(st.floats(-10, 110), min_size=1, max_size=6),
        st.fixed_dictionaries({}, optional={a: st.lists(st.floats(-10, 110), min_size=1, max_size=6) for a in ("vent_pct", "heat_pct", "screen_pct")}),
    ),
    fixed=st.fixed_dictionaries({}, optional={"screen_pct": st.floats(-10, 110)}),
    dt_s=st.sampled_from([0.0, 60.0, 300.0, 3600.0]),
    rates=st.tuples(st.floats(0.5, 50), st.floats(0.5, 50)),
)
def test_the_candidate_plans_are_the_clamped_deduplicated_product_in_first_seen_order(current, levels, fixed, dt_s, rates):
    """The grid is built per actuator (clamping acts on each alone); the whole product, clamped
    and deduplicated in order, is the definition."""
    import itertools

    from app.control.policy import candidate_plans

    lim = Limits(vent_max_pct=80, heat_min_pct=5, vent_rate_pct_per_min=rates[0], heat_rate_pct_per_min=rates[1])

    def levels_of(a):
        return levels.get(a, (0, 25, 50, 75, 100)) if isinstance(levels, dict) else levels

    options = {a: [float(fixed[a])] if a in fixed else sorted({float(current.get(a, 0.0)), *map(float, levels_of(a))}) for a in ACTUATORS}
    want = []
    for combo in itertools.product(*(options[a] for a in ACTUATORS)):
        clamped = clamp_setpoints(dict(zip(ACTUATORS, combo)), current, lim, dt_s)
        if clamped not in want:
            want.append(clamped)
    grid = [dict(zip(ACTUATORS, row)) for row in candidate_plans(current, lim, dt_s, levels=levels, fixed=fixed).tolist()]
    assert grid == want
