"""Confidence intervals for forecast skill: a moving-block bootstrap over time.

Forecast errors an hour apart are not independent (the same weather, the same cloud), so
resampling single rows would give intervals far too narrow. The errors are summed per greenhouse
and hour; a bootstrap draw strings together blocks of consecutive hours (a day by default, the
same hours for every greenhouse, since they share the weather) picked at random starts, wrapping
around the window's end, until it is as long as the window; the skill of each draw gives the
interval's percentiles.

Skill is ``1 - RMSE(model) / RMSE(baseline)`` (the baseline is persistence). Two models scored on
the same rows give a paired interval for the difference of their skills
(:func:`skill_difference`), which is what promotion needs: is the challenger better by more than
chance?
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_BLOCK_HOURS = 24
DRAWS = 1000
LEVEL = 0.9
"""The intervals' confidence level: 5 % of draws fall below the low end, 5 % above the high."""


@dataclass(frozen=True)
class HourlyErrors:
    """Squared errors summed per greenhouse (rows) and hour of the window (columns): the model's,
    the baseline's, and how many forecasts each cell holds."""

    greenhouses: tuple[str, ...]
    model_sq: np.ndarray
    baseline_sq: np.ndarray
    count: np.ndarray

    @property
    def hours(self) -> int:
        return self.count.shape[1]

    def only(self, greenhouse: str) -> HourlyErrors:
        """The cells of one greenhouse."""
        i = self.greenhouses.index(greenhouse)
        return HourlyErrors((greenhouse,), self.model_sq[i : i + 1], self.baseline_sq[i : i + 1], self.count[i : i + 1])


def hourly_errors(ts_s: np.ndarray, greenhouse_ids: np.ndarray, model_error: np.ndarray, baseline_error: np.ndarray) -> HourlyErrors:
    """Sum the squared errors of each forecast (made at ``ts_s``, seconds since the epoch) into
    its greenhouse and hour of the window."""
    hour = (np.asarray(ts_s, dtype=np.int64) // 3600).astype(np.int64)
    hour -= hour.min() if len(hour) else 0
    names, row = np.unique(np.asarray(greenhouse_ids).astype(str), return_inverse=True)
    shape = (len(names), int(hour.max()) + 1 if len(hour) else 0)
    cell = row * shape[1] + hour

    def summed(values: np.ndarray) -> np.ndarray:
        return np.bincount(cell, weights=values, minlength=shape[0] * shape[1]).reshape(shape)

    return HourlyErrors(tuple(names.tolist()), summed(np.square(model_error)), summed(np.square(baseline_error)), summed(np.ones(len(cell))))


def block_hours_for(hours: int) -> int:
    """The block length: a day, or a third of a window shorter than three days (at least one
    hour), so that a short window still yields distinct draws."""
    return max(1, min(DEFAULT_BLOCK_HOURS, hours // 3))


def _draw_hours(hours: int, block_hours: int, draws: int, seed: int) -> np.ndarray:
    """``draws`` rows of hour indices: blocks of ``block_hours`` consecutive hours at random
    starts (wrapping around), cut to the window's length."""
    rng = np.random.default_rng(seed)
    blocks = -(-hours // block_hours)
    starts = rng.integers(0, hours, size=(draws, blocks))
    return ((starts[:, :, None] + np.arange(block_hours)) % hours).reshape(draws, -1)[:, :hours]


def _skill(model_sq: np.ndarray, baseline_sq: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1.0 - np.sqrt(model_sq / baseline_sq)


@dataclass(frozen=True)
class Interval:
    """A figure and its bootstrap interval (``low``, ``high`` at :data:`LEVEL`)."""

    value: float
    low: float
    high: float

    def as_dict(self, name: str) -> dict[str, float]:
        """``{name: value, name_ci_low: low, name_ci_high: high}``."""
        return {name: self.value, f"{name}_ci_low": self.low, f"{name}_ci_high": self.high}


def _interval(value: float, draws: np.ndarray) -> Interval:
    finite = draws[np.isfinite(draws)]
    if not len(finite):
        return Interval(value, float("nan"), float("nan"))
    low, high = np.quantile(finite, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return Interval(value, float(low), float(high))


def skill_interval(errors: HourlyErrors, *, draws: int = DRAWS, seed: int = 0, block_hours: int | None = None) -> Interval:
    """The pooled skill of ``errors`` (all its greenhouses) and its bootstrap interval."""
    model, baseline = errors.model_sq.sum(axis=0), errors.baseline_sq.sum(axis=0)
    value = float(_skill(model.sum(), baseline.sum()))
    if errors.hours == 0:
        return Interval(value, float("nan"), float("nan"))
    picks = _draw_hours(errors.hours, block_hours or block_hours_for(errors.hours), draws, seed)
    return _interval(value, _skill(model[picks].sum(axis=1), baseline[picks].sum(axis=1)))


def skill_difference(a: HourlyErrors, b: HourlyErrors, *, draws: int = DRAWS, seed: int = 0, block_hours: int | None = None) -> Interval:
    """Skill of ``a`` minus skill of ``b``, scored on the same rows (the same baseline), with a
    paired bootstrap interval: each draw takes the same hours for both."""
    if a.count.shape != b.count.shape or not np.array_equal(a.count, b.count):
        raise ValueError("both models must be scored on the same rows")
    am, bm, base = a.model_sq.sum(axis=0), b.model_sq.sum(axis=0), a.baseline_sq.sum(axis=0)
    value = float(_skill(am.sum(), base.sum()) - _skill(bm.sum(), base.sum()))
    if a.hours == 0:
        return Interval(value, float("nan"), float("nan"))
    picks = _draw_hours(a.hours, block_hours or block_hours_for(a.hours), draws, seed)
    sums = base[picks].sum(axis=1)
    return _interval(value, _skill(am[picks].sum(axis=1), sums) - _skill(bm[picks].sum(axis=1), sums))
