"""Feature functions for one greenhouse, on pandas (pure: no Ray, no I/O).

Raw rows are readings of several devices (climate, weather, actuators), each filling its own
measurement columns. :func:`greenhouse_features` turns them into one row per time step with
features, plan columns (actuator settings over each horizon) and targets (future values).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from operator import itemgetter

import numpy as np
import pandas as pd

from app.contracts.reading import MEASUREMENT_BOUNDS, MEASUREMENT_NAMES

ACTUATORS = ("vent_pct", "heat_pct", "screen_pct")
TARGET_VARIABLES = ("air_temp_c", "rh_pct")
SPIKE_COLUMNS = ("air_temp_c", "rh_pct", "co2_ppm", "outside_temp_c", "outside_rh_pct")
LAG_MIN = (5, 15, 30, 60)
ROLL_MIN = (15, 60)
ROLL_COLUMNS = ("air_temp_c", "rh_pct", "solar_w_m2")


@dataclass(frozen=True)
class FeatureParams:
    """What the feature functions need (a subset of the job's parameters)."""

    step_s: int = 60
    horizons_min: tuple[int, ...] = (5, 15, 30, 60)
    max_fill_steps: int = 5
    spike_window_steps: int = 15
    spike_mad_factor: float = 8.0
    latitude: float = 36.1
    longitude: float = -79.95
    essential: tuple[str, ...] = field(default=("air_temp_c", "rh_pct", "outside_temp_c", "vent_pct", "heat_pct", "screen_pct"))

    def steps(self, minutes: float) -> int:
        return max(1, int(round(minutes * 60 / self.step_s)))


def feature_columns() -> list[str]:
    """The feature columns, in model order (plans and targets excluded)."""
    cols = list(MEASUREMENT_NAMES)
    cols += [f"{v}_diff_{m}min" for v in TARGET_VARIABLES for m in LAG_MIN]
    cols += [f"{v}_{stat}_{m}min" for v in ROLL_COLUMNS for m in ROLL_MIN for stat in ("mean", "std")]
    cols += ["hour_sin", "hour_cos", "doy_sin", "doy_cos", "sun_elevation_deg", "inside_outside_temp_diff_c"]
    cols += [f"{a}_change_15min" for a in ACTUATORS]
    return cols


def plan_columns(horizons_min: tuple[int, ...] | list[int]) -> list[str]:
    return [c for h in horizons_min for c in [f"plan_{a}_{h}min" for a in ACTUATORS] + [f"plan_vent_x_dtemp_{h}min"]]


def target_columns(horizons_min: tuple[int, ...] | list[int]) -> list[str]:
    return [f"target_{v}_{h}min" for h in horizons_min for v in TARGET_VARIABLES]


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
        floor = 0.5 if c.endswith("_c") else 2.0  # a flat series has MAD 0: never call noise a spike
        out[c] = x.where(~(dev > factor * np.maximum(mad * 1.4826, floor)))
    return out


def fill_gaps(frame: pd.DataFrame, max_fill_steps: int) -> pd.DataFrame:
    """Interpolate gaps of at most ``max_fill_steps`` (actuators: hold the last value); longer gaps stay NaN."""
    out = frame.copy()
    for c in out.columns:
        if c in ACTUATORS:
            out[c] = _limited(out[c], max_fill_steps, method="ffill")
        else:
            out[c] = _limited(out[c], max_fill_steps, method="linear")
    return out


def _limited(x: pd.Series, limit: int, method: str) -> pd.Series:
    """Fill NaN runs of length <= limit only (pandas' ``limit`` would part-fill longer runs)."""
    isna = x.isna()
    run_id = (~isna).cumsum()
    run_len = isna.groupby(run_id).transform("sum")
    fillable = isna & (run_len <= limit)
    filled = x.ffill() if method == "ffill" else x.interpolate(method="linear", limit_area="inside")
    return x.where(~fillable, filled)


def sun_elevation_deg(ts: pd.DatetimeIndex, latitude: float, longitude: float) -> np.ndarray:
    """Solar elevation (degrees) with pvlib's fast analytical formulas."""
    from pvlib import solarposition

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
    """Raw readings of ONE greenhouse -> rows with ``greenhouse_id``, ``ts``, features, plans, targets.

    With ``training`` rows lacking any target or plan are dropped; otherwise (serving) only rows
    lacking features are dropped, so the latest step is kept."""
    if raw.empty:
        return pd.DataFrame()
    greenhouse_id = str(raw["greenhouse_id"].iloc[0])
    grid = resample(clean_readings(raw), params.step_s)
    grid = fill_gaps(remove_spikes(grid, params.spike_window_steps, params.spike_mad_factor), params.max_fill_steps)
    f = build_features(grid, params)
    needed = [c for c in feature_columns() if c not in ("co2_ppm", "par_umol_m2_s", "wind_m_s", "outside_rh_pct", "solar_w_m2")] + list(params.essential)
    if training:
        needed += plan_columns(params.horizons_min) + target_columns(params.horizons_min)
    f = f.dropna(subset=sorted(set(needed)))
    # optional sensors: a missing value becomes the greenhouse's median rather than dropping the row
    for c in feature_columns():
        if f[c].isna().any():
            f[c] = f[c].fillna(f[c].median())
    f = f.reset_index()
    f.insert(0, "greenhouse_id", greenhouse_id)
    cols = ["greenhouse_id", "ts"] + feature_columns() + plan_columns(params.horizons_min) + target_columns(params.horizons_min)
    return f[cols].astype({c: "float64" for c in cols[2:]})


# ---------------------------------------------------------------------------------------------
# Serving: the newest step's features on numpy.
#
# ``greenhouse_features`` is the reference (training and the lake use it). Serving needs only the
# newest complete step, after every new reading, on a replica's event loop: the same steps on
# pandas cost ~100 ms for a 2-hour window, nearly all of it per-operation overhead on ~120-row
# series. ``latest_feature_row`` repeats each step on numpy arrays over the whole window (so gap
# fills, spike medians and the optional-sensor medians see what the reference sees) and
# ``tests/preprocess/test_latest_features.py`` holds the two equal on generated windows.

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_US = timedelta(microseconds=1)


def micros(ts: datetime) -> int:
    """Microseconds since the epoch of an aware time (what :class:`RawColumns` keeps)."""
    return (ts - _EPOCH) // _ONE_US


def from_micros(us: int) -> datetime:
    """The UTC time ``us`` microseconds after the epoch."""
    return _EPOCH + int(us) * _ONE_US
_LOW = np.array([MEASUREMENT_BOUNDS[n][0] for n in MEASUREMENT_NAMES])
_HIGH = np.array([MEASUREMENT_BOUNDS[n][1] for n in MEASUREMENT_NAMES])


@lru_cache(maxsize=64)
def _sun_elevation_day(day: date, step_s: int, latitude: float, longitude: float) -> np.ndarray:
    """:func:`sun_elevation_deg` at every step of one UTC day (pvlib works elementwise, so each
    value is the one a single-step call gives; one call a day instead of one per step)."""
    start = pd.Timestamp(day, tz="UTC")
    return sun_elevation_deg(pd.date_range(start, start + pd.Timedelta(days=1), freq=f"{step_s}s", inclusive="left"), latitude, longitude)


def _sun_elevation_at(ts: datetime, step_s: int, latitude: float, longitude: float) -> float:
    midnight = ts.replace(hour=0, minute=0, second=0, microsecond=0)
    index, rest = divmod(int((ts - midnight).total_seconds()), step_s)
    if rest or 86_400 % step_s:  # off the day's grid: compute this one
        return float(sun_elevation_deg(pd.DatetimeIndex([ts]), latitude, longitude)[0])
    return float(_sun_elevation_day(ts.date(), step_s, latitude, longitude)[index])


def _rolling_median_centered(x: np.ndarray, window: int, min_periods: int) -> np.ndarray:
    """pandas' ``rolling(window, center=True, min_periods).median()`` (NaNs skipped) along the last
    axis of ``x`` (one series, or several stacked)."""
    n = x.shape[-1]
    offset = (window - 1) // 2  # pandas centres a window on [i + offset + 1 - window, i + offset]
    padded = np.full(x.shape[:-1] + (n + window - 1,), np.nan)
    padded[..., window - 1 - offset : window - 1 - offset + n] = x
    windows = np.sort(np.lib.stride_tricks.sliding_window_view(padded, window, axis=-1), axis=-1)  # NaNs sort last
    count = window - np.isnan(windows).sum(axis=-1)
    lo = (np.maximum(count - 1, 0) // 2)[..., None]
    hi = np.minimum(count // 2, window - 1)[..., None]
    med = (np.take_along_axis(windows, lo, axis=-1) + np.take_along_axis(windows, hi, axis=-1))[..., 0] / 2.0
    return np.where(count >= min_periods, med, np.nan)


def _rolling_trailing(x: np.ndarray, window: int, min_periods: int) -> tuple[np.ndarray, np.ndarray]:
    """pandas' trailing ``rolling(window, min_periods)`` mean and std (ddof 1), NaNs skipped, along
    the last axis of ``x`` (one series, or several stacked)."""
    padded = np.concatenate([np.full(x.shape[:-1] + (window - 1,), np.nan), x], axis=-1)
    windows = np.lib.stride_tricks.sliding_window_view(padded, window, axis=-1)
    valid = ~np.isnan(windows)
    count = valid.sum(axis=-1)
    mean = np.where(valid, windows, 0.0).sum(axis=-1) / np.maximum(count, 1)
    sq = np.where(valid, (windows - mean[..., None]) ** 2, 0.0).sum(axis=-1)
    std = np.sqrt(sq / np.maximum(count - 1, 1))
    enough = count >= min_periods
    return np.where(enough, mean, np.nan), np.where(enough & (count >= 2), std, np.nan)


def _shift(x: np.ndarray, k: int) -> np.ndarray:
    """``x`` moved ``k`` rows later (pandas ``shift(k)``, k > 0)."""
    out = np.full_like(x, np.nan)
    if k < len(x):
        out[k:] = x[: len(x) - k]
    return out


def _fill_limited(x: np.ndarray, limit: int, hold: bool) -> np.ndarray:
    """:func:`fill_gaps` for one column: NaN runs of at most ``limit`` are filled, linearly inside
    the series, or (``hold``) with the last value."""
    isna = np.isnan(x)
    if not isna.any() or isna.all():
        return x
    idx = np.arange(len(x))
    valid = idx[~isna]
    if hold:
        last = np.maximum.accumulate(np.where(isna, -1, idx))
        filled = np.where(last >= 0, x[np.maximum(last, 0)], np.nan)
    else:
        filled = np.where((idx > valid[0]) & (idx < valid[-1]), np.interp(idx, valid, x[valid]), np.nan)
        filled[~isna] = x[~isna]
    # length of the NaN run each position is in
    edges = np.diff(np.concatenate([[0], isna.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    run_len = np.zeros(len(x), dtype=np.int64)
    for s, e in zip(starts, ends):
        run_len[s:e] = e - s
    return np.where(isna & (run_len <= limit), filled, x)


@dataclass(frozen=True)
class RawColumns:
    """One greenhouse's raw rows as arrays, in arrival order: ``times_us`` (microseconds since the
    epoch), ``devices`` (a code per device id) and ``values`` (one column per measurement name,
    NaN where absent). The online window keeps its rows in this form as they arrive."""

    times_us: np.ndarray
    devices: np.ndarray
    values: np.ndarray

    @classmethod
    def from_rows(cls, rows: list[dict], codes: dict[str, int] | None = None) -> "RawColumns":
        """Raw-table rows (dicts with ``device_id``, ``ts`` and measurement values; ``codes`` maps
        device ids to codes and grows with new ones)."""
        codes = {} if codes is None else codes
        measurements = itemgetter(*MEASUREMENT_NAMES)
        times, devices, values = [], [], []
        for row in rows:
            times.append(micros(row["ts"]))
            devices.append(codes.setdefault(str(row.get("device_id")), len(codes)))
            try:
                values.append(measurements(row))  # online rows carry every name (None when absent)
            except KeyError:
                values.append(tuple(row.get(name) for name in MEASUREMENT_NAMES))
        return cls(
            np.array(times, dtype=np.int64),
            np.array(devices, dtype=np.int64),
            np.array(values, dtype=np.float64).reshape(len(values), len(MEASUREMENT_NAMES)),  # None -> NaN
        )

    def __len__(self) -> int:
        return len(self.times_us)

    def select(self, mask: np.ndarray) -> "RawColumns":
        return RawColumns(self.times_us[mask], self.devices[mask], self.values[mask])

    def append(self, other: "RawColumns") -> "RawColumns":
        return RawColumns(
            np.concatenate([self.times_us, other.times_us]), np.concatenate([self.devices, other.devices]), np.concatenate([self.values, other.values])
        )


def latest_feature_row(rows: "list[dict] | RawColumns", params: FeatureParams) -> dict | None:
    """Feature columns and ``ts`` of the newest complete step of ONE greenhouse's raw ``rows``
    (dicts with ``device_id``, ``ts`` and measurement values, or :class:`RawColumns`): the last row
    ``greenhouse_features(..., training=False)`` would return, without its plan and target columns.
    ``None`` when no step has every needed feature."""
    raw_cols = rows if isinstance(rows, RawColumns) else RawColumns.from_rows(rows)
    if not len(raw_cols):
        return None
    names = MEASUREMENT_NAMES
    # clean_readings: the first reading of a (device, ts) wins; values outside physical bounds go
    ident = (raw_cols.devices << 52) | raw_cols.times_us  # times below 2**52 us: until the year 2112
    _, first_seen = np.unique(ident, return_index=True)
    if len(first_seen) < len(ident):
        raw_cols = raw_cols.select(np.sort(first_seen))
    raw = raw_cols.values
    valid = (raw >= _LOW) & (raw <= _HIGH)  # False for NaN too
    # resample: mean of each step's readings on a regular grid
    key = raw_cols.times_us // (int(params.step_s) * 1_000_000)
    first = int(key.min())
    n = int(key.max()) - first + 1
    pos = key - first
    zeroed = np.where(valid, raw, 0.0)
    col = {}
    for j, name in enumerate(names):
        count = np.bincount(pos, weights=valid[:, j], minlength=n)
        total = np.bincount(pos, weights=zeroed[:, j], minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            col[name] = np.where(count > 0, total / count, np.nan)
    # remove_spikes, then fill_gaps
    w = params.spike_window_steps
    x = np.stack([col[c] for c in SPIKE_COLUMNS])
    dev = np.abs(x - _rolling_median_centered(x, w, 3))
    mad = _rolling_median_centered(dev, w, 3)
    floor = np.array([[0.5 if c.endswith("_c") else 2.0] for c in SPIKE_COLUMNS])
    with np.errstate(invalid="ignore"):
        spike = dev > params.spike_mad_factor * np.maximum(mad * 1.4826, floor)
    for i, c in enumerate(SPIKE_COLUMNS):
        col[c] = np.where(spike[i], np.nan, x[i])
    col = {c: _fill_limited(x, params.max_fill_steps, hold=c in ACTUATORS) for c, x in col.items()}
    # build_features (columns that can be NaN; the calendar and sun columns never are)
    f = dict(col)
    for v in TARGET_VARIABLES:
        for m in LAG_MIN:
            f[f"{v}_diff_{m}min"] = col[v] - _shift(col[v], params.steps(m))
    rolled = np.stack([col[v] for v in ROLL_COLUMNS])
    for m in ROLL_MIN:
        w = params.steps(m)
        mean, std = _rolling_trailing(rolled, w, max(2, w // 2))
        for i, v in enumerate(ROLL_COLUMNS):
            f[f"{v}_mean_{m}min"], f[f"{v}_std_{m}min"] = mean[i], std[i]
    f["inside_outside_temp_diff_c"] = col["air_temp_c"] - col["outside_temp_c"]
    for a in ACTUATORS:
        f[f"{a}_change_15min"] = col[a] - _shift(col[a], params.steps(15))
    optional = ("co2_ppm", "par_umol_m2_s", "wind_m_s", "outside_rh_pct", "solar_w_m2")
    needed = sorted({c for c in f if c not in optional} | set(params.essential))
    kept = ~np.any(np.isnan(np.stack([f[c] for c in needed])), axis=0)
    if not kept.any():
        return None
    last = int(np.flatnonzero(kept)[-1])
    ts = _EPOCH + timedelta(seconds=(first + last) * int(params.step_s))
    hours = ts.hour + ts.minute / 60.0
    doy = ts.timetuple().tm_yday
    calendar = {  # build_features' calendar and sun columns, for the newest step only
        "hour_sin": math.sin(2 * math.pi * hours / 24.0),
        "hour_cos": math.cos(2 * math.pi * hours / 24.0),
        "doy_sin": math.sin(2 * math.pi * doy / 365.25),
        "doy_cos": math.cos(2 * math.pi * doy / 365.25),
        "sun_elevation_deg": _sun_elevation_at(ts, int(params.step_s), params.latitude, params.longitude),
    }
    out: dict = {}
    for c in feature_columns():
        if c in calendar:
            out[c] = float(calendar[c])
            continue
        value = float(f[c][last])
        if np.isnan(value):  # an optional sensor's gap: the greenhouse's median, as in training
            rest = f[c][kept]
            rest = rest[~np.isnan(rest)]
            value = float(np.median(rest)) if len(rest) else np.nan
        out[c] = value
    out["ts"] = ts
    return out
