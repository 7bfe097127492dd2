"""Prometheus gauges of what serves the fleet: each version's share, and a rollout's online RMSE.

- ``gh_serving_share{model_version, role}``: the share (0..1) of greenhouses a version serves as
  ``champion`` or ``candidate`` (``pinned`` when ``user_config`` fixes a version), or forecasts as
  ``shadow``, as the replica's model configuration and the model's active rollout say
  (:func:`serving_shares`; nominal shares: the rollout's fraction, not a count of decisions).
  Greenhouses moved to another model by ``greenhouse_models`` are not counted apart.
- ``gh_rollout_forecast_rmse_celsius{model, role, horizon_min}``: each version's online forecast
  RMSE since the rollout's step started, the figure :func:`app.control.rollout.judge` compares;
  set once the role has the plan's ``min_errors_per_step`` errors, and no longer once the rollout
  ended (:func:`rollout_rmse`).

A replica knows the shares as of its last routing (``ServingModels.routed_at``): one that has not
routed for a while (:func:`fresh_shares`) publishes none, so that an idle replica does not keep a
rollout's old split alive. Gauges expire when not set for two report intervals, so :class:`RolloutMetrics` keeps the current
values and sets them all again on every :meth:`~RolloutMetrics.refresh`; a value dropped from the
current set expires by itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from app.control.decision_record import ROLE_CANDIDATE, ROLE_CHAMPION, ROLE_PINNED
from app.control.rollout import RolloutPlan, Verdict, VersionFigures
from app.serve.metric_factory import MetricFactory, serve_metric
from app.serve.serving_models import ModelConfig

ROLE_SHADOW = "shadow"

ShareKey = tuple[str, str]
"""``(model_version as name/version, role)``."""
RmseKey = tuple[str, str, str]
"""``(model, role, horizon_min)``."""


def serving_shares(config: ModelConfig, default_model: str, resolved: Mapping[str, str], rollouts: Mapping[str, Mapping[str, Any]]) -> dict[ShareKey, float]:
    """The share of greenhouses each version of the configured model serves, by role.

    ``resolved``: model name -> the version its alias resolved to (``ServingModels.resolved()``);
    ``rollouts``: model name -> the active rollout followed (``ServingModels.rollouts()``: champion,
    candidate, fraction). Empty while nothing is resolved yet."""
    name = config.model_name or default_model
    shares: dict[ShareKey, float] = {}
    rollout = rollouts.get(name) if config.follow_rollouts else None
    if config.model_version:
        shares[(f"{name}/{config.model_version}", ROLE_PINNED)] = 1.0
    elif rollout is not None:
        fraction = float(rollout["fraction"])
        champion, candidate = f"{name}/{rollout['champion']}", f"{name}/{rollout['candidate']}"
        shares[(champion, ROLE_CHAMPION)] = 1.0 - fraction
        shares[(candidate, ROLE_CANDIDATE)] = fraction
        # during a rollout the other version shadows every greenhouse (app.control.rollout)
        if fraction > 0.0:
            shares[(champion, ROLE_SHADOW)] = fraction
        if fraction < 1.0:
            shares[(candidate, ROLE_SHADOW)] = 1.0 - fraction
    elif name in resolved:
        shares[(f"{name}/{resolved[name]}", ROLE_CHAMPION)] = 1.0
    if shares:
        for version in config.shadow_versions:
            shares[(f"{name}/{version}", ROLE_SHADOW)] = 1.0
    return shares


def fresh_shares(models: Any, default_model: str, stale_after_s: float, now_s: float | None = None) -> dict[ShareKey, float]:
    """:func:`serving_shares` of a :class:`~app.serve.serving_models.ServingModels`, or none when
    it has not routed a greenhouse for ``stale_after_s`` (what it knows may be out of date)."""
    now_s = time.monotonic() if now_s is None else now_s
    if now_s - models.routed_at > stale_after_s:
        return {}
    return serving_shares(models.config, default_model, models.resolved(), models.rollouts())


def rollout_rmse(plan: RolloutPlan | None, champion: VersionFigures, candidate: VersionFigures) -> dict[RmseKey, float]:
    """Each role's online forecast RMSE in an active rollout, for the roles that have the plan's
    minimum of errors; empty for no plan or an ended one."""
    if plan is None or plan.status != "active":
        return {}
    out: dict[RmseKey, float] = {}
    for role, figures in ((ROLE_CHAMPION, champion), (ROLE_CANDIDATE, candidate)):
        if figures.forecast_rmse_c is not None and figures.errors_n >= plan.min_errors_per_step:
            out[(plan.model_name, role, str(plan.horizon_min))] = figures.forecast_rmse_c
    return out


def verdict_rmse(verdict: Verdict) -> dict[RmseKey, float]:
    """:func:`rollout_rmse` of the figures a rollout verdict was judged on; empty when the verdict
    ends the rollout (promote, roll back) or does not carry its plan."""
    if verdict.plan is None or verdict.action in ("promote", "rollback"):
        return {}
    return rollout_rmse(verdict.plan, verdict.champion, verdict.candidate)


class RolloutMetrics:
    """The two gauges and their current values (thread-safe: set from a refresher thread)."""

    def __init__(self, factory: MetricFactory = serve_metric) -> None:
        self._share = factory("gauge", "gh_serving_share", description="share (0..1) of greenhouses a model version serves, by role", tag_keys=("model_version", "role"))
        self._rmse = factory(
            "gauge",
            "gh_rollout_forecast_rmse_celsius",
            description="online forecast RMSE since the rollout step started, the figure the rollout judge compares",
            tag_keys=("model", "role", "horizon_min"),
        )
        self._lock = threading.Lock()
        self._shares: dict[ShareKey, float] = {}
        self._rmses: dict[RmseKey, float] = {}

    def set_shares(self, shares: dict[ShareKey, float]) -> None:
        """Replace the current shares (those left out expire)."""
        with self._lock:
            self._shares = dict(shares)

    def set_rmse(self, rmses: dict[RmseKey, float]) -> None:
        """Replace the current rollout RMSEs (those left out expire)."""
        with self._lock:
            self._rmses = dict(rmses)

    def refresh(self) -> None:
        """Set every current value again."""
        with self._lock:
            shares, rmses = dict(self._shares), dict(self._rmses)
        for (version, role), share in shares.items():
            self._share.set(share, tags={"model_version": version, "role": role})
        for (model, role, horizon), rmse in rmses.items():
            self._rmse.set(rmse, tags={"model": model, "role": role, "horizon_min": horizon})
