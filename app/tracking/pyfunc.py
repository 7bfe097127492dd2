"""The pyfunc wrapper around a forecast model: MLflow's view of a model directory.

Tracking does not know the model class: whoever logs a model passes its loader (a callable from a
saved model directory to the model, e.g. ``app.train.model.load_saved_model``), which is pickled
by reference with the wrapper, so loading gives that model back without ``app.tracking``
importing it. The model also carries the project's ``app`` package as code, so
``mlflow.pyfunc.load_model`` works wherever mlflow and xgboost are installed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import mlflow.pyfunc
import pandas as pd

# Models logged before the loader travelled with the wrapper pickled a bare ForecastPyfunc (no
# state): their loader was this one. Named, not imported, so tracking has no import of train.
LEGACY_LOADER = ("app.train.model", "ForecastModel")


def _legacy_load(directory: str) -> Any:
    module, cls = LEGACY_LOADER
    return getattr(importlib.import_module(module), cls).load(directory)


class ForecastPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: ``load_context`` loads the model with the loader given at logging time;
    ``predict`` is the model's ``predict`` (DataFrame in, forecast DataFrame out)."""

    load: Callable[[str], Any] | None = None  # absent from the pickles of older models

    def __init__(self, load: Callable[[str], Any] | None = None) -> None:
        self.load = load

    def load_context(self, context: Any) -> None:
        """Load the model from the ``model_dir`` artifact."""
        load = self.load or _legacy_load
        self.model = load(context.artifacts["model_dir"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """The model's forecasts for ``model_input``."""
        return self.model.predict(model_input)
