"""Window operations on regular-grid numpy series, NaN-aware, as the feature engine uses them.

Each works along the last axis, on one series or several stacked (one call for all the columns
that share a window is cheaper than one per column on serving's short windows). Their semantics
are pandas' (``rolling``, ``shift``, limited ``interpolate``/``ffill``), which the first feature
sets were built with; ``tests/preprocess`` holds each equal to its pandas spelling.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def shift(x: np.ndarray, k: int) -> np.ndarray:
    """``x`` moved ``k`` steps later (``k < 0``: earlier), NaN where nothing moved in."""
    out = np.full_like(x, np.nan)
    n = x.shape[-1]
    if 0 <= k < n:
        out[..., k:] = x[..., : n - k]
    elif -n < k < 0:
        out[..., :k] = x[..., -k:]
    return out


def rolling_median_centered(x: np.ndarray, window: int, min_periods: int) -> np.ndarray:
    """Median over a centred window of ``window`` steps, NaNs skipped; NaN with fewer than
    ``min_periods`` values (pandas' ``rolling(window, center=True, min_periods).median()``)."""
    n = x.shape[-1]
    offset = (window - 1) // 2  # pandas centres a window on [i + offset + 1 - window, i + offset]
    padded = np.full(x.shape[:-1] + (n + window - 1,), np.nan)
    padded[..., window - 1 - offset : window - 1 - offset + n] = x
    windows = np.sort(sliding_window_view(padded, window, axis=-1), axis=-1)  # NaNs sort last
    count = window - np.isnan(windows).sum(axis=-1)
    lo = (np.maximum(count - 1, 0) // 2)[..., None]
    hi = np.minimum(count // 2, window - 1)[..., None]
    med = (np.take_along_axis(windows, lo, axis=-1) + np.take_along_axis(windows, hi, axis=-1))[..., 0] / 2.0
    return np.where(count >= min_periods, med, np.nan)


def rolling_mean_std(x: np.ndarray, window: int, min_periods: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (ddof 1) over the trailing ``window`` steps, NaNs skipped; NaN
    with fewer than ``min_periods`` values (the std also with fewer than two)."""
    lead = np.zeros(x.shape[:-1] + (window - 1,))
    valid = ~np.isnan(x)
    # NaN -> 0 with a 0/1 weight: sums over the windows then skip the gaps exactly, and the
    # deviations are squared in one temporary instead of masking every window (training's
    # series are ~30k steps long)
    zeroed = sliding_window_view(np.concatenate([lead, np.where(valid, x, 0.0)], axis=-1), window, axis=-1)
    weight = sliding_window_view(np.concatenate([lead, valid.astype(np.float64)], axis=-1), window, axis=-1)
    running = np.cumsum(valid, axis=-1)
    count = running.copy()
    count[..., window:] -= running[..., :-window]  # values in each window, counted exactly
    mean = zeroed.sum(axis=-1) / np.maximum(count, 1)
    dev = zeroed - mean[..., None]
    dev *= weight
    np.square(dev, out=dev)
    std = np.sqrt(dev.sum(axis=-1) / np.maximum(count - 1, 1))
    enough = count >= min_periods
    return np.where(enough, mean, np.nan), np.where(enough & (count >= 2), std, np.nan)


def future_mean(x: np.ndarray, steps: int) -> np.ndarray:
    """Mean over the next ``steps`` steps, (t, t + steps]; NaN unless all of them have a value."""
    out = np.full_like(x, np.nan)
    n = x.shape[-1]
    if steps < n:  # a NaN in the window makes its sum NaN: every value is needed
        out[..., : n - steps] = sliding_window_view(x[..., 1:], steps, axis=-1).sum(axis=-1) / steps
    return out


def fill_limited(x: np.ndarray, limit: int, *, hold: bool) -> np.ndarray:
    """Fill NaN runs of at most ``limit`` steps of one series: linearly between the values around
    them, or (``hold``) with the last value before them; longer runs stay NaN (pandas' own
    ``limit`` would part-fill them), and so do runs at the start (and, linearly, at the end)."""
    isna = np.isnan(x)
    if limit <= 0 or not isna.any() or isna.all():
        return x
    idx = np.arange(len(x))
    if hold:
        last = np.maximum.accumulate(np.where(isna, -1, idx))
        filled = np.where(last >= 0, x[np.maximum(last, 0)], np.nan)
    else:
        valid = idx[~isna]
        filled = np.where((idx > valid[0]) & (idx < valid[-1]), np.interp(idx, valid, x[valid]), np.nan)
    edges = np.diff(isna.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    lengths = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    run_len = np.zeros(len(x), dtype=np.int64)
    run_len[isna] = np.repeat(lengths, lengths)  # each NaN's run, runs in order
    return np.where(isna & (run_len <= limit), filled, x)
