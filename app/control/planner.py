"""Glue between the policy and the forecaster: model inputs for candidate settings, and commands.

Pure functions (no Ray, no I/O): the Serve app and the demo's thermostat baseline share them, so
both controllers are held to the same limits and produce the same command shape.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from app.contracts.command import ControlCommand, ModelRef, Setpoints
from app.contracts.vocabulary import ACTUATORS, plan_columns
from app.control.policy import Decision, ScreenRule, Targets, plan_matrix, screen_opening

COMMAND_NAMESPACE = uuid.UUID("6a1f2f0e-6f0c-4b43-9d0e-4f1b2c3d4e5f")
THERMOSTAT_MODEL = ModelRef(name="thermostat", version="rule-v1")


def current_setpoints(features: Mapping[str, Any]) -> dict[str, float]:
    """The actuator positions the latest readings report."""
    return {a: float(features.get(a, 0.0)) for a in ACTUATORS}


@dataclass(frozen=True)
class ScreenPlan:
    """The screen for one decision: its setpoint now (the climate computer's rule), the rule's
    next setpoint if it changes by the next decision (actuator -> (setpoint, after minutes), for
    :func:`candidate_matrix`), and whether it is opening (:func:`~app.control.policy.screen_opening`)."""

    setpoint_pct: float
    scheduled: dict[str, tuple[float, float]] | None
    opening: bool


def solar_trend_w_m2_per_min(features: Mapping[str, Any]) -> float:
    """The recent trend of solar radiation: the latest value against the mean of the last 15
    minutes, whose centre lies 7 minutes back (0 when the mean is unknown)."""
    mean = float(features.get("solar_w_m2_mean_15min", math.nan))
    return 0.0 if not math.isfinite(mean) else (float(features["solar_w_m2"]) - mean) / 7.0


def screen_plan(features: Mapping[str, Any], interval_s: float, rule: ScreenRule = ScreenRule()) -> ScreenPlan:
    """:class:`ScreenPlan` from the latest features under ``rule``: the rule now, and the rule at
    the next decision with the sun following its recent trend (so the MPC pre-heats before the
    screen opens at sunrise instead of after)."""
    now = rule.setpoint_pct(features["outside_temp_c"], features["solar_w_m2"])
    after_min = interval_s / 60.0
    solar_next = max(0.0, float(features["solar_w_m2"]) + solar_trend_w_m2_per_min(features) * after_min)
    later = rule.setpoint_pct(features["outside_temp_c"], solar_next)
    scheduled = {"screen_pct": (later, after_min)} if later != now else None
    change = float(features.get("screen_pct_change_15min", 0.0))
    opening = screen_opening(now, float(features.get("screen_pct", now)), change if math.isfinite(change) else 0.0, later if scheduled else None)
    return ScreenPlan(now, scheduled, opening)


def screen_options(features: Mapping[str, Any], plan: ScreenPlan, rule: ScreenRule, insulate_below_solar_w_m2: float) -> list[ScreenPlan]:
    """The screen plans the MPC chooses among: the rule's ``plan`` first, then, where insulating
    may pay, the screen kept closed. It may pay while the outside is colder than the rule's night
    threshold and the sun gives less than ``insulate_below_solar_w_m2`` (0: never), and the rule
    opens the screen now or by the next decision: the closed screen saves ~45 % of the cover's
    loss and costs ~45 % of the sun, so on a cold, dull morning the model's forecasts say which
    is cheaper. The bound on the sun is a light budget: above it the crop's light wins."""
    if insulate_below_solar_w_m2 <= 0 or (plan.setpoint_pct >= 100.0 and plan.scheduled is None):
        return [plan]
    outside_c, solar_w_m2 = float(features["outside_temp_c"]), float(features["solar_w_m2"])
    if not (outside_c < rule.night_below_outside_c and solar_w_m2 < insulate_below_solar_w_m2):
        return [plan]
    return [plan, ScreenPlan(100.0, None, opening=False)]


def targets_during(targets: Targets, screen: ScreenPlan, opening_margin_c: float) -> Targets:
    """``targets`` with ``opening_margin_c`` more margin while the screen opens (on the fixed
    margin and on the interval edge alike: the forecaster underestimates that drop either way)."""
    if not (screen.opening and opening_margin_c):
        return targets
    return replace(targets, margin_c=targets.margin_c + opening_margin_c, edge_margin_c=targets.edge_margin_c + opening_margin_c)


def candidate_columns(feature_columns: Sequence[str], horizons_min: Sequence[int]) -> list[str]:
    """The column names of :func:`candidate_matrix`: the features, then each horizon's plan."""
    return [*feature_columns, *plan_columns(horizons_min, with_exchange=False)]


def plan_weights(horizons_min: Sequence[int], time_constants_s: Mapping[str, float] | None = None, switch_after_min: Mapping[str, float] | None = None, step_s: float = 60.0) -> np.ndarray:
    """Weights that turn setpoints into the model's plan features.

    Training's plan feature for actuator ``a`` and horizon ``h`` is the mean *reported* position
    over the steps ``(t, t + h]``. An actuator follows its setpoint with a first-order lag
    (``time_constants_s``; none known: it jumps), and its setpoint may switch to a scheduled value
    after some minutes (``switch_after_min``, e.g. the screen rule's next state). The mean is then
    linear in the current position ``x0``, the setpoint ``s`` and the scheduled one ``s2``:
    ``w_x0 * x0 + w_s * s + w_s2 * s2``. Returns those weights, shape (horizons, actuators, 3), in
    ``ACTUATORS`` order."""
    out = np.zeros((len(horizons_min), len(ACTUATORS), 3))
    for i, h in enumerate(horizons_min):
        n = max(1, round(h * 60.0 / step_s))
        for j, a in enumerate(ACTUATORS):
            tau = float((time_constants_s or {}).get(a, 0.0))
            r = math.exp(-step_s / tau) if tau > 0 else 0.0
            after = (switch_after_min or {}).get(a)
            m = n if after is None else min(n, max(0, round(after * 60.0 / step_s)))
            first = sum(r**k for k in range(1, m + 1))  # x0's share left over the first m steps
            second = sum(r**k for k in range(1, n - m + 1))  # the position at m's share after it
            out[i, j] = ((first + second * r**m) / n, (m - first + second * (1 - r**m)) / n, (n - m - second) / n)
    return out


def candidate_matrix(
    features: Mapping[str, Any],
    candidates: np.ndarray | Sequence[Mapping[str, float]],
    feature_columns: Sequence[str],
    horizons_min: Sequence[int],
    time_constants_s: Mapping[str, float] | None = None,
    scheduled: Mapping[str, tuple[float, float]] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Model inputs for candidate plans, for ``ForecastModel.predict_arrays``: one float64 row per
    candidate (the latest features, then each horizon's plan) and the column names
    (:func:`candidate_columns`). ``candidates`` is a plan matrix (:func:`~app.control.policy.candidate_plans`)
    or a sequence of setpoint dicts.

    Without the optional arguments each plan column is the candidate's setpoint, held. With
    ``time_constants_s`` (per actuator) and ``scheduled`` (actuator -> (setpoint, after minutes)),
    it is what training saw: the mean position over the horizon of the actuator moving from its
    reported position (in ``features``) toward the candidate's setpoint, then toward the scheduled
    one (:func:`plan_weights`)."""
    plans = candidates if isinstance(candidates, np.ndarray) else plan_matrix(candidates)
    n, f = len(plans), len(feature_columns)
    matrix = np.empty((n, f + len(ACTUATORS) * len(horizons_min)), dtype=np.float64)
    matrix[:, :f] = np.array([float(features[c]) for c in feature_columns], dtype=np.float64)
    if time_constants_s or scheduled:
        scheduled = scheduled or {}
        w = plan_weights(tuple(horizons_min), time_constants_s, {a: after for a, (_, after) in scheduled.items()})
        now = np.array([float(features.get(a, 0.0)) for a in ACTUATORS])
        later = np.array([float(scheduled[a][0]) if a in scheduled else 0.0 for a in ACTUATORS])
        fixed_part = w[:, :, 0] * now + w[:, :, 2] * later  # horizons x actuators, the same for every candidate
        matrix[:, f:] = (fixed_part[None, :, :] + w[None, :, :, 1] * plans[:, None, :]).reshape(n, -1)
    else:
        matrix[:, f:] = np.tile(plans, len(horizons_min))
    return matrix, candidate_columns(feature_columns, horizons_min)


def command_id_for(greenhouse_id: str, decided_at: datetime, request_id: str | None = None) -> str:
    """Deterministic id: a retried request for the same greenhouse and instant is the same command."""
    return str(uuid.uuid5(COMMAND_NAMESPACE, f"{greenhouse_id}|{decided_at.isoformat()}|{request_id or ''}"))


def build_command(
    greenhouse_id: str, decision: Decision, *, decided_at: datetime, ttl_s: float, model: ModelRef | None, state_ts: datetime | None, dry_run: bool = False, request_id: str | None = None
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
    "ScreenPlan",
    "THERMOSTAT_MODEL",
    "build_command",
    "candidate_columns",
    "candidate_matrix",
    "command_id_for",
    "current_setpoints",
    "plan_weights",
    "screen_options",
    "screen_plan",
    "solar_trend_w_m2_per_min",
    "targets_during",
]
