"""Closed-loop calibration of a forecast interval's lower edge, per model, greenhouse and horizon.

The controller keeps one :class:`EdgeCalibration` next to its forecast offsets; the MPC scales the
model's lower half-widths by what it measured here (:func:`~app.control.policy.scale_edges`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import numpy as np

from app.contracts.vocabulary import ACTUATORS, horizon_of, interval_key, is_interval_key


class EdgeCalibration:
    """Closed-loop calibration of the forecast interval's lower half (online split-conformal).

    The model's edges hold 90 % of the outcomes of its validation window, open loop, where the
    actuators moved within each horizon (the climate computer's excitation): wider than what a plan
    held by the controller leaves uncertain; and on a greenhouse unlike the training fleet the
    model may be further off than it thinks. Per key (model version and greenhouse) and horizon
    this keeps the *scores* of the last ``window`` settled forecasts whose plan was held (no later
    decision moved an actuator by more than ``held_tolerance_pct`` before it fell due: the shortest
    horizon always is), how many lower half-widths (corrected point minus lower edge) the outcome
    fell below the corrected point; the scale is their ``1 - miss_rate`` quantile: the edge, moved
    to that many half-widths, holds all but ``miss_rate`` of what the plans led to lately. Until
    ``min_scores`` have settled the scale is 1 (the model's own edge). The interval's shape stays
    the model's: wider where it is unsure (dawn, a screen opening), narrow on a steady night.

    ``later_miss_rate`` (default ``miss_rate``) applies to the horizons after the shortest: the
    shortest is the step the next decision cannot change, the later ones are a plan the next
    decisions revise with fresh measurements, so they need hold only on most days, not all.
    """

    def __init__(
        self,
        miss_rate: float = 0.02,
        later_miss_rate: float | None = None,
        window: int = 288,
        min_scores: int = 24,
        max_scale: float = 3.0,
        max_late_s: float = 300.0,
        held_tolerance_pct: float = 10.0,
    ) -> None:
        later = miss_rate if later_miss_rate is None else later_miss_rate
        if not (0.0 < miss_rate < 1.0 and 0.0 < later < 1.0):
            raise ValueError("miss rates must be within (0, 1)")
        self.miss_rate, self.later_miss_rate, self.window, self.min_scores, self.max_scale = miss_rate, later, window, min_scores, max_scale
        self.max_late = timedelta(seconds=max_late_s)
        self.held_tolerance_pct = held_tolerance_pct
        self._pending: dict[str, dict[tuple[datetime, int], tuple[datetime, float, float, tuple[float, ...]]]] = {}
        self._scores: dict[str, dict[int, deque[float]]] = {}

    def record(self, key: str, ts: datetime, keys: Sequence[str], row: Sequence[float], setpoints: Mapping[str, float] | None = None) -> None:
        """Remember the chosen candidate's corrected forecasts made at ``ts`` (``row``, named by
        ``keys``; each temperature forecast with a finite lower edge) and its ``setpoints``; the
        earlier forecasts whose plan these setpoints leave are dropped (their outcome is not what
        the model forecast)."""
        plan = tuple(float((setpoints or {}).get(a, math.nan)) for a in ACTUATORS)
        pending = self._pending.setdefault(key, {})
        for slot, entry in list(pending.items()):
            if entry[0] > ts and any(abs(a - b) > self.held_tolerance_pct for a, b in zip(plan, entry[3])):
                del pending[slot]
        named = dict(zip(keys, row))
        for k, point in named.items():
            if is_interval_key(k) or not k.startswith("air_temp_c_"):
                continue
            h = horizon_of(k)
            low = named.get(interval_key("air_temp_c", h, "low"), math.nan)
            if math.isfinite(point) and math.isfinite(low):
                pending[(ts, h)] = (ts + timedelta(minutes=h), float(point), max(0.01, float(point) - float(low)), plan)

    def observe(self, key: str, ts: datetime, air_temp_c: float) -> None:
        """Score the forecasts of ``key`` due at or before ``ts`` against the measurement."""
        pending = self._pending.get(key, {})
        for slot, (due, point, half, _) in sorted(pending.items(), key=lambda kv: kv[1][0]):
            if due > ts:
                continue
            del pending[slot]
            if ts - due <= self.max_late and math.isfinite(air_temp_c):
                self._scores.setdefault(key, {}).setdefault(slot[1], deque(maxlen=self.window)).append((point - air_temp_c) / half)

    def scales(self, key: str) -> dict[int, float]:
        """Per horizon (minutes), the scale of the lower half-width (0..``max_scale``)."""
        out, known = {}, self._scores.get(key, {})
        for h, scores in known.items():
            if len(scores) >= self.min_scores:
                rate = self.miss_rate if h == min(known) else self.later_miss_rate
                out[h] = min(self.max_scale, max(0.0, float(np.quantile(np.fromiter(scores, float), 1.0 - rate))))
        return out
