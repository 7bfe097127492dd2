"""The feature engine: one greenhouse's raw readings -> feature rows, on numpy arrays.

The one definition of every feature (:mod:`app.preprocess.spec` names them). Training runs it
over a greenhouse's whole history under Ray Data and keeps every complete row with its plans and
targets; serving runs it over the online window after new readings and keeps the newest row.
Both see the same steps over the same rows, so a feature is written once and what a model was
trained on is what it is served. The steps, in order:

1. clean: the first reading of a (device, time) wins; values outside physical bounds go;
2. resample: each measurement's mean over a step's readings, on a regular UTC grid of ``step_s``
   (a row at ``t`` holds the readings of ``[t, t + step_s)``); an actuator the series never
   reports while it reports another one is equipment the greenhouse lacks and reads 0 %;
3. spikes: values further than ``spike_mad_factor`` robust deviations from a centred rolling
   median are blanked; then gaps of at most ``max_fill_steps`` are filled (linearly; actuators
   hold their last value);
4. features: lags, trailing rolling statistics, calendar and sun, inside-outside difference,
   actuator changes; with labels, plans (mean actuator settings ahead) and targets (values ahead);
5. rows: a row is kept when it has every required column (:func:`~app.preprocess.spec.
   required_columns`); an optional sensor's missing value becomes the median of the kept rows.

Windows given in minutes become whole steps of the grid (:class:`~app.preprocess.spec.
FeatureParams`): lags and changes at least one step, rolling windows at least two, the spike
window at most an hour on a coarse grid; so any step from 1 to 15 minutes gives rows. The step
itself follows the data (:mod:`app.preprocess.cadence`): a grid finer than the readings would be
mostly gaps.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from app.contracts.reading import MEASUREMENT_BOUNDS, MEASUREMENT_NAMES
from app.contracts.vocabulary import ACTUATORS, TARGET_VARIABLES, plan_column, target_column, vent_exchange_column
from app.preprocess import windows
from app.preprocess.raw import RawColumns
from app.preprocess.solar import calendar_features
from app.preprocess.spec import CALENDAR_COLUMNS, CHANGE_MIN, FEATURE_COLUMNS, LAG_MIN, ROLL_COLUMNS, ROLL_MIN, SPIKE_COLUMNS, FeatureParams, label_columns, required_columns, required_sensors

_LOW = np.array([MEASUREMENT_BOUNDS[n][0] for n in MEASUREMENT_NAMES])
_HIGH = np.array([MEASUREMENT_BOUNDS[n][1] for n in MEASUREMENT_NAMES])
# a flat series has MAD 0: a deviation under this floor (per unit) is never called a spike
_SPIKE_FLOOR = np.array([[0.5 if c.endswith("_c") else 2.0] for c in SPIKE_COLUMNS])
_PACKED_DEVICE_CODES = 1 << 11  # device codes below this pack with a time (< 2**52 us: the year 2112) into one int64


@dataclass(frozen=True)
class FeatureRows:
    """The kept rows of one greenhouse: ``seconds`` (grid times, seconds since the epoch, UTC),
    ``columns`` (their names, in order) and ``values`` (one row of the matrix per column)."""

    seconds: np.ndarray
    columns: list[str]
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.seconds)


def first_readings(raw: RawColumns) -> RawColumns:
    """The rows without repeats: the first reading of each (device, time) wins."""
    if len(raw) and int(raw.devices.max()) < _PACKED_DEVICE_CODES and int(raw.devices.min()) >= 0:
        _, first = np.unique((raw.devices << 52) | raw.times_us, return_index=True)
    else:  # many devices: sort by (device, time), stably so the first of equal pairs leads
        order = np.lexsort((raw.times_us, raw.devices))
        d, t = raw.devices[order], raw.times_us[order]
        lead = np.ones(len(order), dtype=bool)
        lead[1:] = (d[1:] != d[:-1]) | (t[1:] != t[:-1])
        first = order[lead]
    return raw if len(first) == len(raw) else raw.select(np.sort(first))


def resample(raw: RawColumns, step_s: int) -> tuple[int, dict[str, np.ndarray]]:
    """(first step, in steps since the epoch; each measurement's grid series): the mean of each
    step's readings within physical bounds, NaN where a step has none."""
    valid = (raw.values >= _LOW) & (raw.values <= _HIGH)  # False for NaN too
    key = raw.times_us // (int(step_s) * 1_000_000)
    first = int(key.min())
    n, width = int(key.max()) - first + 1, len(MEASUREMENT_NAMES)
    cell = ((key - first)[:, None] * width + np.arange(width)).ravel()  # (step, measurement), row-major
    count = np.bincount(cell, weights=valid.ravel(), minlength=n * width).reshape(n, width)
    total = np.bincount(cell, weights=np.where(valid, raw.values, 0.0).ravel(), minlength=n * width).reshape(n, width)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.ascontiguousarray(np.where(count > 0, total / count, np.nan).T)
    return first, dict(zip(MEASUREMENT_NAMES, means))


def absent_actuators_read_zero(grid: dict[str, np.ndarray], raw: RawColumns) -> None:
    """Set (in place) every actuator ``raw`` never reports to 0 %, when it reports another one.

    A greenhouse without a screen never reports ``screen_pct``: equipment it lacks never moves, so
    it reads as closed, and the greenhouse has rows. An actuator that is reported with gaps keeps
    its gaps (held or left, as any measurement's), and when no actuator is reported at all the
    actuator device is silent, not absent: nothing is set."""
    reported = reported_measurements(raw)
    if not reported & set(ACTUATORS):
        return
    for a in ACTUATORS:
        if a not in reported:
            grid[a] = np.zeros_like(grid[a])


def reported_measurements(raw: RawColumns) -> set[str]:
    """The measurements with at least one value in ``raw`` (within bounds or not)."""
    if not len(raw):
        return set()
    return {n for n, present in zip(MEASUREMENT_NAMES, (~np.isnan(raw.values)).any(axis=0)) if present}


def missing_sensors(raw: RawColumns, params: FeatureParams) -> tuple[str, ...]:
    """The measurements ``raw`` never reports without which no row can be kept: the
    :func:`~app.preprocess.spec.required_sensors`, and the essential actuators when it reports no
    actuator at all (empty for no rows: nothing is missing from nothing)."""
    if not len(raw):
        return ()
    reported = reported_measurements(raw)
    missing = [n for n in required_sensors(params) if n not in reported]
    if not reported & set(ACTUATORS):
        missing += [a for a in ACTUATORS if a in params.essential]
    return tuple(missing)


def remove_spikes(grid: dict[str, np.ndarray], params: FeatureParams) -> None:
    """Blank (in place) isolated spikes of :data:`~app.preprocess.spec.SPIKE_COLUMNS`: values further
    than ``spike_mad_factor`` robust deviations (1.4826 MAD) from the centred rolling median over
    :meth:`~app.preprocess.spec.FeatureParams.spike_steps` steps."""
    x = np.stack([grid[c] for c in SPIKE_COLUMNS])
    window = params.spike_steps()
    dev = np.abs(x - windows.rolling_median_centered(x, window, 3))
    mad = windows.rolling_median_centered(dev, window, 3)
    with np.errstate(invalid="ignore"):
        spike = dev > params.spike_mad_factor * np.maximum(mad * 1.4826, _SPIKE_FLOOR)
    for i, c in enumerate(SPIKE_COLUMNS):
        grid[c] = np.where(spike[i], np.nan, x[i])


def fill_gaps(grid: dict[str, np.ndarray], params: FeatureParams) -> None:
    """Fill (in place) gaps of at most ``max_fill_steps``: measurements linearly, actuators by
    holding their last setting (an actuator stays where it was until told otherwise)."""
    for c, x in grid.items():
        grid[c] = windows.fill_limited(x, params.max_fill_steps, hold=c in ACTUATORS)


def clean_grid(raw: RawColumns, params: FeatureParams) -> tuple[int, dict[str, np.ndarray]]:
    """Steps 1-3 of the module docstring: (first step, cleaned grid series per measurement)."""
    first, grid = resample(first_readings(raw), params.step_s)
    absent_actuators_read_zero(grid, raw)
    remove_spikes(grid, params)
    fill_gaps(grid, params)
    return first, grid


def derived_features(grid: dict[str, np.ndarray], params: FeatureParams) -> dict[str, np.ndarray]:
    """Every feature column over the grid but the calendar ones (which depend on the time only:
    :func:`feature_rows` computes them for the rows it returns)."""
    f = dict(grid)
    for v in TARGET_VARIABLES:
        for m in LAG_MIN:
            f[f"{v}_diff_{m}min"] = grid[v] - windows.shift(grid[v], params.steps(m))
    rolled = np.stack([grid[v] for v in ROLL_COLUMNS])
    for m in ROLL_MIN:
        w = params.window_steps(m)
        mean, std = windows.rolling_mean_std(rolled, w, max(2, w // 2))
        for i, v in enumerate(ROLL_COLUMNS):
            f[f"{v}_mean_{m}min"], f[f"{v}_std_{m}min"] = mean[i], std[i]
    f["inside_outside_temp_diff_c"] = grid["air_temp_c"] - grid["outside_temp_c"]
    for a in ACTUATORS:
        f[f"{a}_change_{CHANGE_MIN}min"] = grid[a] - windows.shift(grid[a], params.steps(CHANGE_MIN))
    return f


def labels(grid: dict[str, np.ndarray], params: FeatureParams) -> dict[str, np.ndarray]:
    """Training's columns for each horizon: plans (each actuator's mean setting over the horizon
    ahead), the vent exchange (vent plan times the outside-inside difference) and targets."""
    out = {}
    for h in params.horizons_min:
        k = params.steps(h)
        for a in ACTUATORS:
            out[plan_column(a, h)] = windows.future_mean(grid[a], k)
        out[vent_exchange_column(h)] = out[plan_column("vent_pct", h)] * (grid["outside_temp_c"] - grid["air_temp_c"]) / 100.0
        for v in TARGET_VARIABLES:
            out[target_column(v, h)] = windows.shift(grid[v], -k)
    return out


def feature_rows(raw: RawColumns, params: FeatureParams, *, with_labels: bool = False, require_labels: bool = False, newest_only: bool = False) -> FeatureRows:
    """The engine (module docstring): ``raw`` -> the kept rows' features, and with ``with_labels``
    their plans and targets, which ``require_labels`` makes required (training's rows). With
    ``newest_only`` only the newest kept row is returned (serving), with the same values."""
    names = (*FEATURE_COLUMNS, *(label_columns(params.horizons_min) if with_labels else ()))
    if not len(raw):
        return FeatureRows(np.zeros(0, dtype=np.int64), list(names), np.zeros((len(names), 0)))
    first, grid = clean_grid(raw, params)
    f = derived_features(grid, params)
    if with_labels:
        f.update(labels(grid, params))
    computed, calendar, needed = _layout(names, required_columns(params, labels=require_labels))
    matrix = np.stack([f[names[i]] for i in computed])  # whole-matrix operations: serving pays per call, not per column
    kept = np.flatnonzero(~np.isnan(matrix[needed]).any(axis=0))
    rows = kept[-1:] if newest_only else kept
    seconds = (first + rows) * int(params.step_s)
    values = np.empty((len(names), len(rows)))
    values[computed] = matrix[:, rows]
    by_time = calendar_features(seconds, params.latitude, params.longitude)
    values[calendar] = np.stack([by_time[names[i]] for i in calendar])
    fill_optional(values, f, kept)
    return FeatureRows(seconds, list(names), values)


@lru_cache(maxsize=64)
def _layout(names: tuple[str, ...], needed: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where ``names`` has the computed columns and the calendar ones (which depend on the time
    only, so they are computed for the returned rows alone), and where among the computed ones
    the ``needed`` columns are (the calendar ones never are NaN)."""
    computed = [i for i, c in enumerate(names) if c not in CALENDAR_COLUMNS]
    calendar = [i for i, c in enumerate(names) if c in CALENDAR_COLUMNS]
    position = {names[i]: k for k, i in enumerate(computed)}
    return np.array(computed), np.array(calendar), np.array([position[c] for c in needed if c in position])


def fill_optional(values: np.ndarray, columns: dict[str, np.ndarray], kept: np.ndarray) -> None:
    """Fill (in place) the gaps left in the returned feature rows (optional sensors: no other
    feature can be NaN in a kept row) with the column's median over all ``kept`` rows, so a
    greenhouse without a CO2 sensor still has rows; a column with no value at all stays NaN."""
    features = values[: len(FEATURE_COLUMNS)]
    for i in np.flatnonzero(np.isnan(features).any(axis=1)):
        present = columns[FEATURE_COLUMNS[i]][kept]
        present = present[~np.isnan(present)]
        if len(present):
            features[i][np.isnan(features[i])] = np.median(present)
