"""The controller core, as production runs it, with fake forecasters: no Ray, no trained model.

Safety properties (every setpoint within limits and rates whatever the forecaster answers; any
failure falls back to the thermostat with the reason; commands expire) and behaviour (heats when
cold, vents when hot, idles in band; learns a forecast bias).
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.config import Limits, Settings
from app.contracts.command import ModelRef
from app.contracts.vocabulary import ACTUATORS, forecast_key, plan_column
from app.control.core import Controller, ControlPolicy, GreenhouseState, ModelForecaster

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=timezone.utc)
REF = ModelRef(name="toy", version="1")
FREE = Limits(vent_rate_pct_per_min=100, heat_rate_pct_per_min=100, screen_rate_pct_per_min=100)


def state(air_temp_c=20.0, outside_c=10.0, *, age_s=60.0, solar=300.0, positions=None) -> GreenhouseState:
    feats = {"ts": NOW - timedelta(seconds=age_s), "air_temp_c": air_temp_c, "rh_pct": 70.0, "outside_temp_c": outside_c, "solar_w_m2": solar}
    feats.update(positions or {a: 0.0 for a in ACTUATORS})
    return GreenhouseState("gh-01", feats)


def toy(horizons=(15, 60), bias_c=0.0, answer=None) -> ModelForecaster:
    """A physical toy over the controller's own model inputs: heat warms, vents pull toward
    outside (``answer`` replaces the forecasts, e.g. with garbage)."""
    keys = tuple(forecast_key(v, h) for v in ("air_temp_c", "rh_pct") for h in horizons)

    def predict(matrix, columns, wanted):
        col = {c: matrix[:, i] for i, c in enumerate(columns)}
        out = {}
        for h in wanted or horizons:
            temp = col["air_temp_c"] + 0.06 * col[plan_column("heat_pct", h)] + 0.01 * col[plan_column("vent_pct", h)] * (col["outside_temp_c"] - col["air_temp_c"])
            out[forecast_key("air_temp_c", h)], out[forecast_key("rh_pct", h)] = temp + bias_c, np.full(len(matrix), 70.0)
        values = np.column_stack([out[k] for k in keys if k in out])
        return values if answer is None else answer(values)

    return ModelForecaster(REF, ("air_temp_c", "outside_temp_c"), tuple(horizons), keys, predict)


def controller(limits=FREE, **kw) -> Controller:
    return Controller(ControlPolicy(limits=limits, **kw))


def test_heats_when_cold_vents_when_hot_and_idles_in_band():
    cold = controller().decide_sync(state(14.0, 5.0), toy(), NOW)
    assert cold.mode == "mpc" and cold.setpoints["heat_pct"] > 50 and cold.setpoints["vent_pct"] == 0
    hot = controller().decide_sync(state(29.0, 20.0), toy(), NOW)
    assert hot.setpoints["vent_pct"] >= 50 and hot.setpoints["heat_pct"] == 0
    fine = controller().decide_sync(state(21.0, 10.0), toy(), NOW)
    assert fine.mode == "mpc" and fine.setpoints["heat_pct"] == 0 and fine.forecast


def test_a_warmer_forecast_never_asks_for_more_heat():
    heats = [controller().decide_sync(state(t, 5.0), toy(), NOW).setpoints["heat_pct"] for t in np.arange(12.0, 24.0, 0.5)]
    assert all(a >= b for a, b in zip(heats, heats[1:]))


def test_the_command_carries_the_decision_expires_and_names_the_model():
    d = controller(command_ttl_s=120).decide_sync(state(14.0), toy(), NOW, request_id="r1")
    c = d.command
    assert c.valid_until - c.issued_at == timedelta(seconds=120) and c.issued_at == NOW and c.is_expired(NOW + timedelta(seconds=120))
    assert c.setpoints.model_dump() == d.setpoints and c.model == REF and c.reason["mode"] == "mpc" and c.reason["forecast"] == d.forecast
    assert controller().decide_sync(state(14.0), toy(), NOW, request_id="r1").command.command_id == c.command_id  # a retry is the same command


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("raises", "model unavailable: RuntimeError: boom"),
        ("nan", "model unavailable: ValueError: no candidate has a finite forecast"),
        ("wrong_shape", "model unavailable: ValueError"),
        ("stale", "data stale: newest step is 3600 s old"),
        ("no_model", "registry down"),
    ],
)
def test_any_failure_falls_back_to_the_thermostat_and_says_why(case, why):
    def boom(values):
        raise RuntimeError("boom")

    answers = {"raises": boom, "nan": lambda v: np.full_like(v, math.nan), "wrong_shape": lambda v: v[:1]}
    forecaster = None if case == "no_model" else toy(answer=answers.get(case))
    d = controller().decide_sync(state(14.0, age_s=3600 if case == "stale" else 60), forecaster, NOW, unavailable="registry down")
    assert d.mode == "thermostat" and d.reason.startswith(why) and d.command.model.name == "thermostat"
    assert d.setpoints["heat_pct"] == 100.0  # 14 C: the thermostat heats fully
    assert (d.model_error is not None) == (case in answers)


def test_an_asynchronous_forecaster_decides_alike_and_a_failing_one_falls_back():
    sync = toy()

    async def predict(*args):
        return sync.predict(*args)

    async def broken(*args):
        raise ConnectionError("replica gone")

    a = asyncio.run(controller().decide(state(14.0), ModelForecaster(REF, sync.feature_columns, sync.horizons_min, sync.output_keys, predict), NOW))
    assert a.setpoints == controller().decide_sync(state(14.0), sync, NOW).setpoints
    b = asyncio.run(controller().decide(state(14.0), ModelForecaster(REF, sync.feature_columns, sync.horizons_min, sync.output_keys, broken), NOW))
    assert b.mode == "thermostat" and "ConnectionError: replica gone" in b.reason
    with pytest.raises(TypeError):
        controller().decide_sync(state(14.0), ModelForecaster(REF, sync.feature_columns, sync.horizons_min, sync.output_keys, predict), NOW)


anything = st.one_of(st.just(math.nan), st.just(math.inf), st.just(-math.inf), st.floats(-1e6, 1e6))


@settings(max_examples=150, deadline=None)
@given(
    garbage=st.lists(anything, min_size=1, max_size=8),
    temp=st.floats(-10, 45),
    positions=st.fixed_dictionaries({a: st.floats(-20, 130) for a in ACTUATORS}),
    dt_s=st.sampled_from([60.0, 300.0, 900.0]),
    rates=st.tuples(st.floats(0, 30), st.floats(0, 30), st.floats(0, 30)),
)
def test_no_setpoint_ever_leaves_the_limits_or_the_rates_whatever_the_forecaster_says(garbage, temp, positions, dt_s, rates):
    limits = Limits(vent_max_pct=80, heat_min_pct=5, screen_max_pct=90, vent_rate_pct_per_min=rates[0], heat_rate_pct_per_min=rates[1], screen_rate_pct_per_min=rates[2])

    def answer(values):
        return np.resize(np.array(garbage), values.shape)

    d = controller(limits, interval_s=dt_s).decide_sync(state(temp, positions=positions), toy(answer=answer), NOW)
    for a in ACTUATORS:
        low, high = limits.bounds(a)
        assert low <= d.setpoints[a] <= high and math.isfinite(d.setpoints[a])
        assert abs(d.setpoints[a] - min(high, max(low, positions[a]))) <= limits.rate(a) * dt_s / 60 + 1e-3


def test_a_constant_forecast_bias_is_learned_and_corrected():
    ctl, biased = controller(), toy(horizons=(5,), bias_c=-1.0)  # always 1 K too cold
    t = NOW
    for _ in range(40):
        d = ctl.decide_sync(GreenhouseState("gh-01", {**state(19.0).features, "ts": t}), biased, t)
        t += timedelta(minutes=5)
    assert d.corrections_c[5] == pytest.approx(1.0, abs=0.1)
    assert d.setpoints["heat_pct"] == 0.0 and d.forecast[forecast_key("air_temp_c", 5)] == pytest.approx(19.0, abs=0.1)  # corrected back to what happens


def test_the_policy_comes_from_settings():
    s = Settings(control={"interval_s": 120, "band_low_c": 16, "limits": {"heat_max_pct": 70}})
    policy = ControlPolicy.from_settings(s)
    assert policy.interval_s == 120 and policy.targets.band_low_c == 16 and policy.limits.heat_max_pct == 70
    assert Controller(policy).decide_sync(state(5.0), None, NOW, unavailable="x").setpoints["heat_pct"] <= 70


def edged_toy(half_width_c=0.2, edge=None, horizons=(5, 15)) -> ModelForecaster:
    """:func:`toy` with interval edges after its forecasts, as a model with intervals answers
    (``edge`` replaces the edges, e.g. with garbage)."""
    from app.contracts.vocabulary import interval_key

    plain = toy(horizons)
    edges = tuple(interval_key("air_temp_c", h, side) for h in horizons for side in ("low", "high"))

    def predict(matrix, columns, wanted):
        values = plain.predict(matrix, columns, wanted)
        hs = list(wanted or horizons)
        temps = values[:, : len(hs)]
        bounds = np.column_stack([c for i in range(len(hs)) for c in (temps[:, i] - half_width_c, temps[:, i] + half_width_c)])
        return np.column_stack([values, bounds if edge is None else edge(bounds)])

    return ModelForecaster(REF, plain.feature_columns, plain.horizons_min, plain.output_keys + edges, predict)


def test_the_mpc_takes_its_margin_from_the_interval_and_settles_only_point_forecasts():
    from dataclasses import replace

    from app.control.policy import Targets

    policy = ControlPolicy(limits=FREE, targets=Targets(margin_c=0.45, edge_margin_c=0.0))
    cold = state(17.0, 5.0)
    fixed = Controller(policy).decide_sync(cold, toy((5, 15)), NOW).setpoints["heat_pct"]
    sure = Controller(policy).decide_sync(cold, edged_toy(0.05), NOW).setpoints["heat_pct"]
    unsure = Controller(policy).decide_sync(cold, edged_toy(1.0), NOW).setpoints["heat_pct"]
    assert sure < fixed < unsure
    ctl = Controller(replace(policy, targets=Targets(edge_margin_c=0.0)))
    t = NOW
    for _ in range(30):  # the forecasts of +5 and +15 min settle against the measurement, as without edges
        d = ctl.decide_sync(GreenhouseState("gh-01", {**state(19.0).features, "ts": t}), edged_toy(0.5), t)
        t += timedelta(minutes=5)
    assert set(d.corrections_c) == {5, 15} and all(abs(v) < 0.5 for v in d.corrections_c.values())  # the edges are not errors
    # the toy is always right: closed loop, the edge the decision used has closed onto the forecast
    assert d.forecast["air_temp_c_15min_low"] == d.forecast["air_temp_c_15min"] and ctl.calibration is not None and ctl.calibration.scales("toy/1|gh-01") == {5: 0.0, 15: 0.0}
    raw = Controller(replace(policy, edge_miss_rate=None)).decide_sync(state(19.0), edged_toy(0.5), NOW)
    assert raw.forecast["air_temp_c_15min_low"] == pytest.approx(raw.forecast["air_temp_c_15min"] - 0.5)  # uncalibrated: the model's edge


def test_the_edge_calibration_holds_all_but_the_miss_rate_of_recent_outcomes():
    from app.control.edge_calibration import EdgeCalibration

    cal = EdgeCalibration(miss_rate=0.1, window=50, min_scores=10)
    keys = ["air_temp_c_15min", "air_temp_c_15min_low", "rh_pct_15min"]
    rng = np.random.default_rng(0)
    t = NOW
    for i in range(200):  # forecasts of 20.0 with a 1 K lower half; the outcomes scatter 0.2 K around 20
        cal.record("m|gh", t, keys, [20.0, 19.0, 70.0])
        t += timedelta(minutes=5)
        cal.observe("m|gh", t + timedelta(minutes=10), 20.0 + 0.2 * rng.standard_normal())
        if i == 5:
            assert cal.scales("m|gh") == {}  # too few scores yet: the model's edge
    assert cal.scales("m|gh")[15] == pytest.approx(0.2 * 1.2816, abs=0.12)  # the 90 % quantile of 0.2 K normal errors, in half-widths
    cal.observe("m|gh", t + timedelta(hours=2), math.nan)  # a late or broken measurement scores nothing
    assert len(cal._scores["m|gh"][15]) == 50
    with pytest.raises(ValueError):
        EdgeCalibration(miss_rate=0.0)


@settings(max_examples=100, deadline=None)
@given(
    garbage=st.lists(anything, min_size=1, max_size=8),
    temp=st.floats(-10, 45),
    solar=st.floats(0, 1000),
    positions=st.fixed_dictionaries({a: st.floats(-20, 130) for a in ACTUATORS}),
    rates=st.tuples(st.floats(0, 30), st.floats(0, 30), st.floats(0, 30)),
)
def test_no_setpoint_leaves_the_limits_whatever_the_interval_edges_say(garbage, temp, solar, positions, rates):
    limits = Limits(vent_max_pct=80, heat_min_pct=5, screen_max_pct=90, vent_rate_pct_per_min=rates[0], heat_rate_pct_per_min=rates[1], screen_rate_pct_per_min=rates[2])
    policy = ControlPolicy(limits=limits, screen_insulate_below_solar_w_m2=250.0)
    d = Controller(policy).decide_sync(state(temp, 2.0, solar=solar, positions=positions), edged_toy(edge=lambda b: np.resize(np.array(garbage), b.shape)), NOW)
    assert d.mode == "mpc"  # broken edges never break the decision: the fixed margin stands in
    for a in ACTUATORS:
        low, high = limits.bounds(a)
        assert low <= d.setpoints[a] <= high and math.isfinite(d.setpoints[a])
        assert abs(d.setpoints[a] - min(high, max(low, positions[a]))) <= limits.rate(a) * 300 / 60 + 1e-3


def test_on_a_cold_dull_morning_the_mpc_may_keep_the_screen_closed_when_the_model_says_it_saves_heat():
    from app.contracts.vocabulary import plan_column

    keys = tuple(forecast_key(v, h) for v in ("air_temp_c", "rh_pct") for h in (15,))

    def predict(matrix, columns, wanted):
        col = {c: matrix[:, i] for i, c in enumerate(columns)}
        # heat warms; an open screen loses 1.5 K over 15 min on this cold morning
        temp = col["air_temp_c"] + 0.03 * col[plan_column("heat_pct", 15)] - 1.5 * (1 - col[plan_column("screen_pct", 15)] / 100)
        return np.column_stack([temp, np.full(len(matrix), 70.0)])

    model = ModelForecaster(REF, ("air_temp_c", "outside_temp_c"), (15,), keys, predict)
    closed = {"vent_pct": 0.0, "heat_pct": 40.0, "screen_pct": 100.0}
    morning = state(18.0, 0.0, solar=120.0, positions=closed)
    follows = Controller(ControlPolicy(limits=FREE)).decide_sync(morning, model, NOW)
    assert follows.setpoints["screen_pct"] == 0.0 and follows.setpoints["heat_pct"] > 40  # the rule opens it above 50 W/m2
    insulates = Controller(ControlPolicy(limits=FREE, screen_insulate_below_solar_w_m2=250.0)).decide_sync(morning, model, NOW)
    assert insulates.setpoints["screen_pct"] == 100.0 and insulates.setpoints["heat_pct"] < follows.setpoints["heat_pct"]
    assert "screen kept closed" in insulates.reason
    bright = Controller(ControlPolicy(limits=FREE, screen_insulate_below_solar_w_m2=250.0)).decide_sync(state(18.0, 0.0, solar=400.0, positions=closed), model, NOW)
    assert bright.setpoints["screen_pct"] == 0.0  # beyond the light budget the rule decides


def test_readings_count_as_stale_only_past_twice_the_models_step():
    """A 15-minute logger's newest step is up to 15 minutes old: its model still decides then."""
    from dataclasses import replace

    slow = replace(toy(), step_s=900.0)
    assert controller().decide_sync(state(14.0, age_s=1200), slow, NOW).mode == "mpc"
    late = controller().decide_sync(state(14.0, age_s=2000), slow, NOW)
    assert late.mode != "mpc" and "data stale: newest step is 2000 s old" in late.reason
    assert "data stale" in controller().decide_sync(state(14.0, age_s=1200), toy(), NOW).reason  # a 1-min model: stale past 900 s
