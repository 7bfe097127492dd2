"""The feature engine equals the slow, obvious pandas reference (``tests/helpers/pandas_reference.py``, the
functions the first feature sets and models were built with) on generated windows: gaps, spikes,
duplicates, impossible values, absent optional sensors, unaligned timestamps, other feature
parameters; serving's newest row and training's whole table alike, and each array step alone."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.contracts.reading import MEASUREMENT_BOUNDS, validate_reading
from app.control.online import reading_to_row
from app.preprocess import solar, windows
from app.preprocess.features import FeatureParams, feature_columns, greenhouse_features, latest_feature_row
from app.preprocess.spec import OPTIONAL_SENSORS
from app.sim.fleet import FleetSimulator
from tests.helpers import pandas_reference as ref

START = datetime(2026, 6, 1, 4, 0, tzinfo=timezone.utc)
DEVICES = {
    "climate": {"air_temp_c": (18.0, 2.0), "rh_pct": (70.0, 8.0), "co2_ppm": (600.0, 80.0), "par_umol_m2_s": (300.0, 200.0)},
    "weather": {"outside_temp_c": (8.0, 3.0), "outside_rh_pct": (80.0, 5.0), "solar_w_m2": (200.0, 150.0), "wind_m_s": (3.0, 1.0)},
    "actuators": {"vent_pct": (20.0, 15.0), "heat_pct": (40.0, 25.0), "screen_pct": (30.0, 30.0)},
}


def assert_same_row(got: dict | None, want: dict | None) -> None:
    assert (got is None) == (want is None), (got, want)
    if want is None:
        return
    assert got["ts"] == want["ts"]
    assert set(got) == set(want)
    for c in feature_columns():
        assert np.isclose(got[c], want[c], rtol=1e-9, atol=1e-9, equal_nan=True), (c, got[c], want[c])


def assert_same_frame(got: pd.DataFrame, want: pd.DataFrame, atol: float = 1e-9) -> None:
    assert list(got.columns) == list(want.columns) and len(got) == len(want)
    if want.empty:
        return
    assert (got["greenhouse_id"] == want["greenhouse_id"]).all() and (got["ts"] == want["ts"]).all()
    assert got.dtypes.astype(str).tolist() == want.dtypes.astype(str).tolist()
    np.testing.assert_allclose(got.iloc[:, 2:].to_numpy(float), want.iloc[:, 2:].to_numpy(float), rtol=1e-9, atol=atol, equal_nan=True)


def generated_rows(seed: int, minutes: int, drop: float, spike: float, dup: float, bad: float, absent: float, jitter_s: int) -> list[dict]:
    """One greenhouse's raw rows, every device reporting every minute, damaged on purpose."""
    rng = np.random.default_rng(seed)
    gone = {name for name in OPTIONAL_SENSORS if rng.random() < absent}  # a sensor this greenhouse lacks
    rows: list[dict] = []
    level = {name: mean for dev in DEVICES.values() for name, (mean, _) in dev.items()}
    for i in range(minutes):
        for device, measures in DEVICES.items():
            for name, (mean, sd) in measures.items():  # a random walk around a mean
                level[name] += rng.normal(0, sd / 10) + (mean - level[name]) * 0.05
            if rng.random() < drop:
                continue
            ts = START + timedelta(minutes=i, seconds=int(rng.integers(0, jitter_s + 1)))
            row = {"greenhouse_id": "gh-01", "device_id": device, "ts": ts}
            for name in DEVICES[device]:
                low, high = MEASUREMENT_BOUNDS[name]
                value = float(np.clip(level[name], low, high))
                if rng.random() < spike:
                    value = float(np.clip(value + rng.choice([-1, 1]) * 40.0, low, high))
                if rng.random() < bad:
                    value = high + 1.0  # outside physical bounds: blanked by cleaning
                row[name] = None if name in gone or rng.random() < drop / 2 else value
            rows.append(row)
            if rng.random() < dup:
                rows.append({**row, **{n: 0.0 for n in DEVICES[device]}})  # same (device, ts): the first wins
    return rows


WINDOWS = {
    "seed": st.integers(0, 2**32 - 1),
    "minutes": st.integers(1, 150),
    "step_s": st.sampled_from([30, 60, 120]),
    "drop": st.sampled_from([0.0, 0.05, 0.3]),
    "spike": st.sampled_from([0.0, 0.05]),
    "dup": st.sampled_from([0.0, 0.1]),
    "bad": st.sampled_from([0.0, 0.03]),
    "absent": st.sampled_from([0.0, 0.5, 1.0]),
    "jitter_s": st.sampled_from([0, 45]),
    "spike_window": st.integers(3, 21),
    "max_fill": st.integers(0, 8),
    "mad_factor": st.sampled_from([3.0, 8.0]),
}


def window_case(seed, minutes, step_s, drop, spike, dup, bad, absent, jitter_s, spike_window, max_fill, mad_factor, horizons=(15, 60)):
    rows = generated_rows(seed, minutes, drop, spike, dup, bad, absent, jitter_s)
    params = FeatureParams(step_s=step_s, spike_window_steps=spike_window, max_fill_steps=max_fill, spike_mad_factor=mad_factor, horizons_min=horizons)
    return rows, params


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**WINDOWS)
def test_servings_newest_row_equals_the_reference_on_generated_windows(**case):
    rows, params = window_case(**case)
    assert_same_row(latest_feature_row(rows, params), ref.latest_row(rows, params))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(training=st.booleans(), horizons=st.sampled_from([(15, 60), (5, 15, 30, 60), (2,)]), **WINDOWS)
def test_trainings_table_equals_the_reference_on_generated_windows(training, horizons, **case):
    rows, params = window_case(**case, horizons=horizons)
    frame = pd.DataFrame(rows)
    assert_same_frame(greenhouse_features(frame, params, training=training), ref.greenhouse_features(frame, params, training=training))


def test_servings_newest_row_equals_the_reference_on_the_simulators_window():
    fleet = FleetSimulator(2, datetime(2026, 11, 28, tzinfo=timezone.utc), step_s=60.0, seed=0)
    readings = [validate_reading(r, max_future_skew_s=1e9) for step in fleet.iter_steps(200 * 60) for r in step]
    params = FeatureParams(horizons_min=(15, 60))
    for gh in ("gh-01", "gh-02"):
        rows = [reading_to_row(r) for r in readings if r.greenhouse_id == gh][-363:]  # the 2-hour online window
        got = latest_feature_row(rows, params)
        assert got is not None and got["ts"] == readings[-1].ts.replace(second=0)
        assert_same_row(got, ref.latest_row(rows, params))


def test_the_newest_step_without_its_climate_reading_gives_the_step_before():
    rows = generated_rows(1, 80, 0.0, 0.0, 0.0, 0.0, 0.0, 0)
    rows = [r for r in rows if not (r["device_id"] == "climate" and r["ts"] == START + timedelta(minutes=79))]
    got = latest_feature_row(rows, FeatureParams())
    assert got["ts"] == START + timedelta(minutes=78)
    assert_same_row(got, ref.latest_row(rows, FeatureParams()))
    assert latest_feature_row(rows[:30], FeatureParams()) is None  # under an hour: no 60-min lag yet
    assert latest_feature_row([], FeatureParams()) is None


def test_a_long_history_equals_the_reference_within_pandas_drift():
    """Three days of one greenhouse, as a training task sees it. pandas' rolling variance is
    updated as values enter and leave, so over long series it drifts: a night's flat zero solar
    reads as a std of ~1e-5 W/m2 there, exactly 0 in the engine (which sums each window anew)."""
    rows = generated_rows(7, 3 * 1440, 0.02, 0.01, 0.01, 0.01, 0.0, 30)
    for row in rows:  # nights: solar exactly 0 for hours
        if row["device_id"] == "weather" and not 6 <= row["ts"].hour < 18:
            row["solar_w_m2"] = 0.0
    frame, params = pd.DataFrame(rows), FeatureParams()
    assert_same_frame(greenhouse_features(frame, params), ref.greenhouse_features(frame, params), atol=1e-4)


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 80), window=st.integers(2, 24), nan_share=st.sampled_from([0.0, 0.2, 0.6]), limit=st.integers(0, 6))
def test_each_array_step_equals_its_pandas_spelling(seed, n, window, nan_share, limit):
    rng = np.random.default_rng(seed)
    x = rng.normal(20, 3, n)
    x[rng.random(n) < nan_share] = np.nan
    s = pd.Series(x)
    minp = min(3, window)
    np.testing.assert_allclose(windows.rolling_median_centered(x, window, minp), s.rolling(window, center=True, min_periods=minp).median(), rtol=1e-12, equal_nan=True)
    minp = max(2, window // 2)
    mean, std = windows.rolling_mean_std(x, window, minp)
    np.testing.assert_allclose(mean, s.rolling(window, min_periods=minp).mean(), rtol=1e-9, atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(std, s.rolling(window, min_periods=minp).std(), rtol=1e-7, atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(windows.future_mean(x, window), ref.future_mean(s, window), rtol=1e-9, atol=1e-9, equal_nan=True)
    for k in (window, -window):
        np.testing.assert_array_equal(windows.shift(x, k), s.shift(k).to_numpy())
    for hold in (False, True):
        want = ref.limited(s, limit, method="ffill" if hold else "linear")
        np.testing.assert_allclose(windows.fill_limited(x.copy(), limit, hold=hold), want, rtol=1e-12, equal_nan=True)


@settings(max_examples=50, deadline=None)
@given(start=st.integers(946_684_800, 4_102_444_800), step_s=st.sampled_from([1, 30, 60, 97, 3600]), latitude=st.floats(-66, 66), longitude=st.floats(-180, 180))
def test_calendar_and_sun_equal_pandas_and_pvlib(start, step_s, latitude, longitude):
    seconds = start + step_s * np.arange(500, dtype=np.int64)
    ts = pd.DatetimeIndex(pd.to_datetime(seconds, unit="s", utc=True))
    got = solar.calendar_features(seconds, latitude, longitude)
    hours = ts.hour + ts.minute / 60.0
    np.testing.assert_array_equal(got["hour_sin"], np.sin(2 * np.pi * hours / 24.0))
    np.testing.assert_array_equal(got["doy_cos"], np.cos(2 * np.pi * ts.dayofyear / 365.25))
    np.testing.assert_allclose(got["sun_elevation_deg"], ref.sun_elevation_deg(ts, latitude, longitude), rtol=0, atol=1e-9)
