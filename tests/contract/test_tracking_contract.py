"""The tracking contract: local sqlite store and MLflow tracking server behave the same."""

from __future__ import annotations

import uuid

import pytest

from app.tracking import Tracking
from tests.engines import engine_url


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
