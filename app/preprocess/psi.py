"""The population stability index (PSI), on numpy: a feature's histogram now against its baseline.

A baseline is a list of interior bin edges and the share of the baseline's values in each bin
(``len(edges) + 1`` bins, the outer two open-ended). :func:`histogram_baseline` makes one from the
feature set's values at the deciles; :func:`normal_baseline` approximates one for feature sets
recorded before the histograms were stored (from p01/p50/p99 only). Values are binned the same way
on both sides (:func:`bin_counts`), so ties (a vent that is mostly closed) merge into fewer bins
instead of breaking the comparison.

``PSI = sum((actual - expected) * ln(actual / expected))`` over the bins, with empty bins floored at
:data:`PSI_FLOOR`. Reading it: below 0.1 stable, 0.1-0.25 a slight shift, above 0.25 a significant
one (the usual rule of thumb; the threshold is ``settings.drift.psi_threshold``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DECILES = tuple(q / 10 for q in range(1, 10))
"""The quantiles whose values become a baseline's interior bin edges."""
NORMAL_DECILE_Z = (-1.2816, -0.8416, -0.5244, -0.2533, 0.0, 0.2533, 0.5244, 0.8416, 1.2816)
"""The standard normal's deciles (the fallback's edges, in standard deviations from the median)."""
Z_P99 = 2.3263
"""The standard normal's 99th percentile: ``p99 - p01`` spans ``2 * Z_P99`` standard deviations."""
PSI_FLOOR = 1e-4
"""Share given to an empty bin (either side), so that ln() stays finite."""


def finite(values: np.ndarray | Sequence[float]) -> np.ndarray:
    """``values`` as float64 without NaN and infinities."""
    x = np.asarray(values, dtype=np.float64)
    return x[np.isfinite(x)]


def histogram_baseline(values: np.ndarray | Sequence[float]) -> tuple[list[float], list[float]]:
    """``(edges, fractions)`` of the finite ``values``: interior edges at the deciles (repeated values
    merged) and the share of the values in each of the ``len(edges) + 1`` bins. Empty input: ``([], [])``."""
    x = finite(values)
    if x.size == 0:
        return [], []
    edges = np.unique(np.quantile(x, DECILES))
    counts = bin_counts(x, edges)
    return [float(e) for e in edges], [float(f) for f in counts / x.size]


def normal_baseline(stats: Mapping[str, Any]) -> tuple[list[float], list[float]] | None:
    """An approximate baseline from ``p01``, ``p50`` and ``p99`` alone, assuming a normal
    distribution: the median as its centre, ``(p99 - p01) / (2 * 2.326)`` as its standard deviation,
    edges at its deciles and a tenth of the values per bin. For feature sets recorded without
    ``bin_edges``; None when the statistics are missing (an all-null column)."""
    try:
        p01, p50, p99 = float(stats["p01"]), float(stats["p50"]), float(stats["p99"])
    except (KeyError, TypeError, ValueError):
        return None
    sigma = (p99 - p01) / (2 * Z_P99)
    if not np.isfinite(sigma) or sigma <= 0:  # a constant column: one edge at its value
        return [p50], [0.0, 1.0]
    return [p50 + z * sigma for z in NORMAL_DECILE_Z], [0.1] * 10


def baseline_of(stats: Mapping[str, Any]) -> tuple[list[float], list[float]] | None:
    """A column's baseline from its stored statistics: the stored histogram (``bin_edges``,
    ``bin_fracs``) when there is one, else :func:`normal_baseline`."""
    edges, fractions = stats.get("bin_edges"), stats.get("bin_fracs")
    if edges is not None and fractions is not None and len(fractions) == len(edges) + 1 and len(fractions) > 0:
        return [float(e) for e in edges], [float(f) for f in fractions]
    return normal_baseline(stats)


def bin_counts(values: np.ndarray | Sequence[float], edges: np.ndarray | Sequence[float]) -> np.ndarray:
    """How many finite ``values`` fall in each of the ``len(edges) + 1`` bins; bin ``i`` holds
    ``edges[i-1] <= x < edges[i]`` (the first from minus infinity, the last to plus infinity)."""
    x = finite(values)
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), x, side="right")
    return np.bincount(idx, minlength=len(edges) + 1).astype(np.int64)


def psi(expected_fractions: np.ndarray | Sequence[float], actual_counts: np.ndarray | Sequence[float]) -> float:
    """The PSI of ``actual_counts`` (per bin) against the baseline's ``expected_fractions``.

    Both sides are normalised to shares and floored at :data:`PSI_FLOOR`. No actual values: NaN
    (nothing to compare), never 0."""
    expected = np.asarray(expected_fractions, dtype=np.float64)
    actual = np.asarray(actual_counts, dtype=np.float64)
    if expected.shape != actual.shape:
        raise ValueError(f"baseline has {expected.size} bins, the counts {actual.size}")
    if actual.sum() <= 0 or expected.sum() <= 0:
        return float("nan")
    e = np.maximum(expected / expected.sum(), PSI_FLOOR)
    a = np.maximum(actual / actual.sum(), PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))
