"""Offset-free forecasts for control: correct each horizon by its recent error.

A learned forecaster is biased where the controller operates (closed-loop data, conditions unlike
the training days). Offset-free MPC adds the recent forecast error back: for every greenhouse and
horizon, an exponential moving average of ``measured - forecast`` over the forecasts that have
fallen due. Pure code (no clocks, no I/O), so it is tested directly and behaves the same in the
Serve replica and in experiments.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from app.contracts.vocabulary import horizon_of, is_interval_key

TEMP_PREFIX = "air_temp_c_"


@dataclass(frozen=True)
class _Pending:
    due: datetime
    horizon_min: int
    forecast_c: float


class ForecastOffsets:
    """Per greenhouse and horizon, the EMA of the temperature forecast error.

    Args:
        alpha: weight of the newest error (0..1); 0.1 forgets an error in about 10 intervals.
            Faster is not better: each error is seen only when its forecast falls due, and a
            correction that chases it makes the closed loop oscillate (0.3 did, with a model of
            120 boosting rounds, ±0.5 K every 20 minutes).
        max_abs_c: corrections are clipped to this size (a broken sensor must not steer heating).
        max_late_s: a forecast settled later than this after it fell due is dropped (the
            measurement then belongs to another instant).
    """

    def __init__(self, alpha: float = 0.1, max_abs_c: float = 2.0, max_late_s: float = 300.0) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError("alpha must be within (0, 1]")
        self.alpha = alpha
        self.max_abs_c = max_abs_c
        self.max_late = timedelta(seconds=max_late_s)
        self._pending: dict[str, dict[tuple[datetime, int], _Pending]] = defaultdict(dict)
        self._offsets: dict[str, dict[int, float]] = defaultdict(dict)

    def observe(self, greenhouse_id: str, ts: datetime, air_temp_c: float) -> dict[int, float]:
        """Settle the forecasts of ``greenhouse_id`` due at or before ``ts`` against the
        measurement ``air_temp_c`` at ``ts``; the errors settled now (horizon minutes -> measured
        minus forecast, kelvin): the online forecast error, per horizon."""
        settled: dict[int, float] = {}
        pending = self._pending.get(greenhouse_id)
        if not pending:
            return settled
        offsets = self._offsets[greenhouse_id]
        for key, p in sorted(pending.items(), key=lambda kv: kv[1].due):
            if p.due > ts:
                continue
            del pending[key]
            if ts - p.due > self.max_late:
                continue
            error = settled[p.horizon_min] = air_temp_c - p.forecast_c
            previous = offsets.get(p.horizon_min, 0.0)
            updated = (1.0 - self.alpha) * previous + self.alpha * error
            offsets[p.horizon_min] = max(-self.max_abs_c, min(self.max_abs_c, updated))
        return settled

    def record(self, greenhouse_id: str, ts: datetime, forecast: Mapping[str, float]) -> None:
        """Remember the *uncorrected* temperature forecasts made from the state at ``ts`` (a
        repeated decision for the same instant replaces the earlier one)."""
        pending = self._pending[greenhouse_id]
        for key, value in forecast.items():
            if key.startswith(TEMP_PREFIX) and not is_interval_key(key):  # the forecast, not its interval's edges
                h = horizon_of(key)
                pending[(ts, h)] = _Pending(ts + timedelta(minutes=h), h, float(value))

    def offsets(self, greenhouse_id: str) -> dict[int, float]:
        """The current correction per horizon (minutes -> kelvin)."""
        return dict(self._offsets.get(greenhouse_id, {}))

    def correct(self, greenhouse_id: str, forecasts: np.ndarray, keys: Sequence[str]) -> np.ndarray:
        """``forecasts`` (one row per candidate, columns named by ``keys``) with each temperature
        horizon shifted by its offset, its interval's edges with it; a new array (the input is
        left as it was)."""
        offsets = self._offsets.get(greenhouse_id)
        if not offsets:
            return np.array(forecasts, dtype=np.float64)
        shift = np.array([offsets.get(horizon_of(k), 0.0) if k.startswith(TEMP_PREFIX) else 0.0 for k in keys])
        return np.asarray(forecasts, dtype=np.float64) + shift
