"""Which registered model version serves each greenhouse, as a forecaster the controller can call.

The control app's ``user_config`` (:class:`ModelConfig`) names a model and an alias or a fixed
version, optionally a model per greenhouse; :class:`ServingModels` resolves the alias (again every
``alias_refresh_s``, so a promotion is picked up), asks the Forecaster deployment what the version
needs (columns, horizons, feature parameters) once, and hands out a
:class:`~app.control.core.ModelForecaster` whose predictions go through a
:class:`~app.serve.coalescer.ForecastCoalescer`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.config import Settings
from app.contracts.command import ModelRef
from app.control.core import ModelForecaster
from app.preprocess.features import FeatureParams
from app.security.redact import redact
from app.serve.coalescer import ForecastCoalescer


class ModelConfig(BaseModel):
    """The ``user_config`` of the control app: which model versions serve which greenhouse."""

    model_config = ConfigDict(extra="forbid")

    model_name: str | None = Field(default=None, description="registered model (default: settings.control.model_name)")
    model_alias: str | None = Field(default=None, description="alias to resolve (default: settings.control.model_alias)")
    model_version: str | None = Field(default=None, description="a fixed version; wins over the alias")
    greenhouse_models: dict[str, str] = Field(default_factory=dict, description="greenhouse id -> registered model name (same alias/version)")
    alias_refresh_s: float = Field(default=60.0, ge=0, description="re-resolve the alias this often, so a promotion is picked up")
    dry_run: bool | None = Field(default=None, description="override settings.control.dry_run")


def feature_params_of(info: dict[str, Any] | None) -> FeatureParams:
    """The feature parameters a model was trained with (the defaults when nothing is known)."""
    fp = dict((info or {}).get("feature_params") or {})
    if info:
        fp["horizons_min"] = tuple(info["horizons_min"])
    return FeatureParams(**fp)


class ServingModels:
    """Model resolution for one control replica (``forecaster`` is the Forecaster's handle)."""

    def __init__(self, settings: Settings, forecaster: Any) -> None:
        self.settings = settings
        self.config = ModelConfig()
        self._handle = forecaster
        self._resolved: dict[str, tuple[str, float]] = {}  # model name -> (version, resolved at)
        self._forecasters: dict[str, tuple[ModelForecaster, FeatureParams]] = {}  # model id -> ...
        self.error: str | None = None
        """Why the model could not be used last time (``None`` once it could)."""

    def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        """Follow a new ``user_config``; aliases are resolved again on the next request."""
        self.config = ModelConfig.model_validate(user_config or {})
        self._resolved.clear()

    def resolved(self) -> dict[str, str]:
        """Model name -> the version it resolved to last."""
        return {name: version for name, (version, _) in self._resolved.items()}

    async def serving(self, greenhouse_id: str) -> tuple[ModelForecaster | None, FeatureParams]:
        """:meth:`forecaster_for`, or ``None`` (and the defaults) with the reason in :attr:`error`."""
        try:
            forecaster, params = await self.forecaster_for(greenhouse_id)
        except Exception as exc:
            self.error = redact(f"model unavailable: {type(exc).__name__}: {exc}")
            return None, feature_params_of(None)
        self.error = None
        return forecaster, params

    def note(self, forecaster: ModelForecaster | None, model_error: str | None) -> None:
        """Remember how a decision with ``forecaster`` went (its predictions may have failed)."""
        if forecaster is not None:
            self.error = model_error

    async def forecaster_for(self, greenhouse_id: str) -> tuple[ModelForecaster, FeatureParams]:
        """The forecaster serving ``greenhouse_id`` and the feature parameters its model needs;
        raises when the model cannot be resolved or loaded."""
        ref = await self._model_ref(greenhouse_id)
        model_id = f"{ref.name}/{ref.version}"
        known = self._forecasters.get(model_id)
        if known is None:
            handle = self._handle.options(multiplexed_model_id=model_id)
            info = await handle.describe.remote()
            coalescer = ForecastCoalescer(handle)
            forecaster = ModelForecaster(ref, tuple(info["feature_columns"]), tuple(info["horizons_min"]), tuple(info["output_keys"]), coalescer.predict)
            known = self._forecasters[model_id] = (forecaster, feature_params_of(info))
        return known

    async def _model_ref(self, greenhouse_id: str) -> ModelRef:
        config = self.config
        name = config.greenhouse_models.get(greenhouse_id) or config.model_name or self.settings.control.model_name
        if config.model_version:
            return ModelRef(name=name, version=config.model_version)
        cached = self._resolved.get(name)
        if cached and time.monotonic() - cached[1] < config.alias_refresh_s:
            return ModelRef(name=name, version=cached[0])
        from app.tracking import resolve_alias

        alias = config.model_alias or self.settings.control.model_alias
        version = await asyncio.to_thread(resolve_alias, self.settings.tracking_url, name, alias)
        if version is None:
            raise LookupError(f"model {name!r} has no alias {alias!r}")
        self._resolved[name] = (str(version), time.monotonic())
        return ModelRef(name=name, version=str(version))
