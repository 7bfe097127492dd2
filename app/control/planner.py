"""Glue between the policy and the forecaster: model inputs for candidate settings, and commands.

Pure functions (no Ray, no I/O): the Serve app and the demo's thermostat baseline share them, so
both controllers are held to the same limits and produce the same command shape.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from app.config import Settings
from app.contracts.command import ControlCommand, ModelRef, Setpoints
from app.control.policy import ACTUATORS, Decision, Limits, Targets, candidate_grid

COMMAND_NAMESPACE = uuid.UUID("6a1f2f0e-6f0c-4b43-9d0e-4f1b2c3d4e5f")
THERMOSTAT_MODEL = ModelRef(name="thermostat", version="rule-v1")


def targets_from(settings: Settings) -> Targets:
    """The target band configured in ``settings.control``."""
    c = settings.control
    return Targets(band_low_c=c.band_low_c, band_high_c=c.band_high_c, rh_max_pct=c.rh_max_pct, margin_c=c.margin_c)


def current_setpoints(features: Mapping[str, Any]) -> dict[str, float]:
    """The actuator positions the latest readings report."""
    return {a: float(features.get(a, 0.0)) for a in ACTUATORS}


@lru_cache(maxsize=1024)
def _grid(current: tuple[tuple[str, float], ...], limits: Limits, dt_s: float, levels: Any, fixed: tuple[tuple[str, float], ...]) -> tuple[tuple[tuple[str, float], ...], ...]:
    # levels: a tuple of floats, or a tuple of (actuator, tuple of floats) pairs for per-actuator levels
    grid = candidate_grid(dict(current), limits, dt_s, levels=dict(levels) if levels and isinstance(levels[0], tuple) else levels, fixed=dict(fixed))
    return tuple(tuple(c.items()) for c in grid)


def cached_candidate_grid(
    current: Mapping[str, float],
    limits: Limits,
    dt_s: float,
    levels: Sequence[float] | Mapping[str, Sequence[float]] = (0, 25, 50, 75, 100),
    fixed: Mapping[str, float] | None = None,
) -> list[dict[str, float]]:
    """:func:`~app.control.policy.candidate_grid`, remembered for its arguments (it is a pure
    function, so the answer is the same; fresh dicts each call). The grid depends only on the
    actuator positions and the fixed settings, which change when a command is applied, not with
    every reading: successive decisions for a greenhouse mostly share it."""
    key = tuple(sorted((a, float(v)) for a, v in current.items()))
    fixed_key = tuple(sorted((a, float(v)) for a, v in (fixed or {}).items()))
    if isinstance(levels, Mapping):
        levels_key: tuple = tuple(sorted((a, tuple(float(x) for x in v)) for a, v in levels.items()))
    else:
        levels_key = tuple(float(x) for x in levels)
    return [dict(c) for c in _grid(key, limits, float(dt_s), levels_key, fixed_key)]


def candidate_frame(features: Mapping[str, Any], candidates: Sequence[Mapping[str, float]], feature_columns: Sequence[str], horizons_min: Sequence[int]) -> pd.DataFrame:
    """One model-input row per candidate: the latest features, with the candidate held as the plan
    over every horizon (``ForecastModel.predict`` derives the vent x temperature term)."""
    n = len(candidates)
    data: dict[str, np.ndarray] = {c: np.full(n, float(features[c])) for c in feature_columns}
    for a in ACTUATORS:
        values = np.fromiter((float(c[a]) for c in candidates), dtype=np.float64, count=n)
        for h in horizons_min:
            data[f"plan_{a}_{h}min"] = values
    return pd.DataFrame(data)


def candidate_columns(feature_columns: Sequence[str], horizons_min: Sequence[int]) -> list[str]:
    """The column names of :func:`candidate_matrix`: the features, then each horizon's plan."""
    return [*feature_columns, *(f"plan_{a}_{h}min" for h in horizons_min for a in ACTUATORS)]


def candidate_matrix(
    features: Mapping[str, Any], candidates: Sequence[Mapping[str, float]], feature_columns: Sequence[str], horizons_min: Sequence[int]
) -> tuple[np.ndarray, list[str]]:
    """:func:`candidate_frame` without pandas: the same values as a float64 matrix, one row per
    candidate, and its column names (:func:`candidate_columns`), for
    ``ForecastModel.predict_arrays``."""
    n, f = len(candidates), len(feature_columns)
    matrix = np.empty((n, f + len(ACTUATORS) * len(horizons_min)), dtype=np.float64)
    matrix[:, :f] = np.array([float(features[c]) for c in feature_columns], dtype=np.float64)
    plans = np.array([[float(c[a]) for a in ACTUATORS] for c in candidates], dtype=np.float64).reshape(n, len(ACTUATORS))
    matrix[:, f:] = np.tile(plans, len(horizons_min))
    return matrix, candidate_columns(feature_columns, horizons_min)


def forecast_dicts(predictions: pd.DataFrame) -> list[dict[str, float]]:
    """Model output rows as ``{"air_temp_c_15min": ..., ...}`` dicts."""
    cols = list(predictions.columns)
    return [dict(zip(cols, map(float, row))) for row in predictions.to_numpy()]


def forecast_rows(values: np.ndarray, keys: Sequence[str]) -> list[dict[str, float]]:
    """:func:`forecast_dicts` for a float matrix whose columns are ``keys`` (the model's
    ``output_keys()``, e.g. ``air_temp_c_15min``)."""
    keys = list(keys)
    return [dict(zip(keys, row)) for row in np.asarray(values, dtype=np.float64).tolist()]


def command_id_for(greenhouse_id: str, decided_at: datetime, request_id: str | None = None) -> str:
    """Deterministic id: a retried request for the same greenhouse and instant is the same command."""
    return str(uuid.uuid5(COMMAND_NAMESPACE, f"{greenhouse_id}|{decided_at.isoformat()}|{request_id or ''}"))


def build_command(
    greenhouse_id: str,
    decision: Decision,
    *,
    decided_at: datetime,
    ttl_s: float,
    model: ModelRef | None,
    state_ts: datetime | None,
    dry_run: bool = False,
    request_id: str | None = None,
) -> ControlCommand:
    """The command for ``decision``: id, expiry, model version and the forecast that led to it."""
    reason: dict[str, Any] = {"mode": decision.mode, "why": decision.reason}
    if decision.cost is not None:
        reason["cost"] = decision.cost
    if decision.forecast:
        reason["forecast"] = decision.forecast
    if state_ts is not None:
        reason["state_ts"] = state_ts.isoformat()
    return ControlCommand(
        command_id=command_id_for(greenhouse_id, decided_at, request_id),
        greenhouse_id=greenhouse_id,
        issued_at=decided_at,
        valid_until=decided_at + timedelta(seconds=ttl_s),
        setpoints=Setpoints(**decision.setpoints),
        model=model if decision.mode == "mpc" and model is not None else THERMOSTAT_MODEL,
        reason=reason,
        dry_run=dry_run,
    )


__all__ = [
    "THERMOSTAT_MODEL",
    "Limits",
    "build_command",
    "cached_candidate_grid",
    "candidate_columns",
    "candidate_frame",
    "candidate_matrix",
    "command_id_for",
    "current_setpoints",
    "forecast_dicts",
    "forecast_rows",
    "targets_from",
]
