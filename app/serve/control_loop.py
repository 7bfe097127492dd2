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
"""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from app.serve.args import AppArgs
from app.serve.tuning import ACCESS_LOG_OFF


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
        from app.serve.decision_metrics import DecisionMetrics
        from app.serve.dispatch_thread import DispatchThread
        from app.serve.loop_scheduler import LoopScheduler
        from app.serve.online_state import OnlineState
        from app.serve.serving_models import ServingModels

        settings = args.load()
        refuse_unsafe(settings)
        replica_id = serve.get_replica_context().replica_id.unique_id
        bus, store = open_bus(settings.bus_url, topics=settings.topics), open_metadata(settings.metadata_url)
        self.online = OnlineState(settings, bus, f"loop-{replica_id}")
        self.dispatch_thread = DispatchThread(CommandDispatcher(settings, bus, store))
        self.models = ServingModels(settings, forecaster)
        controller = Controller(ControlPolicy.from_settings(settings), ForecastOffsets(alpha=settings.control.offset_alpha))
        lease_s = settings.loop.lease_s or settings.control.interval_s / 3
        index_decisions(store.collection(DECISIONS))
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
        )
        self._task = asyncio.get_running_loop().create_task(self.scheduler.run())

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
        if getattr(self, "scheduler", None) is not None:
            self.scheduler.stop()
            self.scheduler.ledger.leave()
        for part in ("online", "dispatch_thread"):
            if getattr(self, part, None) is not None:
                getattr(self, part).stop()


def _rollout_store(settings: Any) -> Any:
    from app.control.rollout_store import RolloutStore

    return RolloutStore.from_settings(settings)
