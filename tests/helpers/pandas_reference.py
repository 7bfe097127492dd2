"""The feature definitions as first written, on pandas: a slow, obvious reference (test-only).

The first feature sets were built by these functions, and stored models were trained on them;
the engine (:mod:`app.preprocess.engine`) must give the same rows and values. Each step is the
plain pandas spelling of its definition; nothing here is tuned.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pvlib import solarposition

from app.contracts.reading import MEASUREMENT_BOUNDS, MEASUREMENT_NAMES
from app.contracts.vocabulary import ACTUATORS, TARGET_VARIABLES, plan_columns, target_columns
from app.preprocess.spec import LAG_MIN, OPTIONAL_SENSORS, ROLL_COLUMNS, ROLL_MIN, SPIKE_COLUMNS, FeatureParams, feature_columns


def clean_readings(raw: pd.DataFrame) -> pd.DataFrame:
    """Drop duplicate (device_id, ts) readings; blank values outside physical bounds."""
    out = raw.drop_duplicates(subset=["device_id", "ts"], keep="first").copy()
    for name in MEASUREMENT_NAMES:
        if name in out.columns:
            low, high = MEASUREMENT_BOUNDS[name]
            values = pd.to_numeric(out[name], errors="coerce")
            out[name] = values.where((values >= low) & (values <= high))
    return out


def resample(raw: pd.DataFrame, step_s: int) -> pd.DataFrame:
    """One row per step (a regular UTC grid) with each measurement's mean over its devices' readings."""
    ts = pd.to_datetime(raw["ts"], utc=True)
    cols = [c for c in MEASUREMENT_NAMES if c in raw.columns]
    frame = raw[cols].astype("float64")
    frame.index = ts.dt.floor(f"{step_s}s")
    grouped = frame.groupby(level=0).mean()
    grid = pd.date_range(grouped.index.min(), grouped.index.max(), freq=f"{step_s}s", tz="UTC")
    out = grouped.reindex(grid)
    out.index.name = "ts"
    for c in MEASUREMENT_NAMES:
        if c not in out.columns:
            out[c] = np.nan
    return out[list(MEASUREMENT_NAMES)]


def remove_spikes(frame: pd.DataFrame, window: int, factor: float) -> pd.DataFrame:
    """Blank isolated spikes: values further than ``factor`` robust deviations from the rolling median."""
    out = frame.copy()
    for c in SPIKE_COLUMNS:
        x = out[c]
        med = x.rolling(window, center=True, min_periods=3).median()
        dev = (x - med).abs()
        mad = dev.rolling(window, center=True, min_periods=3).median()
        floor = 0.5 if c.endswith("_c") else 2.0
        out[c] = x.where(~(dev > factor * np.maximum(mad * 1.4826, floor)))
    return out


def limited(x: pd.Series, limit: int, method: str) -> pd.Series:
    """Fill NaN runs of length <= limit only (pandas' ``limit`` would part-fill longer runs)."""
    isna = x.isna()
    run_id = (~isna).cumsum()
    run_len = isna.groupby(run_id).transform("sum")
    fillable = isna & (run_len <= limit)
    filled = x.ffill() if method == "ffill" else x.interpolate(method="linear", limit_area="inside")
    return x.where(~fillable, filled)


def fill_gaps(frame: pd.DataFrame, max_fill_steps: int) -> pd.DataFrame:
    """Interpolate gaps of at most ``max_fill_steps`` (actuators: hold the last value)."""
    out = frame.copy()
    for c in out.columns:
        out[c] = limited(out[c], max_fill_steps, method="ffill" if c in ACTUATORS else "linear")
    return out


def sun_elevation_deg(ts: pd.DatetimeIndex, latitude: float, longitude: float) -> np.ndarray:
    """Solar elevation (degrees) with pvlib's fast analytical formulas, pvlib's own hour angle."""
    doy = ts.dayofyear.to_numpy()
    declination = solarposition.declination_spencer71(doy)
    eot = solarposition.equation_of_time_spencer71(doy)
    hour_angle = solarposition.hour_angle(ts, longitude, eot)
    zenith = solarposition.solar_zenith_analytical(np.radians(latitude), np.radians(hour_angle), declination)
    return 90.0 - np.degrees(zenith)


def future_mean(x: pd.Series, steps: int) -> pd.Series:
    """Mean of x over the next ``steps`` rows, (t, t+steps]."""
    return x[::-1].rolling(steps, min_periods=steps).mean()[::-1].shift(-1)


def build_features(frame: pd.DataFrame, params: FeatureParams) -> pd.DataFrame:
    """Features, plans and targets on a regular-grid frame (index ``ts``)."""
    f = frame.copy()
    for v in TARGET_VARIABLES:
        for m in LAG_MIN:
            f[f"{v}_diff_{m}min"] = f[v] - f[v].shift(params.steps(m))
    for v in ROLL_COLUMNS:
        for m in ROLL_MIN:
            w = params.steps(m)
            roll = f[v].rolling(w, min_periods=max(2, w // 2))
            f[f"{v}_mean_{m}min"] = roll.mean()
            f[f"{v}_std_{m}min"] = roll.std()
    ts = f.index
    hours = ts.hour + ts.minute / 60.0
    f["hour_sin"] = np.sin(2 * np.pi * hours / 24.0)
    f["hour_cos"] = np.cos(2 * np.pi * hours / 24.0)
    f["doy_sin"] = np.sin(2 * np.pi * ts.dayofyear / 365.25)
    f["doy_cos"] = np.cos(2 * np.pi * ts.dayofyear / 365.25)
    f["sun_elevation_deg"] = sun_elevation_deg(ts, params.latitude, params.longitude)
    f["inside_outside_temp_diff_c"] = f["air_temp_c"] - f["outside_temp_c"]
    for a in ACTUATORS:
        f[f"{a}_change_15min"] = f[a] - f[a].shift(params.steps(15))
    for h in params.horizons_min:
        k = params.steps(h)
        for a in ACTUATORS:
            f[f"plan_{a}_{h}min"] = future_mean(f[a], k)
        f[f"plan_vent_x_dtemp_{h}min"] = f[f"plan_vent_pct_{h}min"] * (f["outside_temp_c"] - f["air_temp_c"]) / 100.0
        for v in TARGET_VARIABLES:
            f[f"target_{v}_{h}min"] = f[v].shift(-k)
    return f


def greenhouse_features(raw: pd.DataFrame, params: FeatureParams, *, training: bool = True) -> pd.DataFrame:
    """Raw readings of ONE greenhouse -> rows with ``greenhouse_id``, ``ts``, features, plans, targets
    (training: rows lacking a plan or target dropped; otherwise rows lacking a feature)."""
    if raw.empty:
        return pd.DataFrame()
    greenhouse_id = str(raw["greenhouse_id"].iloc[0])
    grid = resample(clean_readings(raw), params.step_s)
    grid = fill_gaps(remove_spikes(grid, params.spike_window_steps, params.spike_mad_factor), params.max_fill_steps)
    f = build_features(grid, params)
    needed = [c for c in feature_columns() if c not in OPTIONAL_SENSORS] + list(params.essential)
    if training:
        needed += plan_columns(params.horizons_min) + target_columns(params.horizons_min)
    f = f.dropna(subset=sorted(set(needed)))
    for c in feature_columns():  # optional sensors: the greenhouse's median rather than no row
        if f[c].isna().any():
            f[c] = f[c].fillna(f[c].median())
    f = f.reset_index()
    f.insert(0, "greenhouse_id", greenhouse_id)
    cols = ["greenhouse_id", "ts"] + feature_columns() + plan_columns(params.horizons_min) + target_columns(params.horizons_min)
    return f[cols].astype({c: "float64" for c in cols[2:]})


def latest_row(rows: list[dict], params: FeatureParams) -> dict | None:
    """The last row of :func:`greenhouse_features` for serving (``training=False``), as a dict."""
    frame = greenhouse_features(pd.DataFrame(rows), params, training=False)
    if frame.empty:
        return None
    last = frame.iloc[-1]
    return {"ts": pd.Timestamp(last["ts"]).to_pydatetime(), **{c: float(last[c]) for c in feature_columns()}}
