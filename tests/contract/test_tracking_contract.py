"""The tracking contract: local sqlite store and MLflow tracking server behave the same."""

from __future__ import annotations

import ast
import os
import sys
import uuid
from pathlib import Path

import pytest

from app.tracking import Tracking
from tests.helpers.engines import engine_url


@pytest.fixture(params=["sqlite", "server"])
def tracking(request, tmp_path) -> Tracking:
    if request.param == "sqlite":
        return Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return Tracking(engine_url("mlflow"))


def test_runs_params_metrics_and_artifacts(tracking, tmp_path):
    experiment = f"contract-{uuid.uuid4().hex[:8]}"
    with tracking.run(experiment, "r1", tags={"stage": "test"}) as run_id:
        tracking.log_params(run_id, {"max_depth": 6, "horizon_min": 15})
        tracking.log_metrics(run_id, {"rmse_air_temp_c": 0.42, "skill": 0.55})
        note = tmp_path / "note.txt"
        note.write_text("hello")
        tracking.log_artifact(run_id, note, "reports")
    run = tracking.get_run(run_id)
    assert run["status"] == "FINISHED"
    assert run["params"] == {"max_depth": "6", "horizon_min": "15"}
    assert run["metrics"]["rmse_air_temp_c"] == pytest.approx(0.42)
    assert run["tags"]["stage"] == "test"
    got = tracking.download_artifact(run_id, "reports/note.txt", tmp_path / "dl")
    assert got.read_text() == "hello"
    assert tracking.ensure_experiment(experiment) == tracking.ensure_experiment(experiment)


def test_failed_run_is_marked_failed(tracking):
    with pytest.raises(RuntimeError):
        with tracking.run(f"contract-{uuid.uuid4().hex[:8]}", "boom") as run_id:
            raise RuntimeError("training diverged")
    assert tracking.get_run(run_id)["status"] == "FAILED"


def test_registry_versions_and_aliases(tracking, tmp_path):
    name = f"gh-forecaster-{uuid.uuid4().hex[:8]}"
    versions = []
    for i in range(2):
        with tracking.run("registry-contract", f"v{i}") as run_id:
            model = tmp_path / f"m{i}.txt"
            model.write_text(str(i))
            tracking.log_artifact(run_id, model, "model")
        versions.append(tracking.register(name, run_id, "model"))
    assert versions == ["1", "2"]
    assert tracking.version_by_alias(name, "champion") is None
    tracking.set_alias(name, "champion", "1")
    tracking.set_alias(name, "challenger", "2")
    assert tracking.version_by_alias(name, "champion") == "1"
    tracking.set_alias(name, "champion", "2")
    assert tracking.version_by_alias(name, "champion") == "2"
    assert tracking.version_by_alias("no-such-model", "champion") is None


class ScaleModel:
    """A stand-in forecast model: tracking packages any model given a loader, not only train's."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def predict(self, frame):
        return frame * self.factor


def load_scale_model(directory: str) -> ScaleModel:
    """The loader logged with the pyfunc (module level: pickled by reference)."""
    return ScaleModel(float((Path(directory) / "factor.txt").read_text()))


def test_forecast_model_logs_registers_and_loads_back_by_alias_and_version(tracking, tmp_path):
    import mlflow
    import pandas as pd

    from app.tracking import load_forecast_model, load_pyfunc, log_forecast_model, resolve_alias, warm_imports

    warm_imports()
    global_uri, env_before = mlflow.get_tracking_uri(), {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    name = f"gh-packaging-{uuid.uuid4().hex[:8]}"
    model_dir = tmp_path / "scale"
    model_dir.mkdir()
    (model_dir / "factor.txt").write_text("2.5")
    example = pd.DataFrame({"air_temp_c": [20.0, 21.0]})
    with tracking.run("packaging-contract", "log") as run_id:
        version = log_forecast_model(tracking.url, run_id, model_dir, load=load_scale_model, input_example=example, output_example=example * 2.5, registered_name=name)
    assert version == "1" and resolve_alias(tracking.url, name, "champion") is None
    tracking.set_alias(name, "champion", version)
    assert resolve_alias(tracking.url, name, "champion") == "1"
    assert resolve_alias(tracking.url, "no-such-model", "champion") is None
    for uri in (f"models:/{name}@champion", f"models:/{name}/1"):
        model = load_forecast_model(tracking.url, uri)
        assert isinstance(model, ScaleModel) and model.factor == 2.5
    pyfunc = load_pyfunc(tracking.url, f"models:/{name}@champion")
    assert pyfunc.predict(example)["air_temp_c"].tolist() == [50.0, 52.5]
    assert pyfunc.metadata.signature is not None
    # explicit URIs only: mlflow's global state is as it was
    assert mlflow.get_tracking_uri() == global_uri and mlflow.get_registry_uri() in (global_uri, env_before.get("MLFLOW_REGISTRY_URI"))
    assert {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_") and k != "MLFLOW_DISABLE_TELEMETRY"} == {k: v for k, v in env_before.items() if k != "MLFLOW_DISABLE_TELEMETRY"}
    assert not any(p.endswith(os.path.join("", "code")) and "gh-model-" in p for p in sys.path)


def imported_modules(path: Path) -> set[str]:
    """Every module a Python file imports (at any depth in the file)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_only_tracking_imports_mlflow_and_tracking_imports_nothing_above_it():
    app_dir = Path(__file__).resolve().parents[2] / "app"
    for path in app_dir.rglob("*.py"):
        modules = imported_modules(path)
        if path.is_relative_to(app_dir / "tracking"):
            assert not {m for m in modules if m.startswith(("app.train", "app.serve", "app.control", "app.cli", "app.preprocess"))}, path
        else:
            assert not {m for m in modules if m == "mlflow" or m.startswith("mlflow.")}, path
