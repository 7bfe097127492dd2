"""Forecast and control as a Ray Serve application.

Two deployments composed through a handle:

- :class:`Forecaster` loads registered models from MLflow through Serve model multiplexing (the
  multiplexed id is ``<name>/<version>``, so per-greenhouse models share the replicas) and answers
  batched predictions (``@serve.batch``: concurrent requests for the same model become one
  XGBoost call per booster). Requests carry numpy matrices with named columns, not DataFrames:
  the hot path has no pandas.
- :class:`ControlApp` is the HTTP ingress (``POST /forecast``, ``POST /control``, ``GET /healthz``).
  It follows the sensor topic to keep each greenhouse's recent readings (a caller only names the
  greenhouse, or may send the window itself), builds features exactly as training did, runs the
  model-predictive policy (thermostat fallback when the model or data is stale) and dispatches the
  signed command through the bus with an audit record.

The model is chosen in ``user_config`` (``model_alias`` or ``model_version``, plus optional
``greenhouse_models``); ``serve deploy`` with a new value swaps models without restarting replicas.
"""


import asyncio
import dataclasses
import logging
import os
import queue
import threading
import time
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from app.config import Settings, load_settings
from app.contracts.command import ModelRef
from app.contracts.reading import ID_PATTERN, ReadingError
from app.control.correction import ForecastOffsets
from app.control.online import OnlineWindow, SensorTopicFollower, parse_readings, reading_to_row
from app.control.planner import build_command, cached_candidate_plans, candidate_matrix, current_setpoints, screen_plan, targets_during, targets_from
from app.control.policy import Decision, Limits, cost_horizons, horizon_of, pick_best_arrays, thermostat
from app.preprocess.features import FeatureParams, latest_feature_row
from app.serve.gcpause import GcPauses, freeze_startup_heap

log = logging.getLogger(__name__)

# error codes (HTTP status * 100 + n), like the ingest gateway's
INVALID_REQUEST = 42201
INVALID_READINGS = 42211
NO_READINGS = 40411
MODEL_UNAVAILABLE = 50311
MAX_WINDOW_READINGS = 20_000
# Candidate settings, percent: heating finely (holding close to the band's edge needs it; the
# forecaster is cheap per row), ventilation coarsely. The screen follows screen_rule.
LEVELS = {"heat_pct": tuple(float(x) for x in range(0, 101, 5)), "vent_pct": (0.0, 10.0, 25.0, 50.0, 100.0)}
XGBOOST_THREADS = 1  # per prediction: batches are small, and the replica shares the CPUs
AS_OF_WAIT_S = 2.0  # how long a request with as_of waits for the follower to reach it
# No per-request access log line: at tens of requests/s it costs the replica, the proxy and Ray's
# log monitor about 1-2 ms of CPU per request. Request counts and latencies are in the metrics
# (gh_serve_latency_ms, Serve's own); set enable_access_log in the Serve config to debug.
ACCESS_LOG_OFF = {"enable_access_log": False}


class ControlAppArgs(BaseModel):
    """Arguments of the control application (the ``args:`` block of a Serve config)."""

    config_file: str | None = Field(default=None, description="YAML settings file read by each replica")
    settings: dict[str, Any] = Field(default_factory=dict, description="settings overrides (highest priority)")


class ModelConfig(BaseModel):
    """The ``user_config`` of :class:`ControlApp`: which model versions serve which greenhouse."""

    model_config = ConfigDict(extra="forbid")

    model_name: str | None = Field(default=None, description="registered model (default: settings.control.model_name)")
    model_alias: str | None = Field(default=None, description="alias to resolve (default: settings.control.model_alias)")
    model_version: str | None = Field(default=None, description="a fixed version; wins over the alias")
    greenhouse_models: dict[str, str] = Field(default_factory=dict, description="greenhouse id -> registered model name (same alias/version)")
    alias_refresh_s: float = Field(default=60.0, ge=0, description="re-resolve the alias this often, so a promotion is picked up")
    dry_run: bool | None = Field(default=None, description="override settings.control.dry_run")


class Plan(BaseModel):
    vent_pct: float = Field(ge=0, le=100)
    heat_pct: float = Field(ge=0, le=100)
    screen_pct: float = Field(ge=0, le=100)


class ForecastRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    greenhouse_id: str = Field(pattern=ID_PATTERN)
    readings: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_WINDOW_READINGS, description="the recent window; default: the followed sensor topic")
    plan: Plan | None = Field(default=None, description="actuator settings held over the horizons; default: the current ones")
    as_of: datetime | None = Field(default=None, description="use readings up to this instant (waits briefly for them to arrive)")


class ControlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    greenhouse_id: str = Field(pattern=ID_PATTERN)
    readings: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_WINDOW_READINGS)
    as_of: datetime | None = Field(default=None, description="decision time (default now); readings up to it are waited for briefly")
    dry_run: bool = False
    request_id: str | None = Field(default=None, max_length=100, description="makes distinct commands at the same instant; retries reuse it")


class ServeError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"error_code": code, "message": message}, status_code=status)


def _output_keys(model: Any) -> list[str]:
    if hasattr(model, "output_keys"):
        return list(model.output_keys())
    return [f"{v}_{h}min" for v in model.variables for h in model.horizons_min]


def _predict_matrix(model: Any, matrix: np.ndarray, columns: list[str]) -> np.ndarray:
    """Forecasts in ``_output_keys(model)`` order; models logged before ``predict_arrays`` existed
    (the pyfunc carries its own copy of the code) take the DataFrame path."""
    if hasattr(model, "predict_arrays"):
        return model.predict_arrays(matrix, columns)
    return model.predict(pd.DataFrame(matrix, columns=columns))[_output_keys(model)].to_numpy(dtype=np.float64)


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=128, health_check_period_s=10, logging_config=ACCESS_LOG_OFF)
class Forecaster:
    """Registered forecast models, multiplexed by ``<name>/<version>``, predicting in batches."""

    def __init__(self, args: ControlAppArgs) -> None:
        import mlflow.pyfunc  # noqa: F401  (imported at start, not on the first model load)

        self.tracking_url = load_settings(args.config_file, **args.settings).tracking_url
        freeze_startup_heap()

    @serve.multiplexed(max_num_models_per_replica=4)
    async def get_model(self, model_id: str):
        from app.tracking.pyfunc import load_model

        started = time.monotonic()
        pyfunc = await asyncio.to_thread(load_model, self.tracking_url, f"models:/{model_id}")
        model = pyfunc.unwrap_python_model().model
        for booster in model.boosters.values():
            booster.set_param({"nthread": XGBOOST_THREADS})
        log.info("loaded model %s in %.1f s", model_id, time.monotonic() - started)
        freeze_startup_heap()  # the model lives as long as the replica: keep it out of collections
        return model

    async def describe(self) -> dict[str, Any]:
        """Columns, horizons and output keys of the request's model (loads it if needed)."""
        model = await self.get_model(serve.get_multiplexed_model_id())
        return {
            "feature_columns": list(model.feature_columns),
            "horizons_min": list(model.horizons_min),
            "feature_params": dict(model.feature_params),
            "output_keys": _output_keys(model),
        }

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.003)
    async def predict(self, requests: list[tuple[Any, ...]]) -> list[np.ndarray]:
        """Each request is ``(matrix, column names)`` or ``(matrix, column names, horizons)``; each
        answer the forecasts, one row per input row, columns in the ``output_keys`` order of
        :meth:`describe` (only the given horizons' keys when ``horizons`` is set: the boosters of
        the other horizons are not run)."""
        # Serve splits batches by multiplexed model id, so one model serves the whole batch.
        model = await self.get_model(serve.get_multiplexed_model_id())
        groups: dict[tuple[tuple[str, ...], tuple[int, ...] | None], list[int]] = {}
        for i, (_, columns, *rest) in enumerate(requests):
            horizons = tuple(rest[0]) if rest and rest[0] else None
            groups.setdefault((tuple(columns), horizons), []).append(i)
        answers: list[np.ndarray] = [np.empty(0)] * len(requests)
        for (columns, horizons), members in groups.items():
            matrices = [requests[i][0] for i in members]
            out = _predict_matrix(_horizons_view(model, horizons), matrices[0] if len(matrices) == 1 else np.concatenate(matrices), list(columns))
            start = 0
            for i, m in zip(members, matrices):
                answers[i] = out[start:start + len(m)]
                start += len(m)
        return answers


def _horizons_view(model: Any, horizons: tuple[int, ...] | None) -> Any:
    """``model`` predicting only ``horizons`` (a subset of its own; ``None``: all of them)."""
    if horizons is None or list(horizons) == list(model.horizons_min):
        return model
    unknown = set(horizons) - set(model.horizons_min)
    if unknown:
        raise ValueError(f"the model has no horizon(s) {sorted(unknown)}")
    views = model.__dict__.setdefault("_horizon_views", {})
    view = views.get(horizons)
    if view is None:
        view = views[horizons] = dataclasses.replace(model, horizons_min=list(horizons))
    return view


_Key = tuple[tuple[str, ...], tuple[int, ...] | None]  # (column names, horizons or None for all)


class ForecastCoalescer:
    """Concurrent predictions for one model become one handle call.

    Up to ``max_in_flight`` calls go out at once; requests that arrive while they are out wait and
    leave together in the next call, as one matrix (Forecaster's ``@serve.batch`` then merges calls
    from every ingress replica). No timer: a request on an idle replica goes out at once, so
    batching costs no latency at low load and saves a handle round trip per request at high load.
    """

    def __init__(self, handle: DeploymentHandle, max_in_flight: int = 1) -> None:
        self._handle = handle
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._pending: list[tuple[np.ndarray, _Key, asyncio.Future]] = []
        self._tasks: set[asyncio.Task] = set()

    async def predict(self, matrix: np.ndarray, columns: list[str], horizons: list[int] | None = None) -> np.ndarray:
        """Forecasts for ``matrix`` (see :meth:`Forecaster.predict`)."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((matrix, (tuple(columns), tuple(horizons) if horizons else None), future))
        if self._in_flight < self._max_in_flight:
            self._launch()
        return await future

    def _launch(self) -> None:
        batch, self._pending = self._pending, []
        self._in_flight += 1
        task = asyncio.ensure_future(self._send(batch))
        self._tasks.add(task)  # keep a reference until done
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[np.ndarray, _Key, asyncio.Future]]) -> None:
        try:
            await self._send_groups(batch)
        except BaseException:  # cancelled (replica shutting down): nobody waits forever
            for _, _, future in batch:
                if not future.done():
                    future.cancel()
            raise
        finally:
            self._in_flight -= 1
            if self._pending and self._in_flight < self._max_in_flight:
                self._launch()

    async def _send_groups(self, batch: list[tuple[np.ndarray, _Key, asyncio.Future]]) -> None:
        groups: dict[_Key, list[tuple[np.ndarray, _Key, asyncio.Future]]] = {}
        for item in batch:
            groups.setdefault(item[1], []).append(item)
        for (columns, horizons), items in groups.items():
            try:
                matrices = [m for m, _, _ in items]
                stacked = matrices[0] if len(matrices) == 1 else np.concatenate(matrices)
                out = await self._handle.predict.remote((stacked, list(columns), horizons))
            except Exception as exc:
                for _, _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for matrix, _, future in items:
                if not future.done():  # the caller may have gone (cancelled)
                    future.set_result(out[start:start + len(matrix)])
                start += len(matrix)


class DispatchThread:
    """Dispatches commands on one background thread (the audit and the bus write fsync'd files).

    Commands that queue up while it works go together through
    :meth:`~app.control.dispatch.CommandDispatcher.dispatch_many`: one bus write for the group,
    each command audited before and after as alone. One thread rather than a pool: the stores
    serialise their writes anyway, and fewer threads contend for them and for the GIL.
    """

    def __init__(self, dispatcher: Any, max_group: int = 32) -> None:
        self._dispatcher = dispatcher
        self._max_group = max_group
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="command-dispatch", daemon=True)
        self._thread.start()

    async def dispatch(self, command: Any) -> Any:
        """The command's :class:`~app.control.dispatch.DispatchResult` (or its exception)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((command, loop, future))
        return await future

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            group = [item]
            while len(group) < self._max_group:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this group
                    break
                group.append(more)
            try:
                results = self._dispatcher.dispatch_many([command for command, _, _ in group])
            except Exception as exc:  # dispatch_many answers per command; this is a bug guard
                results = [exc] * len(group)
            for (_, loop, future), result in zip(group, results):
                try:
                    loop.call_soon_threadsafe(_settle, future, result)
                except RuntimeError:  # the event loop is gone (replica shutting down)
                    pass

    def stop(self) -> None:
        self._queue.put(None)


def _settle(future: asyncio.Future, result: Any) -> None:
    if future.done():  # the request was cancelled meanwhile
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


api = FastAPI(title="Greenhouse forecast and control", version="1", description="Indoor climate forecasts and actuator commands.")


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    parts = [f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors()]
    return _error(422, INVALID_REQUEST, "; ".join(parts)[:2000])


@api.exception_handler(ServeError)
async def _serve_error(request: Request, exc: ServeError) -> JSONResponse:
    return _error(exc.status, exc.code, exc.message)


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=128, health_check_period_s=10, logging_config=ACCESS_LOG_OFF)
@serve.ingress(api)
class ControlApp:
    """HTTP ingress: online state, features, policy and dispatch."""

    def __init__(self, forecaster: DeploymentHandle, args: ControlAppArgs) -> None:
        from ray.serve.metrics import Counter, Histogram

        from app.bus import open_bus
        from app.control.dispatch import CommandDispatcher
        from app.metadata import open_metadata

        self.settings: Settings = load_settings(args.config_file, **args.settings)
        self.forecaster = forecaster
        self.limits = Limits()
        self.targets = targets_from(self.settings)
        self.window = OnlineWindow(self.settings.control.window_min)
        bus = open_bus(self.settings.bus_url)
        replica = serve.get_replica_context().replica_id.unique_id
        self.follower = SensorTopicFollower(
            bus, self.settings.topics.sensors, self.window, group_id=f"serve-online-{replica}", partitions=self.settings.topics.partitions
        ).start()
        self.dispatcher = CommandDispatcher(self.settings, bus, open_metadata(self.settings.metadata_url))
        self.dispatch_thread = DispatchThread(self.dispatcher)
        self.config = ModelConfig()
        self._resolved: dict[str, tuple[str, float]] = {}  # model name -> (version, resolved at)
        self._model_info: dict[str, dict[str, Any]] = {}  # model id -> columns/horizons/params
        self._params: dict[str, FeatureParams] = {}  # model id -> its feature params
        self._coalescers: dict[str, ForecastCoalescer] = {}  # model id -> its predictions' batcher
        self.model_error: str | None = None
        # per replica: with several replicas each learns from the decisions it made
        self.offsets = ForecastOffsets(alpha=self.settings.control.offset_alpha)
        self.gc_pauses = GcPauses()
        self._warm = False  # set by the first model decision, which freezes the heap again
        from mlflow.tracking import MlflowClient  # noqa: F401  (imported at start, not on the first request)

        freeze_startup_heap()
        self._decisions = Counter("gh_control_decisions", description="control decisions by mode", tag_keys=("mode",))
        self._latency = Histogram("gh_serve_latency_ms", description="forecast/control latency", boundaries=[5, 10, 20, 50, 100, 200, 500, 1000], tag_keys=("route",))

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply a new ``user_config`` (model alias/version) without restarting the replica."""
        self.config = ModelConfig.model_validate(user_config or {})
        self._resolved.clear()
        log.info("control app: model config %s", self.config.model_dump())

    # ------------------------------------------------------------------ model resolution
    def _model_name(self, greenhouse_id: str) -> str:
        return self.config.greenhouse_models.get(greenhouse_id) or self.config.model_name or self.settings.control.model_name

    async def _model_ref(self, greenhouse_id: str) -> ModelRef:
        name = self._model_name(greenhouse_id)
        if self.config.model_version:
            return ModelRef(name=name, version=self.config.model_version)
        cached = self._resolved.get(name)
        if cached and time.monotonic() - cached[1] < self.config.alias_refresh_s:
            return ModelRef(name=name, version=cached[0])
        from app.tracking import Tracking

        alias = self.config.model_alias or self.settings.control.model_alias
        version = await asyncio.to_thread(lambda: Tracking(self.settings.tracking_url).version_by_alias(name, alias))
        if version is None:
            raise LookupError(f"model {name!r} has no alias {alias!r}")
        self._resolved[name] = (str(version), time.monotonic())
        return ModelRef(name=name, version=str(version))

    def _coalescer(self, model_id: str) -> ForecastCoalescer:
        coalescer = self._coalescers.get(model_id)
        if coalescer is None:
            coalescer = self._coalescers[model_id] = ForecastCoalescer(self.forecaster.options(multiplexed_model_id=model_id))
        return coalescer

    async def _model_info_for(self, ref: ModelRef) -> dict[str, Any]:
        model_id = f"{ref.name}/{ref.version}"
        info = self._model_info.get(model_id)
        if info is None:
            info = await self.forecaster.options(multiplexed_model_id=model_id).describe.remote()
            self._model_info[model_id] = info
            self._params[model_id] = self._feature_params(info)
        return info

    async def _predict(
        self,
        ref: ModelRef,
        info: dict[str, Any],
        features: dict[str, Any],
        plans: np.ndarray | list[dict[str, float]],
        scheduled: dict[str, tuple[float, float]] | None = None,
        horizons: list[int] | None = None,
    ) -> np.ndarray:
        """Forecasts for each candidate plan (held over every horizon, reached with the actuators'
        lags, ``scheduled`` changes included): one row per plan, columns in the model's
        ``output_keys`` order (of ``horizons`` only, when given)."""
        matrix, columns = candidate_matrix(
            features, plans, info["feature_columns"], horizons or info["horizons_min"], self.settings.control.actuator_time_constants_s, scheduled
        )
        return await self._coalescer(f"{ref.name}/{ref.version}").predict(matrix, columns, horizons)

    # ------------------------------------------------------------------ state
    async def _features(self, greenhouse_id: str, readings: list[dict[str, Any]] | None, as_of: datetime | None, params: FeatureParams) -> dict[str, Any]:
        if readings is not None:
            try:
                parsed = parse_readings(readings, greenhouse_id)
            except ReadingError as exc:
                raise ServeError(422, INVALID_READINGS, exc.reason) from None
            rows = [reading_to_row(r) for r in parsed]
            if as_of is not None:
                rows = [r for r in rows if r["ts"] <= as_of]
            feats = await asyncio.to_thread(latest_feature_row, rows, params)
        else:
            if as_of is not None:  # the follower may be a moment behind the caller: wait briefly
                await self._wait_for(greenhouse_id, as_of, AS_OF_WAIT_S)
            feats = self.window.features(greenhouse_id, params, as_of)
        if feats is None:
            raise ServeError(404, NO_READINGS, f"no recent readings for greenhouse {greenhouse_id!r} (send 'readings', or wait for its devices)")
        return feats

    async def _wait_for(self, greenhouse_id: str, as_of: datetime, timeout_s: float) -> None:
        """Until the window holds a reading of ``greenhouse_id`` at or after ``as_of`` (woken by the
        follower thread, no polling), or ``timeout_s``."""
        latest = self.window.latest_ts(greenhouse_id)
        if latest is not None and latest >= as_of:
            return
        loop = asyncio.get_running_loop()
        reached = asyncio.Event()
        cancel = self.window.on_reaching(greenhouse_id, as_of, lambda: loop.call_soon_threadsafe(reached.set))
        try:
            await asyncio.wait_for(reached.wait(), timeout_s)
        except asyncio.TimeoutError:
            pass
        finally:
            cancel()

    def _params_for(self, ref: ModelRef | None, info: dict[str, Any] | None) -> FeatureParams:
        if ref is not None and info is not None:
            params = self._params.get(f"{ref.name}/{ref.version}")
            if params is not None:
                return params
        return self._feature_params(info)

    @staticmethod
    def _feature_params(info: dict[str, Any] | None) -> FeatureParams:
        fp = dict((info or {}).get("feature_params") or {})
        if info:
            fp["horizons_min"] = tuple(info["horizons_min"])
        return FeatureParams(**fp)

    # ------------------------------------------------------------------ routes
    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        """Liveness plus what the replica knows: models, greenhouses followed, follower errors."""
        return {
            "status": "ok",
            "replica_pid": os.getpid(),
            "models": {name: version for name, (version, _) in self._resolved.items()},
            "model_config": self.config.model_dump(),
            "model_error": self.model_error,
            "greenhouses": self.window.greenhouses(),
            "readings_followed": self.window.records,
            "feature_builds": self.window.builds,
            "gc": self.gc_pauses.summary(),
            "follower_error": self.follower.error,
        }

    @api.post("/forecast")
    async def forecast(self, body: ForecastRequest) -> dict[str, Any]:
        """Indoor temperature and humidity at the model's horizons for one greenhouse."""
        started = time.perf_counter()
        try:
            ref = await self._model_ref(body.greenhouse_id)
            info = await self._model_info_for(ref)
        except Exception as exc:
            self.model_error = f"{type(exc).__name__}: {exc}"
            raise ServeError(503, MODEL_UNAVAILABLE, f"model unavailable: {self.model_error}") from None
        feats = await self._features(body.greenhouse_id, body.readings, body.as_of, self._params_for(ref, info))
        plan = body.plan.model_dump() if body.plan else current_setpoints(feats)
        (row,) = (await self._predict(ref, info, feats, [plan])).tolist()
        forecast = dict(zip(info["output_keys"], row))
        self._latency.observe((time.perf_counter() - started) * 1000, tags={"route": "forecast"})
        return {
            "greenhouse_id": body.greenhouse_id,
            "as_of": feats["ts"].isoformat(),
            "model": ref.model_dump(),
            "plan": plan,
            "horizons_min": info["horizons_min"],
            "forecast": {k: round(v, 3) for k, v in forecast.items()},
        }

    @api.post("/control")
    async def control(self, body: ControlRequest) -> dict[str, Any]:
        """Decide, sign and dispatch one command for a greenhouse (returned; not sent if dry-run)."""
        started = time.perf_counter()
        settings = self.settings
        now = (body.as_of or datetime.now(timezone.utc)).astimezone(timezone.utc)
        dt_s = settings.control.interval_s
        ref: ModelRef | None = None
        info: dict[str, Any] | None = None
        why_fallback = None
        try:
            ref = await self._model_ref(body.greenhouse_id)
            info = await self._model_info_for(ref)
            self.model_error = None
        except Exception as exc:
            self.model_error = why_fallback = f"model unavailable: {type(exc).__name__}: {exc}"
        feats = await self._features(body.greenhouse_id, body.readings, body.as_of, self._params_for(ref, info))
        current = current_setpoints(feats)
        age_s = (now - feats["ts"]).total_seconds()
        if why_fallback is None and age_s > settings.control.stale_after_s:
            why_fallback = f"data stale: newest step is {age_s:.0f} s old"
        decision: Decision | None = None
        # The screen follows the climate computer's rule (insulate when dark and cold, shade in
        # strong sun); the model chooses heating and ventilation around it, knowing when the rule
        # will move the screen next.
        screen = screen_plan(feats, dt_s)
        if why_fallback is None:
            assert ref is not None and info is not None
            plans = cached_candidate_plans(current, self.limits, dt_s, fixed={"screen_pct": screen.setpoint_pct}, levels=LEVELS)
            try:
                # Only the horizons the cost counts are forecast (the shortest always counts).
                horizons = cost_horizons(info["horizons_min"], settings.control.cost_horizon_max_min)
                forecasts = await self._predict(ref, info, feats, plans, screen.scheduled, horizons)
                # Offset-free MPC: settle the forecasts now due against the measurement, correct
                # each horizon by its recent error, decide, remember what the model said.
                key = f"{ref.name}/{ref.version}|{body.greenhouse_id}"
                keys = [k for k in info["output_keys"] if horizon_of(k) in horizons]
                self.offsets.observe(key, feats["ts"], feats["air_temp_c"])
                decision = pick_best_arrays(
                    plans, self.offsets.correct(key, forecasts, keys), keys, current, limits=self.limits,
                    targets=targets_during(self.targets, screen, settings.control.screen_opening_margin_c), dt_s=dt_s,
                    max_horizon_min=settings.control.cost_horizon_max_min,
                )
                if decision.candidate_index is not None:
                    self.offsets.record(key, feats["ts"], dict(zip(keys, forecasts[decision.candidate_index].tolist())))
            except Exception as exc:
                self.model_error = why_fallback = f"model unavailable: {type(exc).__name__}: {exc}"
        if decision is None:
            decision = thermostat(feats["air_temp_c"], feats["rh_pct"], current, limits=self.limits, targets=self.targets, dt_s=dt_s, screen_pct=screen.setpoint_pct)
            decision = Decision(decision.setpoints, decision.mode, f"{why_fallback}; {decision.reason}")
        dry_run = body.dry_run or bool(self.config.dry_run) or settings.control.dry_run
        command = build_command(
            body.greenhouse_id, decision, decided_at=now, ttl_s=settings.control.command_ttl_s, model=ref,
            state_ts=feats["ts"], dry_run=dry_run, request_id=body.request_id,
        )
        result = await self.dispatch_thread.dispatch(command)
        self._decisions.inc(tags={"mode": decision.mode})
        self._latency.observe((time.perf_counter() - started) * 1000, tags={"route": "control"})
        if decision.mode == "mpc" and not self._warm:
            # The first model decision has run every lazy import and filled Serve's and our caches
            # (over 100k objects made after __init__): freeze them too, right after this response.
            self._warm = True
            asyncio.get_running_loop().call_soon(freeze_startup_heap)
        return {
            "command": command.model_dump(mode="json"),
            "dispatch": {"status": result.status, "partition": result.partition, "offset": result.offset},
            "decision": {"mode": decision.mode, "reason": decision.reason, "cost": decision.cost, "forecast": decision.forecast},
            "state": {"latest_step": feats["ts"].isoformat(), "age_s": round(age_s, 1)},
        }

    def __del__(self) -> None:
        follower = getattr(self, "follower", None)
        if follower is not None:
            follower.stop()
        dispatch_thread = getattr(self, "dispatch_thread", None)
        if dispatch_thread is not None:
            dispatch_thread.stop()
        gc_pauses = getattr(self, "gc_pauses", None)
        if gc_pauses is not None:
            gc_pauses.close()


def build_app(args: ControlAppArgs | dict[str, Any]) -> Application:
    """Typed app builder for ``serve run app.serve.control:build_app`` (the config file sets the
    ``user_config`` of the ``ControlApp`` deployment)."""
    return application(args)


def application(args: ControlAppArgs | dict[str, Any], user_config: dict[str, Any] | None = None) -> Application:
    """The application for Python callers, with a :class:`ModelConfig` as ``user_config``."""
    if not isinstance(args, ControlAppArgs):
        args = ControlAppArgs.model_validate(args)
    # Always a user_config (the defaults when none is given): a later deploy that only changes it
    # then reconfigures the replicas in place instead of replacing them.
    config = ModelConfig.model_validate(user_config or {}).model_dump()
    return ControlApp.options(user_config=config).bind(Forecaster.bind(args), args)
