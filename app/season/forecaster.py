"""The season trial's forecast model, fitted in-process, and the controller's view of it.

:func:`fit_forecaster` is the one place the trial fits a model (the training pipeline's own
in-process fit, :func:`app.train.fit.fit_local`: the physics prior, boosters stopped early on the
validation window, and calibrated interval edges). :func:`model_forecaster` wraps a model as the
controller sees a served one (:class:`~app.control.core.ModelForecaster`), predicting in this
process, with the interval edges among its outputs when the model has them: the MPC then takes
its margin from the model's uncertainty.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from app.contracts.command import ModelRef
from app.contracts.vocabulary import horizon_of
from app.control.core import ModelForecaster

if TYPE_CHECKING:
    import pandas as pd

    from app.preprocess.features import FeatureParams
    from app.train.model import ForecastModel


def fit_forecaster(train: pd.DataFrame, validation: pd.DataFrame, feature_columns: Sequence[str], horizons_min: Sequence[int], *, edges: bool = True) -> ForecastModel:
    """The model the training job would fit on these windows, fitted here (one XGBoost thread:
    Ray schedules the CPUs); ``edges`` adds the calibrated interval edges."""
    from app.train.fit import fit_local

    return fit_local(train, validation, list(feature_columns), [int(h) for h in horizons_min], edges=edges, nthread=1)


def model_feature_params(model: ForecastModel) -> FeatureParams:
    """The feature parameters ``model`` was trained with (what the MPC's feature rows must use);
    lists from a saved model's JSON become tuples."""
    from app.preprocess.features import FeatureParams

    stored: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in model.feature_params.items()}
    stored["horizons_min"] = tuple(int(h) for h in model.horizons_min)
    return FeatureParams(**stored)


def model_forecaster(model: ForecastModel, ref: ModelRef, *, intervals: bool = True) -> ModelForecaster:
    """``model`` as the controller's forecaster: its features, horizons and outputs (with
    ``intervals``, the edges the model has after its forecasts), predicting in this process and
    only the horizons asked for (as the Serve forecaster does)."""
    edges = list(model.interval_keys()) if intervals and hasattr(model, "interval_keys") else []
    keys = tuple(model.output_keys()) + tuple(edges)
    views: dict[tuple[int, ...], tuple[Any, np.ndarray]] = {}

    def view(horizons: tuple[int, ...]) -> tuple[Any, np.ndarray]:
        # the model restricted to the horizons asked, and where each asked key sits in its output
        known = views.get(horizons)
        if known is None:
            part = dataclasses.replace(model, horizons_min=list(horizons))
            names = list(part.output_keys()) + (list(part.interval_keys()) if edges else [])
            order = np.array([names.index(k) for k in keys if horizon_of(k) in horizons], dtype=np.intp)
            known = views[horizons] = (part, order)
        return known

    def predict(matrix: np.ndarray, columns: list[str], horizons: list[int] | None) -> np.ndarray:
        part, order = view(tuple(horizons) if horizons else tuple(model.horizons_min))
        out = part.predict_arrays(matrix, columns, intervals=True) if edges else part.predict_arrays(matrix, columns)
        return out[:, order]

    return ModelForecaster(ref, tuple(model.feature_columns), tuple(int(h) for h in model.horizons_min), keys, predict)
