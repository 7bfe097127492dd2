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


# ----------------------------------------------------------------------------- interval edges
EDGE_KEYS = ["air_temp_c_15min", "rh_pct_15min", "air_temp_c_15min_low", "air_temp_c_15min_high"]


def heat_grid(limits=None):
    import numpy as np

    from app.control.policy import candidate_plans

    current = {"vent_pct": 0.0, "heat_pct": 0.0, "screen_pct": 0.0}
    lim = limits or Limits(heat_rate_pct_per_min=100)
    plans = candidate_plans(current, lim, 300, levels={"heat_pct": range(0, 101, 5), "vent_pct": (0,)}, fixed={"screen_pct": 0.0})
    return np, current, lim, plans


def edged(np, plans, half_width_c, low_shift=None):
    """17.5 C + 0.02 K per heat-percent, humidity 70 %, and an interval of ``half_width_c`` each side."""
    point = 17.5 + 0.02 * plans[:, 1]
    low = point - half_width_c if low_shift is None else low_shift(point)
    return np.column_stack([point, np.full(len(plans), 70.0), low, point + half_width_c])


def test_interval_keys_are_not_temperature_forecasts_and_each_forecast_finds_its_edges():
    from app.control.policy import cost_columns

    cols = cost_columns(("air_temp_c_5min", "air_temp_c_15min", "rh_pct_15min", "air_temp_c_15min_low", "air_temp_c_15min_high", "air_temp_c_60min_low"), 15)
    assert cols.temp.tolist() == [0, 1] and cols.rh.tolist() == [2]
    assert cols.low.tolist() == [-1, 3] and cols.high.tolist() == [-1, 4]  # the 5-min forecast has no edges


def test_the_margin_comes_from_the_lower_edge_more_heat_when_unsure_less_when_sure():
    from app.control.policy import pick_best

    np, current, lim, plans = heat_grid()
    targets = Targets(margin_c=0.45, edge_margin_c=0.0)

    def heat(half_width_c):
        return pick_best(plans, edged(np, plans, half_width_c), EDGE_KEYS, current, limits=lim, targets=targets).setpoints["heat_pct"]

    fixed = pick_best(plans, edged(np, plans, 0.0)[:, :2], EDGE_KEYS[:2], current, limits=lim, targets=targets).setpoints["heat_pct"]
    assert fixed == 50.0  # no edges: 17.5 + 0.02 * 50 >= 18.45
    assert heat(0.1) == 30.0 and heat(0.8) == 65.0  # sure: 18.1 at the point; unsure: 18.8
    widths = [heat(w) for w in (0.0, 0.1, 0.2, 0.4, 0.8, 1.2)]
    assert widths == sorted(widths)  # a wider interval never asks for less heat
    capped = pick_best(plans, edged(np, plans, 50.0), EDGE_KEYS, current, limits=lim, targets=Targets(max_edge_margin_c=1.0))
    assert capped.setpoints["heat_pct"] == 75.0  # a broken interval counts as at most 1 K


def test_an_edge_above_its_forecast_or_not_finite_falls_back_safely():
    import math

    from app.control.policy import pick_best

    np, current, lim, plans = heat_grid()
    targets = Targets(margin_c=0.45)
    fixed = pick_best(plans, edged(np, plans, 0.0)[:, :2], EDGE_KEYS[:2], current, limits=lim, targets=targets)
    for bad in (math.nan, math.inf, -math.inf):
        d = pick_best(plans, edged(np, plans, 0.3, lambda p, bad=bad: np.full_like(p, bad)), EDGE_KEYS, current, limits=lim, targets=targets)
        assert d.setpoints == fixed.setpoints and all(math.isfinite(v) for v in d.forecast.values())
    crossed = pick_best(plans, edged(np, plans, 0.3, lambda p: p + 1.0), EDGE_KEYS, current, limits=lim, targets=targets)
    assert crossed.setpoints["heat_pct"] == 25.0  # a "low" edge above the forecast: no margin, never a negative one


def test_the_edge_scale_keeps_part_of_the_interval():
    from dataclasses import replace

    from app.control.policy import pick_best

    np, current, lim, plans = heat_grid()
    full = Targets(edge_margin_c=0.0)
    heats = [pick_best(plans, edged(np, plans, 0.8), EDGE_KEYS, current, limits=lim, targets=replace(full, edge_scale=s)).setpoints["heat_pct"] for s in (0.0, 0.5, 1.0)]
    assert heats == [25.0, 45.0, 65.0]


edge_value = st.one_of(st.just(float("nan")), st.just(float("inf")), st.just(float("-inf")), st.floats(-1e6, 1e6), st.floats(10, 30))


@settings(max_examples=200, deadline=None)
@given(
    lows=st.lists(edge_value, min_size=1, max_size=12),
    highs=st.lists(edge_value, min_size=1, max_size=12),
    points=st.lists(st.floats(5, 40), min_size=1, max_size=12),
    current=st.fixed_dictionaries({a: st.floats(-20, 130) for a in ACTS}),
    limits=limits_st,
    targets=st.builds(Targets, margin_c=st.floats(0, 3), edge_margin_c=st.floats(0, 3), edge_scale=st.floats(0, 2), max_edge_margin_c=st.floats(0.01, 5)),
    dt_s=st.sampled_from([60.0, 300.0, 900.0]),
)
def test_mpc_decisions_never_leave_the_limits_under_the_quantile_margin(lows, highs, points, current, limits, targets, dt_s):
    """Whatever the interval edges say (NaN, inf, crossed, absurd), the chosen setpoints are within
    the safety bounds and the rate limits, and only finite forecasts are reported."""
    import math

    import numpy as np

    from app.control.policy import CostContext, Weights, candidate_plans, pick_best

    plans = candidate_plans(current, limits, dt_s, levels={"heat_pct": (0, 50, 100), "vent_pct": (0, 50)})
    n = len(plans)
    forecasts = np.column_stack([np.resize(points, n), np.full(n, 80.0), np.resize(lows, n), np.resize(highs, n)])
    weights = Weights(vent_loss_per_pct_k=0.001, reversal_per_pct=0.01)
    context = CostContext(20.0, 5.0, {"heat_pct": -10.0, "vent_pct": float("nan")})
    d = pick_best(plans, forecasts, EDGE_KEYS, current, limits=limits, targets=targets, weights=weights, dt_s=dt_s, context=context)
    for a in ACTS:
        low, high = limits.bounds(a)
        assert low - 1e-6 <= d.setpoints[a] <= high + 1e-6 and math.isfinite(d.setpoints[a])
        assert abs(d.setpoints[a] - min(high, max(low, current[a]))) <= limits.rate(a) * dt_s / 60 + 1e-3
    assert all(math.isfinite(v) for v in d.forecast.values())


# ----------------------------------------------------------------------------- smoothness and riding the sun
def test_a_reversal_costs_more_than_a_move_the_same_way_and_damps_the_flip():
    import numpy as np

    from app.control.policy import CostContext, Weights, candidate_costs, pick_best

    current = {"vent_pct": 0.0, "heat_pct": 50.0, "screen_pct": 0.0}
    plans = np.array([[0.0, 40.0, 0.0], [0.0, 60.0, 0.0], [0.0, 50.0, 0.0]])
    forecasts = np.full((3, 1), 20.0)
    rising = CostContext(20.0, 20.0, {"heat_pct": 20.0})
    w = Weights(reversal_per_pct=0.05)
    costs = candidate_costs(plans, forecasts, ["air_temp_c_15min"], current, Targets(), w, None, rising)
    plain = candidate_costs(plans, forecasts, ["air_temp_c_15min"], current, Targets(), Weights(), None, rising)
    assert costs[0] - plain[0] == 0.05 * 10 and costs[1] == plain[1] and costs[2] == plain[2]  # only the move down pays
    # a small energy gain (10 % less heat) no longer justifies reversing a rising heat
    assert pick_best(plans, forecasts, ["air_temp_c_15min"], current, limits=Limits(), targets=Targets(), context=rising).setpoints["heat_pct"] == 40.0
    assert pick_best(plans, forecasts, ["air_temp_c_15min"], current, limits=Limits(), targets=Targets(), weights=w, context=rising).setpoints["heat_pct"] == 50.0
    # a movement of under a percent is no direction
    still = candidate_costs(plans, forecasts, ["air_temp_c_15min"], current, Targets(), w, None, CostContext(20.0, 20.0, {"heat_pct": 0.5}))
    np.testing.assert_allclose(still, plain)


def test_ventilation_that_throws_warm_air_away_costs_so_the_sun_is_ridden_to_the_top_of_the_band():
    import numpy as np

    from app.control.policy import CostContext, Weights, pick_best

    current = {"vent_pct": 25.0, "heat_pct": 0.0, "screen_pct": 0.0}
    plans = np.array([[0.0, 0.0, 0.0], [25.0, 0.0, 0.0], [50.0, 0.0, 0.0]])
    keys = ["air_temp_c_15min"]
    lim = Limits(vent_rate_pct_per_min=100)
    warm_winter = CostContext(air_temp_c=23.0, outside_temp_c=5.0)
    w = Weights(vent_loss_per_pct_k=0.001)
    in_band = np.array([[24.0], [23.0], [22.0]])  # the sun warms; any vent keeps it in band
    assert pick_best(plans, in_band, keys, current, limits=lim, targets=Targets(), context=warm_winter).setpoints["vent_pct"] == 25.0  # travel alone: stays open
    assert pick_best(plans, in_band, keys, current, limits=lim, targets=Targets(), weights=w, context=warm_winter).setpoints["vent_pct"] == 0.0  # keeps the heat
    too_hot = np.array([[25.6], [24.9], [24.0]])
    assert pick_best(plans, too_hot, keys, current, limits=lim, targets=Targets(), weights=w, context=warm_winter).setpoints["vent_pct"] == 25.0  # the band's top still wins
    summer = CostContext(air_temp_c=23.0, outside_temp_c=26.0)  # venting brings no heat loss when it is warmer outside
    assert pick_best(plans, in_band, keys, current, limits=lim, targets=Targets(), weights=w, context=summer).setpoints["vent_pct"] == 25.0
    mild = CostContext(air_temp_c=23.0, outside_temp_c=19.0)  # above the band's edge: no heating pays the vented heat back
    assert pick_best(plans, in_band, keys, current, limits=lim, targets=Targets(), weights=w, context=mild).setpoints["vent_pct"] == 25.0
    assert pick_best(plans, in_band, keys, current, limits=lim, targets=Targets(), weights=w, context=summer).setpoints["vent_pct"] == 25.0


# ----------------------------------------------------------------------------- the rule-based controller
def test_the_default_rule_tuning_is_the_old_thermostat_and_a_tuning_moves_its_bands():
    from app.control.policy import RuleTuning, ScreenRule, screen_rule

    free = Limits(heat_rate_pct_per_min=100, vent_rate_pct_per_min=100)
    now = {"vent_pct": 0.0, "heat_pct": 0.0, "screen_pct": 0.0}
    for temp, heat, vent in ((17.0, 100.0, 0.0), (18.75, 50.0, 0.0), (19.5, 0.0, 0.0), (25.5, 0.0, 50.0), (27.0, 0.0, 100.0)):
        d = thermostat(temp, 70.0, now, limits=free, targets=Targets())
        assert (d.setpoints["heat_pct"], d.setpoints["vent_pct"]) == (heat, vent)
    tight = RuleTuning(heat_full_offset_c=0.2, heat_band_c=0.5, vent_offset_c=-0.5, vent_band_c=1.0)
    assert thermostat(18.2, 70.0, now, limits=free, targets=Targets(), tuning=tight).setpoints["heat_pct"] == 100.0
    assert thermostat(18.45, 70.0, now, limits=free, targets=Targets(), tuning=tight).setpoints["heat_pct"] == 50.0
    assert thermostat(24.75, 70.0, now, limits=free, targets=Targets(), tuning=tight).setpoints["vent_pct"] == 25.0
    assert thermostat(21.0, 95.0, now, limits=free, targets=Targets(), tuning=RuleTuning(rh_vent_max_pct=20.0)).setpoints["vent_pct"] == 20.0
    with pytest.raises(ValueError):
        RuleTuning(heat_band_c=0.0)
    rule = ScreenRule(dark_below_solar_w_m2=150.0, shade_above_solar_w_m2=450.0, shade_pct=100.0)
    assert [rule.setpoint_pct(2.0, s) for s in (100.0, 200.0, 500.0)] == [100.0, 0.0, 100.0]
    assert [screen_rule(2.0, s) for s in (30.0, 100.0, 800.0)] == [ScreenRule().setpoint_pct(2.0, s) for s in (30.0, 100.0, 800.0)] == [100.0, 0.0, 60.0]


@settings(max_examples=100, deadline=None)
@given(points=st.lists(st.floats(-50, 60), min_size=1, max_size=6), lows=st.lists(edge_value, min_size=1, max_size=6), scale=st.one_of(st.floats(-5, 5), st.just(float("nan"))))
def test_scaled_edges_stay_at_or_below_their_forecast_and_broken_ones_stay_broken(points, lows, scale):
    import math

    import numpy as np

    from app.control.policy import scale_edges

    n = max(len(points), len(lows))
    forecasts = np.column_stack([np.resize(points, n), np.resize(lows, n), np.full(n, 70.0)])
    keys = ["air_temp_c_15min", "air_temp_c_15min_low", "rh_pct_15min"]
    out = scale_edges(forecasts, keys, {15: scale, 60: 2.0})
    np.testing.assert_array_equal(out[:, [0, 2]], forecasts[:, [0, 2]])  # only the edge moves
    for (point, low), new in zip(forecasts[:, :2], out[:, 1]):
        if not math.isfinite(low):
            assert new == low or (math.isnan(new) and math.isnan(low))  # a broken edge stays broken: the fixed margin stands in
        elif not math.isfinite(scale):
            assert new == low
        else:
            assert new <= point + 1e-9 and math.isclose(point - new, max(0.0, scale) * max(0.0, point - low), rel_tol=1e-9, abs_tol=1e-6)


def test_the_cost_counts_the_horizons_heating_can_move_up_to_the_plans_reach():
    from app.control.policy import cost_horizons

    assert cost_horizons([5, 15, 30, 60], 15) == [5, 15]
    assert cost_horizons([5, 15, 30, 60], 15, 10) == [15]  # the 5-min forecast: the pipes have not answered yet
    assert cost_horizons([5, 15, 30, 60], None, 10) == [15, 30, 60]
    assert cost_horizons([5, 15], 5, 10) == [15]  # the shortest counted always counts
    assert cost_horizons([5], 15, 10) == [5]  # a model without a longer horizon: its longest
    assert cost_horizons([], 15, 10) == []


def test_clamped_actuators_names_what_the_limits_changed_and_only_that():
    from app.control.policy import clamped_actuators

    chosen = {"vent_pct": 10.0, "heat_pct": 50.0, "screen_pct": 0.0}
    assert clamped_actuators({"vent_pct": 10.0004, "heat_pct": 80.0, "screen_pct": float("nan")}, chosen) == ("heat_pct",)
    assert clamped_actuators({}, chosen) == ()


def test_a_thermostat_held_back_by_the_rate_limit_says_which_actuator_was_clamped():
    limits = Limits()
    cold = thermostat(5.0, 70.0, {"vent_pct": 0.0, "heat_pct": 0.0, "screen_pct": 0.0}, limits=limits, targets=Targets(), dt_s=60.0)
    assert cold.setpoints["heat_pct"] < 100.0  # one minute of travel cannot reach full heat
    assert cold.clamped == ("heat_pct",)
    settled = thermostat(5.0, 70.0, {"vent_pct": 0.0, "heat_pct": 100.0, "screen_pct": 0.0}, limits=limits, targets=Targets(), dt_s=60.0)
    assert settled.clamped == ()
