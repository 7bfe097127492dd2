"""Model inputs for candidates (DataFrame and numpy forms agree) and the online window's cache and waits."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from app.contracts.reading import validate_reading
from app.control.online import OnlineWindow, reading_to_row
from app.control.planner import candidate_columns, candidate_matrix
from app.preprocess.features import FeatureParams, latest_feature_row
from app.sim.fleet import FleetSimulator

START = datetime(2026, 3, 10, tzinfo=timezone.utc)


def test_candidate_matrix_repeats_the_features_and_holds_each_plan_over_every_horizon():
    features = {"air_temp_c": 19.5, "rh_pct": 70, "outside_temp_c": 4.0, "vent_pct": 10.0, "heat_pct": 35.0, "screen_pct": 0.0, "ts": START}
    columns = ["air_temp_c", "rh_pct", "outside_temp_c", "vent_pct", "heat_pct", "screen_pct"]
    candidates = [{"vent_pct": v, "heat_pct": h, "screen_pct": 100.0} for v in (0.0, 20.0) for h in (0.0, 50.0, 100.0)]
    matrix, names = candidate_matrix(features, candidates, columns, [15, 60])
    assert names == candidate_columns(columns, [15, 60]) == [*columns, *(f"plan_{a}_{h}min" for h in (15, 60) for a in ("vent_pct", "heat_pct", "screen_pct"))]
    assert matrix.dtype == np.float64 and matrix.shape == (len(candidates), len(names))
    for row, cand in zip(matrix, candidates):
        got = dict(zip(names, row))
        assert all(got[c] == float(features[c]) for c in columns)
        assert all(got[f"plan_{a}_{h}min"] == cand[a] for a in cand for h in (15, 60))
    plans = np.array([[c["vent_pct"], c["heat_pct"], c["screen_pct"]] for c in candidates])
    np.testing.assert_array_equal(candidate_matrix(features, plans, columns, [15, 60])[0], matrix)  # a plan matrix: the same
    assert candidate_matrix(features, [], columns, [15])[0].shape == (0, 9)


def readings(minutes: int, start: datetime = START):
    fleet = FleetSimulator(1, start, step_s=60, seed=7)
    return [validate_reading(r, max_future_skew_s=10 * 365 * 86_400.0) for step in fleet.iter_steps(minutes * 60) for r in step]


def same(a: dict, b: dict) -> bool:
    """Equal feature dicts (NaN equals NaN: plans and targets are unknown at the latest step)."""
    return a.keys() == b.keys() and all(a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for k in a)


def test_features_are_cached_until_new_readings_and_match_a_fresh_build():
    window = OnlineWindow(120)
    first, later = readings(90), readings(95)
    window.add(first)
    params = FeatureParams(horizons_min=(15, 60))
    gh = first[0].greenhouse_id
    feats = window.features(gh, params)
    assert feats is not None and same(feats, latest_feature_row(window.rows(gh), params))
    assert window.features(gh, params) is feats  # cached: nothing copied or rebuilt
    assert window.builds == 1
    newest = window.latest_ts(gh)
    assert window.features(gh, params, newest + timedelta(hours=1)) is feats  # as_of after the window: the same
    cut = newest - timedelta(minutes=10)
    earlier = window.features(gh, params, cut)
    assert earlier["ts"] <= cut and same(earlier, latest_feature_row(window.rows(gh, cut), params))
    assert window.features(gh, params, cut) is earlier
    window.add([r for r in later if r.ts > newest])  # five more minutes
    fresh = window.features(gh, params)
    assert fresh is not feats and fresh["ts"] > feats["ts"]
    assert window.builds == 3  # the first build, the cut window's, the fresh one
    assert same(fresh, latest_feature_row(window.rows(gh), params))
    assert window.features("gh-none", params) is None


def test_on_reaching_fires_once_when_the_reading_arrives_and_can_be_cancelled():
    window = OnlineWindow(120)
    batch = readings(10)
    gh = batch[0].greenhouse_id
    window.add(batch[: len(batch) // 2])
    calls: list[str] = []
    target = batch[-1].ts
    window.on_reaching(gh, target, lambda: calls.append("late"))
    cancel = window.on_reaching(gh, target, lambda: calls.append("cancelled"))
    window.on_reaching(gh, batch[0].ts, lambda: calls.append("now"))  # already there: called at once
    assert calls == ["now"]
    cancel()
    window.on_reaching(gh, target, lambda: 1 / 0)  # a failing waiter does not break add()
    window.add(batch[len(batch) // 2 :])
    assert calls == ["now", "late"]
    window.add(readings(1, target + timedelta(minutes=1)))
    assert calls == ["now", "late"] and window.records == len(batch) + len(readings(1))
    assert reading_to_row(batch[0])["ts"] == batch[0].ts


def test_candidate_plans_are_remembered_read_only_and_follow_the_levels():
    from app.config import Limits
    from app.control.policy import candidate_plans

    limits = Limits()
    for current in ({"vent_pct": 0.0, "heat_pct": 35.0, "screen_pct": 100.0}, {"vent_pct": 12.5, "heat_pct": 0, "screen_pct": 0}):
        for fixed in (None, {"screen_pct": 60.0}):
            first = candidate_plans(current, limits, 300, levels=(0, 10, 50, 100), fixed=fixed)
            again = candidate_plans(dict(reversed(list(current.items()))), limits, 300.0, levels=[0.0, 10.0, 50.0, 100.0], fixed=fixed)
            assert again is first  # remembered
            assert not first.flags.writeable  # shared, so nobody may change it
            assert [current["vent_pct"], current["heat_pct"], fixed["screen_pct"] if fixed else current["screen_pct"]] in first.tolist()
    per_actuator = candidate_plans({"heat_pct": 0.0}, limits, 300, levels={"heat_pct": (0, 50), "vent_pct": (0,)}, fixed={"screen_pct": 0.0})
    assert per_actuator.tolist() == [[0.0, 0.0, 0.0], [0.0, 50.0, 0.0]]


def test_plan_weights_reproduce_the_mean_of_a_lagged_and_switched_trajectory():
    from app.control.planner import plan_weights

    tau = {"heat_pct": 300.0, "screen_pct": 180.0}
    w = plan_weights((5, 15), tau, {"screen_pct": 5.0})
    assert w.shape == (2, 3, 3) and np.allclose(w.sum(axis=2), 1.0)
    # a step-by-step simulation of the same first-order lag gives the same means
    for i, h in enumerate((5, 15)):
        for j, (a, x0, s, s2) in enumerate((("vent_pct", 40.0, 10.0, 0.0), ("heat_pct", 20.0, 80.0, 0.0), ("screen_pct", 100.0, 100.0, 0.0))):
            x, path = x0, []
            for k in range(1, h + 1):
                target = s2 if (a == "screen_pct" and k > 5) else s
                r = np.exp(-60.0 / tau[a]) if a in tau else 0.0
                x = target + (x - target) * r
                path.append(x)
            assert w[i, j] @ np.array([x0, s, s2]) == pytest.approx(np.mean(path))
    assert plan_weights((15,)).tolist() == [[[0.0, 1.0, 0.0]] * 3]  # no lag, no schedule: the setpoint


def test_candidate_matrix_with_lags_and_a_scheduled_screen_feeds_the_mean_positions():
    from app.control.planner import plan_weights

    features = {"air_temp_c": 18.5, "vent_pct": 0.0, "heat_pct": 40.0, "screen_pct": 100.0}
    plans = np.array([[0.0, 0.0, 100.0], [0.0, 100.0, 100.0]])
    tau = {"heat_pct": 300.0, "vent_pct": 120.0, "screen_pct": 180.0}
    matrix, names = candidate_matrix(features, plans, ["air_temp_c"], [5, 15], tau, {"screen_pct": (0.0, 5.0)})
    got = [dict(zip(names, row)) for row in matrix]
    w = plan_weights((5, 15), tau, {"screen_pct": 5.0})
    assert got[1]["plan_heat_pct_5min"] == pytest.approx(w[0, 1, 0] * 40 + w[0, 1, 1] * 100)
    assert 40 < got[1]["plan_heat_pct_5min"] < got[1]["plan_heat_pct_15min"] < 100  # the pipes warm up slowly
    assert got[0]["plan_heat_pct_5min"] < 40
    assert got[0]["plan_screen_pct_5min"] == 100.0 and 0 < got[0]["plan_screen_pct_15min"] < 100  # opens after 5 min
    assert all(g["air_temp_c"] == 18.5 for g in got)


def test_screen_plan_sees_sunrise_coming_and_the_opening_margin_follows_it():
    from app.control.planner import screen_plan, targets_during
    from app.control.policy import Targets

    night = {"outside_temp_c": 3.0, "solar_w_m2": 20.0, "solar_w_m2_mean_15min": 19.0, "screen_pct": 100.0, "screen_pct_change_15min": 0.0}
    quiet = screen_plan(night, 300)
    assert quiet.setpoint_pct == 100.0 and quiet.scheduled is None and not quiet.opening
    dawn = {**night, "solar_w_m2": 46.0, "solar_w_m2_mean_15min": 39.0}  # +1 W/m2 per minute: 51 in 5 min
    soon = screen_plan(dawn, 300)
    assert soon.setpoint_pct == 100.0 and soon.scheduled == {"screen_pct": (0.0, 5.0)} and soon.opening
    opened = screen_plan({**dawn, "solar_w_m2": 60.0, "screen_pct": 30.0, "screen_pct_change_15min": -70.0}, 300)
    assert opened.setpoint_pct == 0.0 and opened.scheduled is None and opened.opening
    later = screen_plan({**dawn, "solar_w_m2": 200.0, "solar_w_m2_mean_15min": 190.0, "screen_pct": 0.0, "screen_pct_change_15min": 0.0}, 300)
    assert not later.opening
    base = Targets(margin_c=0.45)
    assert targets_during(base, soon, 0.5).margin_c == pytest.approx(0.95) and targets_during(base, later, 0.5) == base
    assert targets_during(base, soon, 0.0) == base


def test_the_window_trimmed_and_with_resent_readings_gives_trainings_features():
    """The arrays the window appends to and trims give what training's pandas function gives on
    the window's rows, chunk after chunk (resent readings: the first copy wins)."""
    import pandas as pd

    from app.preprocess.features import feature_columns, greenhouse_features

    window = OnlineWindow(70)
    params = FeatureParams(horizons_min=(15, 60))
    stream = readings(150)
    gh = stream[0].greenhouse_id
    checked, sent = 0, []
    for i in range(0, len(stream), 15):  # five minutes of three devices at a time
        chunk = stream[i : i + 15]
        window.add(chunk + chunk[:2])  # two readings sent twice
        sent += chunk + chunk[:2]
        cutoff = window.latest_ts(gh) - timedelta(minutes=70)
        assert window.rows(gh) == [reading_to_row(r) for r in sent if r.ts >= cutoff]  # what it keeps, in order
        got = window.features(gh, params)
        frame = greenhouse_features(pd.DataFrame(window.rows(gh)), params, training=False)
        if frame.empty:
            assert got is None
            continue
        want = frame.iloc[-1]
        assert got["ts"] == want["ts"].to_pydatetime()
        np.testing.assert_allclose([got[c] for c in feature_columns()], want[feature_columns()].to_numpy(float), rtol=1e-9, atol=1e-9)
        checked += 1
    rows = window.rows(gh)
    assert checked >= 15 and rows[0]["ts"] >= window.latest_ts(gh) - timedelta(minutes=70) > stream[0].ts  # trimmed


def made_up(greenhouse_id: str, device_id: str, ts: datetime):
    return validate_reading({"greenhouse_id": greenhouse_id, "device_id": device_id, "ts": ts.isoformat(), "measurements": {"air_temp_c": 20.0}}, now=ts)


def test_the_window_is_bounded_in_greenhouses_rows_and_device_codes():
    """A flood of made-up ids or a device posting far too fast cannot grow the window without end."""
    window = OnlineWindow(120, max_greenhouses=3, max_rows_per_greenhouse=50, max_device_codes=10)
    for i in range(10):  # ten greenhouses, the later ones newer
        window.add([made_up(f"gh-{i:02d}", f"dev-{i}", START + timedelta(minutes=i))])
    assert window.greenhouses() == ["gh-07", "gh-08", "gh-09"]  # the three newest kept
    assert window.features("gh-00", FeatureParams(horizons_min=(15,))) is None
    fast = [made_up("gh-09", f"fast-{k % 40}", START + timedelta(minutes=10, seconds=k)) for k in range(500)]  # 500 readings in 8 min
    for k in range(0, len(fast), 25):
        window.add(fast[k : k + 25])
    rows = window.rows("gh-09")
    assert len(rows) == 50 and rows[-1]["ts"] == fast[-1].ts and {r["device_id"] for r in rows} <= {f"fast-{k}" for k in range(40)}
    assert len(window._device_codes) <= 2 * 50  # rebuilt from the devices still in some window
    assert {r["device_id"] for r in window.rows("gh-08")} == {"dev-8"}  # renumbering kept every device's name


def test_waiting_for_unknown_greenhouses_leaves_nothing_behind():
    window = OnlineWindow(120)
    for i in range(100):
        window.on_reaching(f"nobody-{i}", START, lambda: None)()  # asked, then given up
    assert window._waiters == {}


def test_the_screen_may_stay_closed_only_when_cold_dull_and_the_rule_would_open_it():
    from app.control.planner import ScreenPlan, screen_options, screen_plan, targets_during
    from app.control.policy import ScreenRule, Targets

    rule = ScreenRule()
    dull = {"outside_temp_c": 2.0, "solar_w_m2": 120.0, "solar_w_m2_mean_15min": 110.0, "screen_pct": 100.0, "screen_pct_change_15min": 0.0}
    plan = screen_plan(dull, 300, rule)
    assert plan.setpoint_pct == 0.0 and plan.opening
    assert screen_options(dull, plan, rule, 0.0) == [plan]  # off by default
    options = screen_options(dull, plan, rule, 250.0)
    assert options == [plan, ScreenPlan(100.0, None, opening=False)]
    bright = {**dull, "solar_w_m2": 300.0}
    assert screen_options(bright, screen_plan(bright, 300, rule), rule, 250.0) == [screen_plan(bright, 300, rule)]  # the light budget
    mild = {**dull, "outside_temp_c": 16.0}
    assert len(screen_options(mild, screen_plan(mild, 300, rule), rule, 250.0)) == 1  # not cold: the rule decides
    night = {**dull, "solar_w_m2": 0.0, "solar_w_m2_mean_15min": 0.0}
    assert len(screen_options(night, screen_plan(night, 300, rule), rule, 250.0)) == 1  # closed anyway
    # the opening margin counts on the fixed margin and on the interval edge alike
    widened = targets_during(Targets(margin_c=0.45, edge_margin_c=0.1), plan, 0.5)
    assert widened.margin_c == pytest.approx(0.95) and widened.edge_margin_c == pytest.approx(0.6)
    assert targets_during(Targets(margin_c=0.45), options[1], 0.5) == Targets(margin_c=0.45)  # kept closed: no opening
