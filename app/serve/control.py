"""Forecast and control as a Ray Serve application.

Two deployments composed through a handle: the :class:`~app.serve.forecaster.Forecaster` (models
multiplexed by version, batched predictions) and :class:`ControlApp`, the HTTP ingress
(``POST /forecast``, ``POST /control``, ``GET /healthz``, ``GET /readyz``). ControlApp keeps HTTP, state following
and dispatch only: each greenhouse's state comes from the followed sensor topic (or a window the
caller sends), every decision is made by the controller core
(:class:`~app.control.core.Controller`), and the signed command leaves through the bus with an
audit record.

The model is chosen in ``user_config`` (:class:`~app.serve.serving_models.ModelConfig`);
``serve deploy`` with a new value swaps models without restarting replicas.

Metrics: request durations by route, forecast call durations, refused operator credentials and
failed dispatches (:mod:`app.serve.control_metrics`), decisions and fallbacks
(:mod:`app.serve.decision_metrics`); the serving shares (:mod:`app.serve.rollout_metrics`) come
from every replica that routed a greenhouse recently (this app's and the control loop's).
"""

# No `from __future__ import annotations` here: FastAPI reads the routes' annotations at run time,
# and through Serve's class ingress it cannot resolve them as strings.
import asyncio
import logging
import os
import time
from datetime import datetime, timezone
from typing import Any

from fastapi import Header
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from app.bus import Bus
from app.config import Settings
from app.control.core import ControlDecision, Controller, ControlPolicy
from app.control.correction import ForecastOffsets
from app.control.decision_record import DecisionContext
from app.control.fleet_decisions import Assignment
from app.control.planner import current_setpoints
from app.log_format import setup_replica_logging
from app.metadata import DECISIONS, MetadataStore
from app.serve.args import AppArgs
from app.serve.control_api import DISPATCH_FAILED, MODEL_UNAVAILABLE, ControlRequest, ForecastRequest, ServeError, create_control_api
from app.serve.control_auth import OperatorGate, never_sent
from app.serve.control_loop import ControlLoop
from app.serve.forecaster import Forecaster
from app.serve.gcpause import GcPauses, freeze_startup_heap
from app.serve.readiness import Readiness, bus_check, model_check, store_check
from app.serve.serving_models import ModelConfig, ServingModels
from app.serve.tuning import ACCESS_LOG_OFF

api = create_control_api()

log = logging.getLogger(__name__)


# Helpers the replica's methods call are defined above the class: @serve.ingress serialises the
# class when it is decorated, with the module's names as they are at that point.
def _insert_once(records: Any, document: dict[str, Any]) -> None:
    """Insert a decision record (a retried request for the same command keeps the first)."""
    from app.metadata import DuplicateKeyError

    try:
        records.insert_one(document)
    except DuplicateKeyError:
        pass


def control_readiness(settings: Settings, bus: Bus, store: MetadataStore, models: ServingModels) -> Readiness:
    """What the control app needs to decide with a model and send commands: the bus (the sensor
    topic it follows, the control topic it writes), the metadata store (decision records, audit)
    and a loaded model."""
    topics = (settings.topics.sensors, settings.topics.control)
    return Readiness({"bus": bus_check(bus, topics), "metadata": store_check(store.collection(DECISIONS)), "model": model_check(models)})


def _share_publisher(settings: Settings, models: ServingModels) -> Any:
    """A refresher that sets ``gh_serving_share`` from ``models`` every few seconds."""
    from app.serve.gauge_refresher import Refresher
    from app.serve.rollout_metrics import RolloutMetrics, fresh_shares

    gauges = RolloutMetrics()

    def publish() -> None:
        gauges.set_shares(fresh_shares(models, settings.control.model_name, 2 * settings.control.interval_s))
        gauges.refresh()

    return Refresher(publish, name="serving-share")


def _public_member(doc: dict[str, Any]) -> dict[str, Any]:
    progress = doc.get("progress") or {}
    return {"replica": doc["_id"], "renewed_at": doc.get("renewed_at"), "joined_at": doc.get("joined_at"), "last_interval": progress}


# No check_health on purpose: Serve restarts a replica whose check_health fails, and a restart does
# not bring Kafka, the metadata store or MLflow back. Outages show in GET /readyz (503) instead.
@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=128, health_check_period_s=10, logging_config=ACCESS_LOG_OFF)
@serve.ingress(api)
class ControlApp:
    """HTTP ingress: online state, the controller core, dispatch."""

    def __init__(self, forecaster: DeploymentHandle, args: AppArgs, loop: DeploymentHandle | None = None) -> None:
        from app.bus import open_bus
        from app.control.dispatch import CommandDispatcher
        from app.control.fleet_decisions import FleetDecider
        from app.control.loop_ledger import LoopLedger
        from app.metadata import open_metadata
        from app.security.credentials import OperatorRegistry
        from app.security.startup import refuse_unsafe
        from app.serve.control_metrics import ControlMetrics
        from app.serve.decision_metrics import DecisionMetrics
        from app.serve.dispatch_thread import DispatchThread
        from app.serve.online_state import OnlineState
        from app.tracking import warm_imports

        self.settings = settings = args.load()
        setup_replica_logging(settings)  # JSON lines with the replica's ids (Serve configures only ray.serve's logger)
        refuse_unsafe(settings)
        bus, store = open_bus(settings.bus_url, topics=settings.topics), open_metadata(settings.metadata_url)
        replica_id = serve.get_replica_context().replica_id.unique_id
        self.control_metrics = cm = ControlMetrics()
        self.online = OnlineState(settings, bus, replica_id)
        self.dispatch_thread = DispatchThread(CommandDispatcher(settings, bus, store, on_failure=cm.dispatch_failure))
        self.models = ServingModels(settings, forecaster, on_forecast=cm.forecast)
        self.readiness = control_readiness(settings, bus, store, self.models)
        self.gate = OperatorGate(OperatorRegistry.from_settings(settings), on_refused=cm.auth_failure)
        # per replica: with several replicas each learns from the decisions it made
        self.controller = Controller(ControlPolicy.from_settings(settings), ForecastOffsets(alpha=settings.control.offset_alpha))
        self.decider = FleetDecider(self.controller)
        self.records = store.collection(DECISIONS)
        self.loop_ledger = LoopLedger(store, replica_id, 0.0) if loop is not None else None
        self.metrics = DecisionMetrics()
        self.gc_pauses = GcPauses()
        self._warm = False  # set by the first model decision, which freezes the heap again
        warm_imports()  # at start, not on the first request
        self._shares = _share_publisher(settings, self.models)
        freeze_startup_heap()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply a new ``user_config`` (model alias/version) without restarting the replica."""
        self.models.reconfigure(user_config)

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        """Liveness (200 while the replica runs) plus what it knows: its dependencies as last
        checked (never waited for), models, greenhouses followed, follower errors."""
        return {
            "status": "ok",
            **self.readiness.last_known(),
            "replica_pid": os.getpid(),
            "models": self.models.resolved(),
            "model_config": self.models.config.model_dump(),
            "model_error": self.models.error,
            "rollouts": self.models.rollouts(),
            **self.online.health(),
            "gc": self.gc_pauses.summary(),
        }

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        """Readiness: 200 when the bus, the metadata store and the model answer, else 503 with the
        verdict naming the one that does not, why and since when."""
        verdict = await self.readiness.verdict()
        return JSONResponse(verdict, status_code=200 if verdict["ready"] else 503)

    @api.post("/forecast")
    async def forecast(self, body: ForecastRequest, authorization: str | None = Header(default=None)) -> dict[str, Any]:
        """Indoor temperature and humidity at the model's horizons for one greenhouse."""
        started = time.perf_counter()
        try:
            return await self._forecast(body, authorization)
        finally:
            self.control_metrics.request("forecast", time.perf_counter() - started)

    async def _forecast(self, body: ForecastRequest, authorization: str | None) -> dict[str, Any]:
        self.gate.admit(authorization, "forecast", caller_state=body.readings is not None or body.as_of is not None)
        forecaster, params = await self.models.serving(body.greenhouse_id)
        if forecaster is None:
            raise ServeError(503, MODEL_UNAVAILABLE, self.models.error or "model unavailable")
        state = await self.online.state(body.greenhouse_id, body.readings, body.as_of, params)
        plan = body.plan.model_dump() if body.plan else current_setpoints(state.features)
        forecast = await self.controller.forecast(state, forecaster, plan)
        return {
            "greenhouse_id": body.greenhouse_id,
            "as_of": state.ts.isoformat(),
            "model": forecaster.ref.model_dump(),
            "plan": plan,
            "horizons_min": list(forecaster.horizons_min),
            "forecast": {k: round(v, 3) for k, v in forecast.items()},
        }

    @api.post("/control")
    async def control(self, body: ControlRequest, authorization: str | None = Header(default=None)) -> dict[str, Any]:
        """Decide, sign and dispatch one command for a greenhouse (returned; not sent if dry-run,
        nor when the caller sent its own readings or ``as_of``)."""
        started = time.perf_counter()
        try:
            return await self._control(body, authorization)
        finally:
            self.control_metrics.request("control", time.perf_counter() - started)

    async def _control(self, body: ControlRequest, authorization: str | None) -> dict[str, Any]:
        who = self.gate.admit(authorization, "control", caller_state=body.readings is not None or body.as_of is not None, dry_run=body.dry_run)
        simulated = never_sent(caller_readings=body.readings is not None, caller_as_of=body.as_of is not None, simulated_plant=self.settings.control.simulated_plant)
        now = (body.as_of or datetime.now(timezone.utc)).astimezone(timezone.utc)
        served = await self.models.route(body.greenhouse_id)
        state = await self.online.state(body.greenhouse_id, body.readings, body.as_of, served.params)
        dry_run = simulated or body.dry_run or bool(self.models.config.dry_run) or self.settings.control.dry_run
        provenance = self.online.window.provenance(body.greenhouse_id, body.as_of) if body.readings is None else {"count": len(body.readings), "sent_by_caller": True}
        item = Assignment(state, served.forecaster, served.route, served.shadows, served.unavailable, provenance, body.request_id)
        decided = (await self.decider.decide([item], now, DecisionContext("on_demand", who.name), dry_run=dry_run))[0]
        decision = decided.decision
        self.models.note(served.forecaster, decision.model_error)
        result = await self._dispatch(decision.command.model_copy(update={"requested_by": who.name}))
        await asyncio.to_thread(_insert_once, self.records, decided.record)
        self.metrics.observe([decided])
        self._freeze_once_warm(decision)
        return {
            "command": decision.command.model_dump(mode="json"),
            "dispatch": {"status": result.status, "partition": result.partition, "offset": result.offset},
            "requested_by": who.name,
            "decision": {"mode": decision.mode, "reason": decision.reason, "cost": decision.cost, "forecast": decision.forecast, "corrections_c": decision.corrections_c},
            "model_role": served.route.role,
            "state": {"latest_step": decision.state_ts.isoformat(), "age_s": round(decision.age_s, 1)},
        }

    async def _dispatch(self, command: Any) -> Any:
        """Dispatch ``command``; one that could not be (counted by reason) answers 503, retriable:
        its audit says failed, so a retry with the same request publishes it."""
        from app.control.dispatch import DispatchError

        try:
            return await self.dispatch_thread.dispatch(command)
        except DispatchError as exc:
            log.warning("command %s not dispatched: %s", command.command_id, exc.reason)
            raise ServeError(503, DISPATCH_FAILED, f"the command could not be dispatched ({exc.reason}); retry the request") from exc

    @api.get("/loop")
    async def loop_status(self, authorization: str | None = Header(default=None)) -> dict[str, Any]:
        """The control loop's replicas: their leases and the progress of recent intervals."""
        self.gate.admit(authorization, "forecast", caller_state=False)
        if self.loop_ledger is None:
            return {"enabled": False, "replicas": []}
        members = await asyncio.to_thread(self.loop_ledger.members)
        return {"enabled": True, "interval_s": self.settings.control.interval_s, "replicas": [_public_member(m) for m in members]}

    def _freeze_once_warm(self, decision: ControlDecision) -> None:
        if decision.mode == "mpc" and not self._warm:
            # The first model decision has run every lazy import and filled Serve's and our caches
            # (over 100k objects made after __init__): freeze them too, right after this response.
            self._warm = True
            asyncio.get_running_loop().call_soon(freeze_startup_heap)

    def __del__(self) -> None:
        for part in ("online", "dispatch_thread"):
            if getattr(self, part, None) is not None:
                getattr(self, part).stop()
        if getattr(self, "gc_pauses", None) is not None:
            self.gc_pauses.close()
        if getattr(self, "_shares", None) is not None:
            self._shares.stop()


def build_app(args: AppArgs | dict[str, Any]) -> Application:
    """Typed app builder for ``serve run app.serve.control:build_app`` (the config file sets the
    ``user_config`` of the ``ControlApp`` deployment)."""
    return application(args)


def application(args: AppArgs | dict[str, Any], user_config: dict[str, Any] | None = None, *, with_loop: bool | None = None) -> Application:
    """The application for Python callers, with a :class:`ModelConfig` as ``user_config``; the
    control loop (:class:`~app.serve.control_loop.ControlLoop`) is part of it unless
    ``with_loop`` (default: ``settings.loop.enabled``) says otherwise."""
    if not isinstance(args, AppArgs):
        args = AppArgs.model_validate(args)
    # Always a user_config (the defaults when none is given): a later deploy that only changes it
    # then reconfigures the replicas in place instead of replacing them.
    config = ModelConfig.model_validate(user_config or {}).model_dump()
    forecaster = Forecaster.bind(args)
    if with_loop is None:
        with_loop = args.load().loop.enabled
    loop = ControlLoop.options(user_config=config).bind(forecaster, args) if with_loop else None
    return ControlApp.options(user_config=config).bind(forecaster, args, loop)
