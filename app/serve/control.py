"""Forecast and control as a Ray Serve application.

Two deployments composed through a handle:

- :class:`Forecaster` loads registered models from MLflow through Serve model multiplexing (the
  multiplexed id is ``<name>/<version>``, so per-greenhouse models share the replicas) and answers
  batched predictions (``@serve.batch``: concurrent requests for the same model become one
  XGBoost call).
- :class:`ControlApp` is the HTTP ingress (``POST /forecast``, ``POST /control``, ``GET /healthz``).
  It follows the sensor topic to keep each greenhouse's recent readings (a caller only names the
  greenhouse, or may send the window itself), builds features exactly as training did, runs the
  model-predictive policy (thermostat fallback when the model or data is stale) and dispatches the
  signed command through the bus with an audit record.

The model is chosen in ``user_config`` (``model_alias`` or ``model_version``, plus optional
``greenhouse_models``); ``serve deploy`` with a new value swaps models without restarting replicas.
"""


import asyncio
import logging
import os
import time
from datetime import datetime, timezone
from typing import Any

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
from app.control.online import OnlineWindow, SensorTopicFollower, latest_features, parse_readings, reading_to_row
from app.control.planner import build_command, candidate_frame, current_setpoints, forecast_dicts, targets_from
from app.control.policy import Decision, Limits, candidate_grid, pick_best, screen_rule, thermostat
from app.preprocess.features import FeatureParams

log = logging.getLogger(__name__)

# error codes (HTTP status * 100 + n), like the ingest gateway's
INVALID_REQUEST = 42201
INVALID_READINGS = 42211
NO_READINGS = 40411
MODEL_UNAVAILABLE = 50311
MAX_WINDOW_READINGS = 20_000
LEVELS = (0.0, 10.0, 20.0, 35.0, 50.0, 75.0, 100.0)  # candidate settings per actuator, percent


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


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=128, health_check_period_s=10)
class Forecaster:
    """Registered forecast models, multiplexed by ``<name>/<version>``, predicting in batches."""

    def __init__(self, args: ControlAppArgs) -> None:
        self.tracking_url = load_settings(args.config_file, **args.settings).tracking_url

    @serve.multiplexed(max_num_models_per_replica=4)
    async def get_model(self, model_id: str):
        from app.tracking.pyfunc import load_model

        started = time.monotonic()
        pyfunc = await asyncio.to_thread(load_model, self.tracking_url, f"models:/{model_id}")
        log.info("loaded model %s in %.1f s", model_id, time.monotonic() - started)
        return pyfunc.unwrap_python_model().model

    async def describe(self) -> dict[str, Any]:
        """Columns and horizons of the request's model (loads it if needed)."""
        model = await self.get_model(serve.get_multiplexed_model_id())
        return {"feature_columns": list(model.feature_columns), "horizons_min": list(model.horizons_min), "feature_params": dict(model.feature_params)}

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.003)
    async def predict(self, frames: list[pd.DataFrame]) -> list[pd.DataFrame]:
        # Serve splits batches by multiplexed model id, so one model serves the whole batch.
        model = await self.get_model(serve.get_multiplexed_model_id())
        lengths = [len(f) for f in frames]
        out = model.predict(pd.concat(frames, ignore_index=True))
        parts, start = [], 0
        for n in lengths:
            parts.append(out.iloc[start:start + n].reset_index(drop=True))
            start += n
        return parts


api = FastAPI(title="Greenhouse forecast and control", version="1", description="Indoor climate forecasts and actuator commands.")


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    parts = [f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors()]
    return _error(422, INVALID_REQUEST, "; ".join(parts)[:2000])


@api.exception_handler(ServeError)
async def _serve_error(request: Request, exc: ServeError) -> JSONResponse:
    return _error(exc.status, exc.code, exc.message)


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=128, health_check_period_s=10)
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
        self.config = ModelConfig()
        self._resolved: dict[str, tuple[str, float]] = {}  # model name -> (version, resolved at)
        self._model_info: dict[str, dict[str, Any]] = {}  # model id -> columns/horizons/params
        self.model_error: str | None = None
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

    async def _model_info_for(self, ref: ModelRef) -> dict[str, Any]:
        model_id = f"{ref.name}/{ref.version}"
        info = self._model_info.get(model_id)
        if info is None:
            info = await self.forecaster.options(multiplexed_model_id=model_id).describe.remote()
            self._model_info[model_id] = info
        return info

    async def _predict(self, ref: ModelRef, frame: pd.DataFrame) -> pd.DataFrame:
        return await self.forecaster.options(multiplexed_model_id=f"{ref.name}/{ref.version}").predict.remote(frame)

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
            feats = await asyncio.to_thread(latest_features, rows, params)
        else:
            if as_of is not None:  # the follower may be a moment behind the caller: wait briefly
                deadline = time.monotonic() + 2.0
                while time.monotonic() < deadline:
                    latest = self.window.latest_ts(greenhouse_id)
                    if latest is not None and latest >= as_of:
                        break
                    await asyncio.sleep(0.01)
            feats = self.window.features(greenhouse_id, params, as_of)
        if feats is None:
            raise ServeError(404, NO_READINGS, f"no recent readings for greenhouse {greenhouse_id!r} (send 'readings', or wait for its devices)")
        return feats

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
        feats = await self._features(body.greenhouse_id, body.readings, body.as_of, self._feature_params(info))
        plan = body.plan.model_dump() if body.plan else current_setpoints(feats)
        frame = candidate_frame(feats, [plan], info["feature_columns"], info["horizons_min"])
        (forecast,) = forecast_dicts(await self._predict(ref, frame))
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
        feats = await self._features(body.greenhouse_id, body.readings, body.as_of, self._feature_params(info))
        current = current_setpoints(feats)
        age_s = (now - feats["ts"]).total_seconds()
        if why_fallback is None and age_s > settings.control.stale_after_s:
            why_fallback = f"data stale: newest step is {age_s:.0f} s old"
        decision: Decision | None = None
        screen = screen_rule(feats["outside_temp_c"], feats["solar_w_m2"])
        if why_fallback is None:
            assert ref is not None and info is not None
            # The screen follows the climate computer's rule (insulate when dark and cold, shade in
            # strong sun); the model chooses heating and ventilation around it.
            candidates = candidate_grid(current, self.limits, dt_s, fixed={"screen_pct": screen}, levels=LEVELS)
            try:
                predictions = await self._predict(ref, candidate_frame(feats, candidates, info["feature_columns"], info["horizons_min"]))
                decision = pick_best(candidates, forecast_dicts(predictions), current, limits=self.limits, targets=self.targets, dt_s=dt_s)
            except Exception as exc:
                self.model_error = why_fallback = f"model unavailable: {type(exc).__name__}: {exc}"
        if decision is None:
            decision = thermostat(feats["air_temp_c"], feats["rh_pct"], current, limits=self.limits, targets=self.targets, dt_s=dt_s, screen_pct=screen)
            decision = Decision(decision.setpoints, decision.mode, f"{why_fallback}; {decision.reason}")
        dry_run = body.dry_run or bool(self.config.dry_run) or settings.control.dry_run
        command = build_command(
            body.greenhouse_id, decision, decided_at=now, ttl_s=settings.control.command_ttl_s, model=ref,
            state_ts=feats["ts"], dry_run=dry_run, request_id=body.request_id,
        )
        result = await asyncio.to_thread(self.dispatcher.dispatch, command)
        self._decisions.inc(tags={"mode": decision.mode})
        self._latency.observe((time.perf_counter() - started) * 1000, tags={"route": "control"})
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
