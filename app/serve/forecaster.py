"""The Forecaster deployment: registered forecast models, multiplexed, predicting in batches.

Models come from the tracking server through Serve model multiplexing (the multiplexed id is
``<name>/<version>``, so per-greenhouse models share the replicas); ``@serve.batch`` turns
concurrent requests for the same model into one XGBoost call per booster. Requests carry numpy
matrices with named columns, not DataFrames: the hot path has no pandas.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

import numpy as np
import pandas as pd
from ray import serve

from app.contracts.vocabulary import forecast_key
from app.log_format import setup_replica_logging
from app.serve.args import AppArgs
from app.serve.gcpause import freeze_startup_heap
from app.serve.tuning import ACCESS_LOG_OFF

log = logging.getLogger(__name__)

XGBOOST_THREADS = 1  # per prediction: batches are small, and the replica shares the CPUs


def _output_keys(model: Any) -> list[str]:
    """The forecasts, then the interval edges of a model that has them (``<key>_low``/``_high``)."""
    if hasattr(model, "output_keys"):
        return list(model.output_keys()) + (list(model.interval_keys()) if hasattr(model, "interval_keys") else [])
    return [forecast_key(v, h) for v in model.variables for h in model.horizons_min]


def _predict_matrix(model: Any, matrix: np.ndarray, columns: list[str]) -> np.ndarray:
    """Forecasts (and interval edges) in ``_output_keys(model)`` order; models logged before
    ``predict_arrays`` existed (the pyfunc carries its own copy of the code) take the DataFrame
    path."""
    if hasattr(model, "interval_keys"):
        return model.predict_arrays(matrix, columns, intervals=True)
    if hasattr(model, "predict_arrays"):
        return model.predict_arrays(matrix, columns)
    return model.predict(pd.DataFrame(matrix, columns=columns))[_output_keys(model)].to_numpy(dtype=np.float64)


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=128, health_check_period_s=10, logging_config=ACCESS_LOG_OFF)
class Forecaster:
    """Registered forecast models, multiplexed by ``<name>/<version>``, predicting in batches."""

    def __init__(self, args: AppArgs) -> None:
        from app.tracking import warm_imports

        warm_imports()  # at start, not on the first model load
        settings = args.load()
        setup_replica_logging(settings)  # JSON lines with the replica's ids (Serve configures only ray.serve's logger)
        self.tracking_url = settings.tracking_url
        self.model_cache_dir = settings.model_cache_path  # versions this node fetched before load from disk
        freeze_startup_heap()

    @serve.multiplexed(max_num_models_per_replica=4)
    async def get_model(self, model_id: str):
        from app.tracking import load_forecast_model

        started = time.monotonic()
        model = await asyncio.to_thread(load_forecast_model, self.tracking_url, f"models:/{model_id}", cache_dir=self.model_cache_dir)
        for booster in model.boosters.values():
            booster.set_param({"nthread": XGBOOST_THREADS})
        log.info("loaded model %s in %.1f s", model_id, time.monotonic() - started)
        freeze_startup_heap()  # the model lives as long as the replica: keep it out of collections
        return model

    async def describe(self) -> dict[str, Any]:
        """Columns, horizons and output keys of the request's model (loads it if needed)."""
        model = await self.get_model(serve.get_multiplexed_model_id())
        return {"feature_columns": list(model.feature_columns), "horizons_min": list(model.horizons_min), "feature_params": dict(model.feature_params), "output_keys": _output_keys(model)}

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
                answers[i] = out[start : start + len(m)]
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
