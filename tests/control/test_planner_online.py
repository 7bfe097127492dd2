"""Model inputs for candidates (DataFrame and numpy forms agree) and the online window's cache and waits."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd

from app.contracts.reading import validate_reading
from app.control.online import OnlineWindow, latest_features, reading_to_row
from app.control.planner import candidate_columns, candidate_frame, candidate_matrix, forecast_dicts, forecast_rows
from app.preprocess.features import FeatureParams
from app.sim.fleet import FleetSimulator

START = datetime(2026, 3, 10, tzinfo=timezone.utc)


def test_candidate_matrix_holds_the_candidate_frame_values():
    features = {"air_temp_c": 19.5, "rh_pct": 70, "outside_temp_c": 4.0, "vent_pct": 10.0, "heat_pct": 35.0, "screen_pct": 0.0, "ts": START}
    columns = ["air_temp_c", "rh_pct", "outside_temp_c", "vent_pct", "heat_pct", "screen_pct"]
    candidates = [{"vent_pct": v, "heat_pct": h, "screen_pct": 100.0} for v in (0.0, 20.0) for h in (0.0, 50.0, 100.0)]
    frame = candidate_frame(features, candidates, columns, [15, 60])
    matrix, names = candidate_matrix(features, candidates, columns, [15, 60])
    assert names == candidate_columns(columns, [15, 60]) and sorted(names) == sorted(frame.columns)
    assert matrix.dtype == np.float64 and matrix.shape == (len(candidates), len(names))
    np.testing.assert_array_equal(matrix, frame[names].to_numpy())
    assert candidate_matrix(features, [], columns, [15])[0].shape == (0, 9)


def test_forecast_rows_match_forecast_dicts():
    values = np.array([[20.5, 21.0, 80.0, 81.5], [19.0, 18.5, 85.0, 86.0]])
    keys = ["air_temp_c_15min", "air_temp_c_60min", "rh_pct_15min", "rh_pct_60min"]
    rows = forecast_rows(values, keys)
    assert rows == forecast_dicts(pd.DataFrame(values, columns=keys))
    assert all(type(v) is float for row in rows for v in row.values())


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
    assert feats is not None and same(feats, latest_features(window.rows(gh), params))
    assert window.features(gh, params) is feats  # cached: nothing copied or rebuilt
    newest = window.latest_ts(gh)
    assert window.features(gh, params, newest + timedelta(hours=1)) is feats  # as_of after the window: the same
    cut = newest - timedelta(minutes=10)
    earlier = window.features(gh, params, cut)
    assert earlier["ts"] <= cut and same(earlier, latest_features(window.rows(gh, cut), params))
    assert window.features(gh, params, cut) is earlier
    window.add([r for r in later if r.ts > newest])  # five more minutes
    fresh = window.features(gh, params)
    assert fresh is not feats and fresh["ts"] > feats["ts"]
    assert same(fresh, latest_features(window.rows(gh), params))
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
    window.add(batch[len(batch) // 2:])
    assert calls == ["now", "late"]
    window.add(readings(1, target + timedelta(minutes=1)))
    assert calls == ["now", "late"] and window.records == len(batch) + len(readings(1))
    assert reading_to_row(batch[0])["ts"] == batch[0].ts


def test_cached_candidate_grid_is_candidate_grid():
    from app.control.planner import cached_candidate_grid
    from app.control.policy import Limits, candidate_grid

    limits = Limits()
    for current in ({"vent_pct": 0.0, "heat_pct": 35.0, "screen_pct": 100.0}, {"vent_pct": 12.5, "heat_pct": 0, "screen_pct": 0}):
        for fixed in (None, {"screen_pct": 60.0}):
            expected = candidate_grid(current, limits, 300, levels=(0, 10, 50, 100), fixed=fixed)
            first = cached_candidate_grid(current, limits, 300, levels=(0, 10, 50, 100), fixed=fixed)
            again = cached_candidate_grid(dict(reversed(list(current.items()))), limits, 300.0, levels=[0.0, 10.0, 50.0, 100.0], fixed=fixed)
            assert first == expected == again and first is not again
            first[0]["heat_pct"] = -1.0  # callers get their own dicts
            assert cached_candidate_grid(current, limits, 300, levels=(0, 10, 50, 100), fixed=fixed) == expected
