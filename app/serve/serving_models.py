"""Which registered model version serves each greenhouse, as a forecaster the controller can call.

The control app's ``user_config`` (:class:`ModelConfig`) names a model and an alias or a fixed
version, optionally a model per greenhouse and shadow versions; :class:`ServingModels` follows the
model's active rollout (``greenhouse rollout``: a stable share of greenhouses on the candidate, the
other version shadowing), else resolves the alias (again every ``alias_refresh_s``, so a promotion
is picked up), asks the Forecaster deployment what each version needs (columns, horizons, feature
parameters) once, and hands out :class:`~app.control.core.ModelForecaster` objects whose
predictions go through a :class:`~app.serve.coalescer.ForecastCoalescer`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.config import Settings
from app.contracts.command import ModelRef
from app.control.core import ModelForecaster
from app.control.decision_record import ROLE_CHAMPION, ROLE_PINNED, Route
from app.preprocess.features import FeatureParams
from app.security.redact import redact
from app.serve.coalescer import ForecastCoalescer
from app.serve.control_metrics import timed

log = logging.getLogger(__name__)


class ModelConfig(BaseModel):
    """The ``user_config`` of the control app: which model versions serve which greenhouse."""

    model_config = ConfigDict(extra="forbid")

    model_name: str | None = Field(default=None, description="registered model (default: settings.control.model_name)")
    model_alias: str | None = Field(default=None, description="alias to resolve (default: settings.control.model_alias)")
    model_version: str | None = Field(default=None, description="a fixed version; wins over the alias")
    greenhouse_models: dict[str, str] = Field(default_factory=dict, description="greenhouse id -> registered model name (same alias/version)")
    alias_refresh_s: float = Field(default=60.0, ge=0, description="re-resolve the alias this often, so a promotion is picked up")
    dry_run: bool | None = Field(default=None, description="override settings.control.dry_run")
    shadow_versions: list[str] = Field(default_factory=list, description="versions of the model that forecast every greenhouse without actuating (online error per version)")
    follow_rollouts: bool = Field(default=True, description="route greenhouses as the model's active rollout says (greenhouse rollout ...)")


def feature_params_of(info: dict[str, Any] | None) -> FeatureParams:
    """The feature parameters a model was trained with (the defaults when nothing is known)."""
    fp = dict((info or {}).get("feature_params") or {})
    if info:
        fp["horizons_min"] = tuple(info["horizons_min"])
    return FeatureParams(**fp)


@dataclass(frozen=True)
class Served:
    """What serves one greenhouse: the forecaster (``None``: the thermostat, ``unavailable`` says
    why), the feature parameters its model needs, its route and the forecasters shadowing it."""

    forecaster: ModelForecaster | None
    params: FeatureParams
    route: Route
    shadows: tuple[ModelForecaster, ...] = ()
    unavailable: str | None = None


class ServingModels:
    """Model resolution for one control replica (``forecaster`` is the Forecaster's handle;
    ``rollouts`` answers ``active(model_name)``, by default the metadata store's rollouts;
    ``on_forecast``, for metrics, gets the duration in seconds of every forecast call)."""

    def __init__(self, settings: Settings, forecaster: Any, rollouts: Any = None, *, on_forecast: Callable[[float], None] | None = None) -> None:
        self.settings = settings
        self._on_forecast = on_forecast
        self.config = ModelConfig()
        self._handle = forecaster
        self._rollouts = rollouts
        self._resolved: dict[str, tuple[str, float]] = {}  # model name -> (version, resolved at)
        self._plans: dict[str, tuple[Any, float]] = {}  # model name -> (active rollout or None, read at)
        self._forecasters: dict[str, tuple[ModelForecaster, FeatureParams]] = {}  # model id -> ...
        self.error: str | None = None
        """Why the model could not be used last time (``None`` once it could)."""
        self.routed_at = float("-inf")
        """When (``time.monotonic()``) a greenhouse was last routed: what :meth:`resolved` and
        :meth:`rollouts` say is that fresh."""

    def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        """Follow a new ``user_config``; aliases are resolved again on the next request."""
        self.config = ModelConfig.model_validate(user_config or {})
        self._resolved.clear()

    def resolved(self) -> dict[str, str]:
        """Model name -> the version it resolved to last."""
        return {name: version for name, (version, _) in self._resolved.items()}

    def rollouts(self) -> dict[str, Any]:
        """Model name -> the active rollout this replica follows (id, versions, fraction)."""
        return {name: {"rollout_id": p.rollout_id, "champion": p.champion_version, "candidate": p.candidate_version, "fraction": p.fraction} for name, (p, _) in self._plans.items() if p is not None}

    async def serving(self, greenhouse_id: str) -> tuple[ModelForecaster | None, FeatureParams]:
        """The forecaster serving ``greenhouse_id`` and its feature parameters (``None`` and the
        defaults when the model is unavailable, the reason in :attr:`error`)."""
        served = await self.route(greenhouse_id)
        return served.forecaster, served.params

    async def route(self, greenhouse_id: str) -> Served:
        """What serves ``greenhouse_id`` now: the configured or rolled-out version, and shadows."""
        name = self.config.greenhouse_models.get(greenhouse_id) or self.config.model_name or self.settings.control.model_name
        self.routed_at = time.monotonic()
        try:
            version, route = await self._version_and_route(name, greenhouse_id)
            forecaster, params = await self._loaded(ModelRef(name=name, version=version))
        except Exception as exc:
            self.error = redact(f"model unavailable: {type(exc).__name__}: {exc}")
            return Served(None, feature_params_of(None), Route(), (), self.error)
        self.error = None
        shadows = []
        for shadow_version in route.shadows:
            try:
                shadows.append((await self._loaded(ModelRef(name=name, version=shadow_version)))[0])
            except Exception as exc:  # a shadow that cannot load never affects control
                log.warning("shadow %s/%s unavailable: %s", name, shadow_version, redact(str(exc)))
        return Served(forecaster, params, route, tuple(shadows))

    def note(self, forecaster: ModelForecaster | None, model_error: str | None) -> None:
        """Remember how a decision with ``forecaster`` went (its predictions may have failed)."""
        if forecaster is not None:
            self.error = model_error

    async def _version_and_route(self, name: str, greenhouse_id: str) -> tuple[str, Route]:
        config = self.config
        if config.model_version:
            return config.model_version, Route(ROLE_PINNED, None, _others(config.shadow_versions, config.model_version))
        plan = await self._active_rollout(name) if config.follow_rollouts else None
        if plan is not None:
            version, role = plan.version_for(greenhouse_id)
            return version, Route(role, plan.rollout_id, _others([plan.shadow_version_for(greenhouse_id), *config.shadow_versions], version))
        version = await self._alias_version(name)
        return version, Route(ROLE_CHAMPION, None, _others(config.shadow_versions, version))

    async def _loaded(self, ref: ModelRef) -> tuple[ModelForecaster, FeatureParams]:
        """The forecaster of ``ref`` (asked once what it needs; loaded by the Forecaster)."""
        model_id = f"{ref.name}/{ref.version}"
        known = self._forecasters.get(model_id)
        if known is None:
            handle = self._handle.options(multiplexed_model_id=model_id)
            info = await handle.describe.remote()
            coalescer = ForecastCoalescer(handle)
            params = feature_params_of(info)
            predict = coalescer.predict if self._on_forecast is None else timed(coalescer.predict, self._on_forecast, time.perf_counter)
            forecaster = ModelForecaster(ref, tuple(info["feature_columns"]), tuple(info["horizons_min"]), tuple(info["output_keys"]), predict, float(params.step_s))
            known = self._forecasters[model_id] = (forecaster, params)
        return known

    async def _active_rollout(self, name: str) -> Any:
        """The model's active rollout, read again every ``rollout.refresh_s`` (the last one read
        while the store does not answer)."""
        cached = self._plans.get(name)
        if cached is not None and time.monotonic() - cached[1] < self.settings.rollout.refresh_s:
            return cached[0]
        try:
            if self._rollouts is None:
                from app.control.rollout_store import RolloutStore

                self._rollouts = RolloutStore.from_settings(self.settings)
            plan = await asyncio.to_thread(self._rollouts.active, name)
        except Exception as exc:
            log.warning("could not read the rollout of %s: %s", name, redact(str(exc)))
            plan = cached[0] if cached else None
        if cached is not None and cached[0] is not None and plan is None:
            self._resolved.pop(name, None)  # the rollout ended (maybe promoted): resolve the alias now
        self._plans[name] = (plan, time.monotonic())
        return plan

    async def _alias_version(self, name: str) -> str:
        cached = self._resolved.get(name)
        if cached and time.monotonic() - cached[1] < self.config.alias_refresh_s:
            return cached[0]
        from app.tracking import resolve_alias

        alias = self.config.model_alias or self.settings.control.model_alias
        version = await asyncio.to_thread(resolve_alias, self.settings.tracking_url, name, alias)
        if version is None:
            raise LookupError(f"model {name!r} has no alias {alias!r}")
        self._resolved[name] = (str(version), time.monotonic())
        return str(version)


def _others(versions: list[str | None], serving: str) -> tuple[str, ...]:
    """``versions`` without ``serving`` and repeats, in order."""
    return tuple(v for v in dict.fromkeys(versions) if v and v != serving)
