"""Feature functions on hand-built series, without Ray."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app.preprocess.features import (
    FeatureParams,
    build_features,
    clean_readings,
    feature_columns,
    fill_gaps,
    future_mean,
    greenhouse_features,
    plan_columns,
    remove_spikes,
    resample,
    target_columns,
)

T0 = pd.Timestamp("2026-03-10T00:00:00Z")


def raw_rows(minutes: int, temp=lambda i: 20.0 + 0.01 * i, start=T0) -> pd.DataFrame:
    """Three devices per minute, as the fleet posts them."""
    rows = []
    for i in range(minutes):
        ts = start + pd.Timedelta(minutes=i)
        rows.append({"greenhouse_id": "gh-01", "device_id": "c", "ts": ts, "air_temp_c": temp(i), "rh_pct": 70.0, "co2_ppm": 450.0, "par_umol_m2_s": 100.0})
        rows.append({"greenhouse_id": "gh-01", "device_id": "w", "ts": ts, "outside_temp_c": 5.0, "outside_rh_pct": 80.0, "solar_w_m2": 50.0, "wind_m_s": 2.0})
        rows.append({"greenhouse_id": "gh-01", "device_id": "a", "ts": ts, "vent_pct": float(i % 7), "heat_pct": 50.0, "screen_pct": 0.0})
    return pd.DataFrame(rows)


def test_clean_drops_duplicates_and_impossible_values():
    raw = raw_rows(3)
    raw = pd.concat([raw, raw.iloc[[0]]])
    raw.loc[raw.index[1], "rh_pct"] = np.nan
    raw.iloc[3, raw.columns.get_loc("air_temp_c")] = 500.0
    out = clean_readings(raw)
    assert len(out) == 9
    assert out["air_temp_c"].max() < 100


def test_resample_combines_devices_on_a_regular_grid():
    raw = raw_rows(10).drop(index=[12, 13, 14])  # minute 4 missing entirely
    grid = resample(raw, 60)
    assert len(grid) == 10
    assert grid.loc[T0, "outside_temp_c"] == 5.0 and grid.loc[T0, "air_temp_c"] == 20.0
    assert grid.loc[T0 + pd.Timedelta(minutes=4)].isna().all()


def test_gap_fill_respects_the_max_length():
    s = pd.DataFrame({"air_temp_c": [1.0, np.nan, np.nan, 4.0, np.nan, np.nan, np.nan, np.nan, 9.0], "vent_pct": [5.0, np.nan, 7.0, np.nan, np.nan, np.nan, np.nan, np.nan, 1.0]})
    out = fill_gaps(s, max_fill_steps=2)
    assert out["air_temp_c"].tolist()[:4] == [1.0, 2.0, 3.0, 4.0]
    assert out["air_temp_c"].iloc[4:8].isna().all()  # a 4-step gap stays a gap
    assert out["vent_pct"].iloc[1] == 5.0 and out["vent_pct"].iloc[3:8].isna().all()


def test_spikes_are_removed_but_steps_kept():
    values = [20.0] * 20 + [45.0] + [20.0] * 10 + [25.0] * 20
    frame = pd.DataFrame({c: 10.0 for c in ("rh_pct", "co2_ppm", "outside_temp_c", "outside_rh_pct")}, index=range(len(values)))
    frame["air_temp_c"] = values
    out = remove_spikes(frame, window=15, factor=8.0)
    assert np.isnan(out["air_temp_c"].iloc[20])
    assert out["air_temp_c"].iloc[40] == 25.0  # a real level change survives


def test_lags_rolling_plans_and_targets_are_exact():
    params = FeatureParams(horizons_min=(5, 15))
    grid = resample(raw_rows(120), 60)
    f = build_features(grid, params)
    t = T0 + pd.Timedelta(minutes=60)
    assert f.loc[t, "air_temp_c_diff_15min"] == pytest.approx(0.15)
    assert f.loc[t, "target_air_temp_c_15min"] == pytest.approx(f.loc[t + pd.Timedelta(minutes=15), "air_temp_c"])
    expected_plan = np.mean([(60 + k) % 7 for k in range(1, 6)])
    assert f.loc[t, "plan_vent_pct_5min"] == pytest.approx(expected_plan)
    assert f.loc[t, "plan_vent_x_dtemp_5min"] == pytest.approx(expected_plan * (5.0 - f.loc[t, "air_temp_c"]) / 100)
    assert f.loc[t, "air_temp_c_mean_15min"] == pytest.approx(np.mean([20 + 0.01 * i for i in range(46, 61)]))
    assert future_mean(pd.Series([1.0, 2, 3, 4]), 2).tolist()[:2] == [2.5, 3.5]


def test_sun_elevation_is_high_at_local_noon_and_negative_at_midnight():
    f = build_features(resample(raw_rows(60 * 24, start=pd.Timestamp("2026-06-21T00:00:00Z")), 60), FeatureParams())
    noon_utc = pd.Timestamp("2026-06-21T17:20:00Z")  # solar noon at -79.95 deg longitude
    assert f.loc[noon_utc, "sun_elevation_deg"] > 70
    assert f.loc[pd.Timestamp("2026-06-21T05:20:00Z"), "sun_elevation_deg"] < -20


def test_greenhouse_features_has_every_column_and_no_gaps():
    params = FeatureParams(horizons_min=(5, 15, 30, 60))
    out = greenhouse_features(raw_rows(300), params)
    assert list(out.columns) == ["greenhouse_id", "ts", *feature_columns(), *plan_columns(params.horizons_min), *target_columns(params.horizons_min)]
    assert len(out) == 300 - 60 - 60  # first hour (lags) and last hour (targets) are incomplete
    assert not out.isna().any().any()
    serving = greenhouse_features(raw_rows(300), params, training=False)
    assert serving["ts"].max() == T0 + pd.Timedelta(minutes=299)  # the latest step is kept for serving
