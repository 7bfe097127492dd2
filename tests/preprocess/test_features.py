"""The feature engine's steps on hand-built series, and its front doors, without Ray."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from app.contracts.reading import MEASUREMENT_NAMES
from app.contracts.vocabulary import plan_columns, target_columns
from app.preprocess import engine, solar, windows
from app.preprocess.features import FeatureParams, RawColumns, feature_columns, feature_table, greenhouse_features, latest_feature_row
from app.preprocess.spec import SPIKE_COLUMNS

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


def grid_of(raw: pd.DataFrame, step_s: int = 60) -> dict[str, np.ndarray]:
    return engine.resample(engine.first_readings(RawColumns.from_frame(raw)), step_s)[1]


def test_clean_keeps_the_first_of_repeated_readings_and_drops_impossible_values():
    raw = raw_rows(3)
    repeat = raw.iloc[[0]].assign(air_temp_c=99.0)  # same device and time, later: ignored
    raw.iloc[3, raw.columns.get_loc("air_temp_c")] = 500.0  # outside physical bounds
    grid = grid_of(pd.concat([raw, repeat], ignore_index=True))
    assert grid["air_temp_c"][0] == 20.0
    assert np.isnan(grid["air_temp_c"][1])
    assert grid["air_temp_c"][2] == pytest.approx(20.02)


def test_repeats_are_found_with_many_devices_too():
    """Past 2048 device codes (a replica's codes are shared by every greenhouse) the rows are
    sorted instead of packed into one key; both keep the first reading of a (device, time)."""
    rng = np.random.default_rng(0)
    times = rng.integers(0, 5, 400) * 60_000_000
    for offset in (0, 5000):
        devices = rng.integers(0, 4, 400) + offset
        raw = RawColumns(times, devices, rng.normal(20, 1, (400, len(MEASUREMENT_NAMES))))
        kept = engine.first_readings(raw)
        want = pd.DataFrame({"t": times, "d": devices}).drop_duplicates(keep="first").index.to_numpy()
        np.testing.assert_array_equal(kept.times_us, times[want])
        np.testing.assert_array_equal(kept.devices, devices[want])


def test_resample_combines_devices_on_a_regular_grid():
    raw = raw_rows(10).drop(index=[12, 13, 14])  # minute 4 missing entirely
    grid = grid_of(raw)
    assert len(grid["air_temp_c"]) == 10
    assert grid["outside_temp_c"][0] == 5.0 and grid["air_temp_c"][0] == 20.0
    assert all(np.isnan(grid[c][4]) for c in MEASUREMENT_NAMES)


def test_gap_fill_respects_the_max_length():
    grid = {"air_temp_c": np.array([1.0, np.nan, np.nan, 4.0, np.nan, np.nan, np.nan, np.nan, 9.0]), "vent_pct": np.array([5.0, np.nan, 7.0, np.nan, np.nan, np.nan, np.nan, np.nan, 1.0])}
    engine.fill_gaps(grid, FeatureParams(max_fill_steps=2))
    assert grid["air_temp_c"].tolist()[:4] == [1.0, 2.0, 3.0, 4.0]
    assert np.isnan(grid["air_temp_c"][4:8]).all()  # a 4-step gap stays a gap
    assert grid["vent_pct"][1] == 5.0 and np.isnan(grid["vent_pct"][3:8]).all()  # actuators hold


def test_spikes_are_removed_but_steps_kept():
    values = np.array([20.0] * 20 + [45.0] + [20.0] * 10 + [25.0] * 20)
    grid = {c: np.full(len(values), 10.0) for c in SPIKE_COLUMNS}
    grid["air_temp_c"] = values
    engine.remove_spikes(grid, FeatureParams(spike_window_steps=15, spike_mad_factor=8.0))
    assert np.isnan(grid["air_temp_c"][20])
    assert grid["air_temp_c"][40] == 25.0  # a real level change survives


def test_lags_rolling_plans_and_targets_are_exact():
    params = FeatureParams(horizons_min=(5, 15))
    f = greenhouse_features(raw_rows(120), params, training=False).set_index("ts")
    t = T0 + pd.Timedelta(minutes=60)
    assert f.loc[t, "air_temp_c_diff_15min"] == pytest.approx(0.15)
    assert f.loc[t, "target_air_temp_c_15min"] == pytest.approx(f.loc[t + pd.Timedelta(minutes=15), "air_temp_c"])
    expected_plan = np.mean([(60 + k) % 7 for k in range(1, 6)])
    assert f.loc[t, "plan_vent_pct_5min"] == pytest.approx(expected_plan)
    assert f.loc[t, "plan_vent_x_dtemp_5min"] == pytest.approx(expected_plan * (5.0 - f.loc[t, "air_temp_c"]) / 100)
    assert f.loc[t, "air_temp_c_mean_15min"] == pytest.approx(np.mean([20 + 0.01 * i for i in range(46, 61)]))
    assert windows.future_mean(np.array([1.0, 2, 3, 4]), 2).tolist()[:2] == [2.5, 3.5]


def test_sun_elevation_is_high_at_local_noon_and_negative_at_midnight():
    noon, midnight = (int(pd.Timestamp(t).timestamp()) for t in ("2026-06-21T17:20:00Z", "2026-06-21T05:20:00Z"))
    elevation = solar.sun_elevation_deg(np.array([noon, midnight]), 36.1, -79.95)  # solar noon at -79.95 deg
    assert elevation[0] > 70 and elevation[1] < -20


def test_greenhouse_features_has_every_column_and_no_gaps():
    params = FeatureParams(horizons_min=(5, 15, 30, 60))
    out = greenhouse_features(raw_rows(300), params)
    assert list(out.columns) == ["greenhouse_id", "ts", *feature_columns(), *plan_columns(params.horizons_min), *target_columns(params.horizons_min)]
    assert len(out) == 300 - 60 - 60  # first hour (lags) and last hour (targets) are incomplete
    assert not out.isna().any().any()
    serving = greenhouse_features(raw_rows(300), params, training=False)
    assert serving["ts"].max() == T0 + pd.Timedelta(minutes=299)  # the latest step is kept for serving


def test_an_absent_optional_sensor_becomes_the_median_and_an_absent_required_one_drops_rows():
    raw = raw_rows(150)
    climate = raw["device_id"] == "c"
    raw.loc[climate, "co2_ppm"] = 400.0 + np.arange(150.0)
    minute = (raw["ts"] - T0) // pd.Timedelta(minutes=1)
    raw.loc[climate & (minute >= 80) & (minute < 100), "co2_ppm"] = np.nan  # 20 minutes: too long to fill
    out = greenhouse_features(raw, FeatureParams(horizons_min=(15,)), training=False).set_index("ts")
    assert len(out) == 150 - 60
    present = [400.0 + m for m in range(60, 150) if not 80 <= m < 100]
    gap = out.loc[T0 + pd.Timedelta(minutes=80) : T0 + pd.Timedelta(minutes=99), "co2_ppm"]
    assert len(gap) == 20 and (gap == np.median(present)).all()
    assert greenhouse_features(raw.drop(columns="rh_pct"), FeatureParams(), training=False).empty


def test_the_three_front_doors_give_the_same_rows():
    """Training's Arrow table, the pandas frame and serving's newest row: one engine."""
    params = FeatureParams(horizons_min=(15, 60))
    raw = raw_rows(200)
    table = pa.Table.from_pandas(raw, preserve_index=False).cast(
        pa.schema([pa.field("ts", pa.timestamp("ms", tz="UTC")) if f.name == "ts" else f for f in pa.Table.from_pandas(raw, preserve_index=False).schema])
    )
    arrow = feature_table(table, "gh-01", params, training=False)
    assert arrow.schema.field("ts").type == pa.timestamp("ms", tz="UTC") and arrow.schema.field("greenhouse_id").type == pa.large_string()
    frame = greenhouse_features(raw, params, training=False)
    assert frame["ts"].dtype == "datetime64[us, UTC]"  # the caller's resolution
    pd.testing.assert_frame_equal(arrow.to_pandas().drop(columns="ts"), frame.drop(columns="ts"))
    newest = latest_feature_row(RawColumns.from_frame(raw), FeatureParams(horizons_min=[15, 60]))  # a model's JSON gives lists
    assert newest == {**frame.iloc[-1][feature_columns()].to_dict(), "ts": frame["ts"].iloc[-1].to_pydatetime()}


def test_raw_columns_are_the_same_from_rows_frames_and_arrow_tables():
    raw = raw_rows(5).astype({"ts": "datetime64[ns, UTC]"})
    raw.loc[4, "device_id"] = None  # a missing id is a device of its own
    raw.loc[5, "ts"] = raw.loc[5, "ts"] + pd.Timedelta(nanoseconds=1500)  # below a microsecond: dropped
    table = pa.Table.from_pandas(raw, preserve_index=False)
    from_rows = RawColumns.from_rows(raw.assign(ts=raw["ts"].dt.floor("us").dt.to_pydatetime()).to_dict("records"))
    for cols in (RawColumns.from_frame(raw), RawColumns.from_arrow(table)):
        np.testing.assert_array_equal(cols.times_us, from_rows.times_us)
        np.testing.assert_array_equal(cols.values, from_rows.values)
        assert len(set(cols.devices.tolist())) == 4 and cols.devices[4] != cols.devices[1]


def test_windows_in_minutes_become_whole_steps_on_any_grid():
    """Lags at least one step, rolling windows at least two, the spike window at most an hour on a
    coarse grid (but at least five steps); grids of up to 3 minutes keep the set windows."""
    fine, five, quarter = FeatureParams(step_s=60), FeatureParams(step_s=300), FeatureParams(step_s=900)
    assert (fine.steps(5), fine.window_steps(15), fine.spike_steps()) == (5, 15, 15)
    assert (five.steps(5), five.window_steps(15), five.spike_steps()) == (1, 3, 12)
    assert (quarter.steps(5), quarter.steps(15), quarter.window_steps(15), quarter.window_steps(60), quarter.spike_steps()) == (1, 1, 2, 4, 5)
    assert FeatureParams(step_s=120, spike_window_steps=21).spike_steps() == 21
    assert FeatureParams(step_s=900, spike_window_steps=3).spike_steps() == 3  # never lengthened


def test_spikes_are_removed_on_a_15_minute_grid_too():
    values = np.array([20.0] * 12 + [30.0] + [20.0] * 6 + [24.0] * 12)
    grid = {c: np.full(len(values), 10.0) for c in SPIKE_COLUMNS}
    grid["air_temp_c"] = values.copy()
    engine.remove_spikes(grid, FeatureParams(step_s=900))
    assert np.isnan(grid["air_temp_c"][12])
    assert np.count_nonzero(np.isnan(grid["air_temp_c"])) == 1  # the level change from step 19 stays
