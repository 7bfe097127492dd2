"""The forecast model as an MLflow pyfunc: logged with signature and input example, loaded by alias.

The pyfunc carries the boosters (as an artifact directory) and the project's ``app`` package (as
code), so ``mlflow.pyfunc.load_model("models:/<name>@champion")`` works wherever mlflow and
xgboost are installed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd


class ForecastPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper around :class:`app.train.model.ForecastModel`."""

    def load_context(self, context) -> None:
        from app.train.model import ForecastModel

        self.model = ForecastModel.load(context.artifacts["model_dir"])

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return self.model.predict(model_input)


def log_and_register(
    tracking_url: str, run_id: str, model_dir: str | Path, input_example: pd.DataFrame, output_example: pd.DataFrame, registered_name: str
) -> str:
    """Log the model to ``run_id`` as a pyfunc named ``model`` and register it; return the version."""
    import mlflow
    from mlflow.models import infer_signature

    import app

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    mlflow.set_tracking_uri(tracking_url)
    mlflow.set_registry_uri(tracking_url)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=ForecastPyfunc(),
            artifacts={"model_dir": str(model_dir)},
            code_paths=[str(Path(app.__file__).parent)],
            signature=infer_signature(input_example, output_example),
            input_example=input_example,
            pip_requirements=["xgboost-cpu>=3,<4", "pandas", "numpy", "pydantic>=2"],
            registered_model_name=registered_name,
        )
    return str(info.registered_model_version)


def load_model(tracking_url: str, model_uri: str):
    """Load a registered pyfunc, e.g. ``models:/greenhouse-forecaster@champion``."""
    import mlflow

    mlflow.set_tracking_uri(tracking_url)
    mlflow.set_registry_uri(tracking_url)
    return mlflow.pyfunc.load_model(model_uri)
