"""Glue between the policy and the forecaster: model inputs for candidate settings, and commands.

Pure functions (no Ray, no I/O): the Serve app and the demo's thermostat baseline share them, so
both controllers are held to the same limits and produce the same command shape.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from app.config import Settings
from app.contracts.command import ControlCommand, ModelRef, Setpoints
from app.control.policy import ACTUATORS, Decision, Limits, Targets

COMMAND_NAMESPACE = uuid.UUID("6a1f2f0e-6f0c-4b43-9d0e-4f1b2c3d4e5f")
THERMOSTAT_MODEL = ModelRef(name="thermostat", version="rule-v1")


def targets_from(settings: Settings) -> Targets:
    """The target band configured in ``settings.control``."""
    c = settings.control
    return Targets(band_low_c=c.band_low_c, band_high_c=c.band_high_c, rh_max_pct=c.rh_max_pct)


def current_setpoints(features: Mapping[str, Any]) -> dict[str, float]:
    """The actuator positions the latest readings report."""
    return {a: float(features.get(a, 0.0)) for a in ACTUATORS}


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


def forecast_dicts(predictions: pd.DataFrame) -> list[dict[str, float]]:
    """Model output rows as ``{"air_temp_c_15min": ..., ...}`` dicts."""
    cols = list(predictions.columns)
    return [dict(zip(cols, map(float, row))) for row in predictions.to_numpy()]


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
    "candidate_frame",
    "command_id_for",
    "current_setpoints",
    "forecast_dicts",
    "targets_from",
]
