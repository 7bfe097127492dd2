"""The control loop as a Serve deployment: every active greenhouse decided once per interval.

Why a Serve deployment rather than a long-running Ray job: Serve restarts a replica that dies or
fails its health check, scales the loop by ``num_replicas`` in the same config file as the control
app, reconfigures it in place (``user_config``: the same :class:`~app.serve.serving_models.ModelConfig`)
and calls the same Forecaster deployment (one batched call per batch of greenhouses). The replicas
share the fleet through leases and claims in the metadata store (:mod:`app.control.loop_ledger`),
so a greenhouse is never decided twice in an interval and moves within one interval when its
replica dies. Each replica follows the sensor topic itself, like the control app's replicas.

``POST /climate/control`` stays for on-demand decisions; ``GET /climate/loop`` shows the loop's
progress (per replica: the current interval, and decided, late, failed and skipped greenhouses of
the recent ones).

Metrics: besides decisions and fallbacks (:mod:`app.serve.decision_metrics`), forecast call
durations and failed dispatches (:mod:`app.serve.control_metrics`), the loop's replica publishes
the serving shares and, while a rollout runs, each role's online forecast RMSE as the judge sees
it (:mod:`app.serve.rollout_metrics`), set again every few seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from app.log_format import setup_replica_logging
from app.serve.args import AppArgs
from app.serve.tuning import ACCESS_LOG_OFF

log = logging.getLogger(__name__)

FIGURES_EVERY_S = 30.0
"""How often the rollout RMSE is computed again from the decision records (it is set again at
every refresh in between)."""


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=16, health_check_period_s=10, logging_config=ACCESS_LOG_OFF)
class ControlLoop:
    """One share of the control loop (see the module docstring)."""

    async def __init__(self, forecaster: DeploymentHandle, args: AppArgs) -> None:  # type: ignore[misc]
        from app.bus import open_bus
        from app.control.core import Controller, ControlPolicy
        from app.control.correction import ForecastOffsets
        from app.control.decision_record import index_decisions
        from app.control.dispatch import CommandDispatcher
        from app.control.fleet_decisions import FleetDecider
        from app.control.loop_ledger import LoopLedger
        from app.metadata import DECISIONS, open_metadata
        from app.security.startup import refuse_unsafe
        from app.serve.control_metrics import ControlMetrics
        from app.serve.decision_metrics import DecisionMetrics
        from app.serve.dispatch_thread import DispatchThread
        from app.serve.gauge_refresher import Refresher
        from app.serve.loop_scheduler import LoopScheduler
        from app.serve.online_state import OnlineState
        from app.serve.rollout_metrics import RolloutMetrics
        from app.serve.serving_models import ServingModels

        settings = args.load()
        setup_replica_logging(settings)  # JSON lines with the replica's ids (Serve configures only ray.serve's logger)
        refuse_unsafe(settings)
        replica_id = serve.get_replica_context().replica_id.unique_id
        bus, store = open_bus(settings.bus_url, topics=settings.topics), open_metadata(settings.metadata_url)
        control_metrics = ControlMetrics()
        self.online = OnlineState(settings, bus, f"loop-{replica_id}")
        self.dispatch_thread = DispatchThread(CommandDispatcher(settings, bus, store, on_failure=control_metrics.dispatch_failure))
        self.models = ServingModels(settings, forecaster, on_forecast=control_metrics.forecast)
        controller = Controller(ControlPolicy.from_settings(settings), ForecastOffsets(alpha=settings.control.offset_alpha))
        lease_s = settings.loop.lease_s or settings.control.interval_s / 3
        index_decisions(store.collection(DECISIONS))
        self.rollout_metrics = RolloutMetrics()
        self.scheduler = LoopScheduler(
            settings,
            online=self.online,
            models=self.models,
            decider=FleetDecider(controller),
            dispatch=self.dispatch_thread,
            ledger=LoopLedger(store, replica_id, lease_s),
            records=store.collection(DECISIONS),
            rollouts=_rollout_store(settings),
            metrics=DecisionMetrics(),
            on_verdict=self._publish_verdict,
        )
        self._task = asyncio.get_running_loop().create_task(self.scheduler.run())
        self._figures_at = float("-inf")
        self._refresher = Refresher(self._publish_metrics, name="rollout-metrics")

    def _publish_metrics(self) -> None:
        """Serving shares now; the rollout RMSE from the decision records every
        :data:`FIGURES_EVERY_S`; then every value set again (runs on the refresher's thread)."""
        from app.serve.rollout_metrics import fresh_shares

        models, settings = self.models, self.scheduler.settings
        self.rollout_metrics.set_shares(fresh_shares(models, settings.control.model_name, 2 * settings.control.interval_s))
        if time.monotonic() - self._figures_at >= FIGURES_EVERY_S:
            self._figures_at = time.monotonic()
            self.rollout_metrics.set_rmse(_rollout_rmses(self.scheduler.rollouts, list(models.rollouts()), self.scheduler.loop_now()))
        self.rollout_metrics.refresh()

    def _publish_verdict(self, verdict: Any) -> None:
        """The RMSE the rollout judge just compared, published at once: on a simulated plant's
        clock a rollout step can be over before the next periodic read of the figures."""
        from app.serve.rollout_metrics import verdict_rmse

        self.rollout_metrics.set_rmse(verdict_rmse(verdict))
        self.rollout_metrics.refresh()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply a new ``user_config`` (the control app's :class:`ModelConfig`) in place."""
        self.models.reconfigure(user_config)

    def check_health(self) -> None:
        """Unhealthy when the loop task has ended (Serve then replaces the replica)."""
        if self._task.done():
            raise RuntimeError(f"the control loop stopped: {self._task.exception() if not self._task.cancelled() else 'cancelled'}")

    async def status(self) -> dict[str, Any]:
        """This replica's progress, the models it serves and the rollouts it follows."""
        return {**self.scheduler.status(), "models": self.models.resolved(), "rollouts": self.models.rollouts(), "follower_error": self.online.follower.error}

    def __del__(self) -> None:
        if getattr(self, "_refresher", None) is not None:
            self._refresher.stop()
        if getattr(self, "scheduler", None) is not None:
            self.scheduler.stop()
            self.scheduler.ledger.leave()
        for part in ("online", "dispatch_thread"):
            if getattr(self, part, None) is not None:
                getattr(self, part).stop()


def _rollout_rmses(rollouts: Any, model_names: list[str], now: Any) -> dict[tuple[str, str, str], float]:
    """Each active rollout's RMSE per role, from its store's figures up to ``now`` (what the judge
    compares); a rollout whose figures cannot be read is left out (its gauges expire)."""
    from app.serve.rollout_metrics import rollout_rmse

    out: dict[tuple[str, str, str], float] = {}
    if rollouts is None or now is None:
        return out
    for name in model_names:
        try:
            plan = rollouts.active(name)
            if plan is not None:
                out |= rollout_rmse(plan, *rollouts.figures(plan, now))
        except Exception as exc:
            log.warning("rollout figures of %s for metrics: %s", name, exc)
    return out


def _rollout_store(settings: Any) -> Any:
    from app.control.rollout_store import RolloutStore

    return RolloutStore.from_settings(settings)
