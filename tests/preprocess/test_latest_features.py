"""Serving's numpy features (``latest_feature_row``) equal training's pandas ones
(``greenhouse_features``' last row) on generated windows: gaps, spikes, duplicates, impossible
values, absent optional sensors, unaligned timestamps, and other feature parameters."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.contracts.reading import MEASUREMENT_BOUNDS, validate_reading
from app.control.online import reading_to_row
from app.preprocess.features import FeatureParams, feature_columns, greenhouse_features, latest_feature_row
from app.sim.fleet import FleetSimulator

START = datetime(2026, 6, 1, 4, 0, tzinfo=timezone.utc)
DEVICES = {
    "climate": {"air_temp_c": (18.0, 2.0), "rh_pct": (70.0, 8.0), "co2_ppm": (600.0, 80.0), "par_umol_m2_s": (300.0, 200.0)},
    "weather": {"outside_temp_c": (8.0, 3.0), "outside_rh_pct": (80.0, 5.0), "solar_w_m2": (200.0, 150.0), "wind_m_s": (3.0, 1.0)},
    "actuators": {"vent_pct": (20.0, 15.0), "heat_pct": (40.0, 25.0), "screen_pct": (30.0, 30.0)},
}
OPTIONAL = ("co2_ppm", "par_umol_m2_s", "wind_m_s", "outside_rh_pct", "solar_w_m2")


def reference(rows: list[dict], params: FeatureParams) -> dict | None:
    """The last row training's feature function gives, as serving used to build it."""
    frame = greenhouse_features(pd.DataFrame(rows), params, training=False)
    if frame.empty:
        return None
    last = frame.iloc[-1]
    return {"ts": pd.Timestamp(last["ts"]).to_pydatetime(), **{c: float(last[c]) for c in feature_columns()}}


def assert_same(got: dict | None, want: dict | None) -> None:
    assert (got is None) == (want is None), (got, want)
    if want is None:
        return
    assert got["ts"] == want["ts"]
    assert set(got) == set(want)
    for c in feature_columns():
        assert np.isclose(got[c], want[c], rtol=1e-9, atol=1e-9, equal_nan=True), (c, got[c], want[c])


def generated_rows(seed: int, minutes: int, step_s: int, drop: float, spike: float, dup: float, bad: float, absent: float, jitter_s: int) -> list[dict]:
    """One greenhouse's raw rows, every device reporting every minute, damaged on purpose."""
    rng = np.random.default_rng(seed)
    gone = {name for name in OPTIONAL if rng.random() < absent}  # a sensor this greenhouse lacks
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


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    minutes=st.integers(1, 150),
    step_s=st.sampled_from([30, 60, 120]),
    drop=st.sampled_from([0.0, 0.05, 0.3]),
    spike=st.sampled_from([0.0, 0.05]),
    dup=st.sampled_from([0.0, 0.1]),
    bad=st.sampled_from([0.0, 0.03]),
    absent=st.sampled_from([0.0, 0.5, 1.0]),
    jitter_s=st.sampled_from([0, 45]),
    spike_window=st.integers(3, 21),
    max_fill=st.integers(0, 8),
    mad_factor=st.sampled_from([3.0, 8.0]),
)
def test_numpy_features_equal_training_features_on_generated_windows(
    seed, minutes, step_s, drop, spike, dup, bad, absent, jitter_s, spike_window, max_fill, mad_factor
):
    rows = generated_rows(seed, minutes, step_s, drop, spike, dup, bad, absent, jitter_s)
    params = FeatureParams(step_s=step_s, spike_window_steps=spike_window, max_fill_steps=max_fill, spike_mad_factor=mad_factor, horizons_min=(15, 60))
    assert_same(latest_feature_row(rows, params), reference(rows, params))


def test_numpy_features_equal_training_features_on_the_simulators_window():
    fleet = FleetSimulator(2, datetime(2026, 11, 28, tzinfo=timezone.utc), step_s=60.0, seed=0)
    readings = [validate_reading(r, max_future_skew_s=1e9) for step in fleet.iter_steps(200 * 60) for r in step]
    params = FeatureParams(horizons_min=(15, 60))
    for gh in ("gh-01", "gh-02"):
        rows = [reading_to_row(r) for r in readings if r.greenhouse_id == gh][-363:]  # the 2-hour online window
        got = latest_feature_row(rows, params)
        assert got is not None and got["ts"] == readings[-1].ts.replace(second=0)
        assert_same(got, reference(rows, params))


def test_the_newest_step_without_its_climate_reading_gives_the_step_before():
    rows = generated_rows(1, 80, 60, 0.0, 0.0, 0.0, 0.0, 0.0, 0)
    rows = [r for r in rows if not (r["device_id"] == "climate" and r["ts"] == START + timedelta(minutes=79))]
    got = latest_feature_row(rows, FeatureParams())
    assert got["ts"] == START + timedelta(minutes=78)
    assert_same(got, reference(rows, FeatureParams()))
    assert latest_feature_row(rows[:30], FeatureParams()) is None  # under an hour: no 60-min lag yet
    assert latest_feature_row([], FeatureParams()) is None


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 80), window=st.integers(2, 24), nan_share=st.sampled_from([0.0, 0.2, 0.6]), limit=st.integers(0, 6))
def test_each_numpy_step_equals_its_pandas_step(seed, n, window, nan_share, limit):
    from app.preprocess import features as F

    rng = np.random.default_rng(seed)
    x = rng.normal(20, 3, n)
    x[rng.random(n) < nan_share] = np.nan
    s = pd.Series(x)
    minp = min(3, window)
    np.testing.assert_allclose(F._rolling_median_centered(x, window, minp), s.rolling(window, center=True, min_periods=minp).median(), rtol=1e-12, equal_nan=True)
    minp = max(2, window // 2)
    mean, std = F._rolling_trailing(x, window, minp)
    np.testing.assert_allclose(mean, s.rolling(window, min_periods=minp).mean(), rtol=1e-9, atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(std, s.rolling(window, min_periods=minp).std(), rtol=1e-7, atol=1e-9, equal_nan=True)
    for hold in (False, True):
        want = F._limited(s, limit, method="ffill" if hold else "linear")
        np.testing.assert_allclose(F._fill_limited(x.copy(), limit, hold), want, rtol=1e-12, equal_nan=True)
