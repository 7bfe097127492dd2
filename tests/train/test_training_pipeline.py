"""The learning path through Ray on twin data: sink -> preprocess -> Ray Train -> MLflow -> promote."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from app.config import Settings
from app.contracts.vocabulary import forecast_key, plan_columns
from app.train.model import fill_plans
from tests.helpers.lake import seed_two_greenhouses

DAYS = 4


@pytest.fixture(scope="module")
def trained(ray_local, tmp_path_factory):
    from app.preprocess import PreprocessParams, run_preprocess
    from app.train.pipeline import TrainJobParams, run_training
    from app.train.trainer import BoosterParams

    settings = Settings(data_dir=tmp_path_factory.mktemp("learn"))
    seed_two_greenhouses(settings, DAYS)
    info = run_preprocess(settings, PreprocessParams(horizons_min=(15, 60)))
    result = run_training(settings, TrainJobParams(booster=BoosterParams(num_boost_round=200)), tags={"test": "pipeline"})
    return settings, info, result


def test_forecast_beats_persistence_by_30_percent_at_15_min(trained):
    _, info, result = trained
    assert result.feature_set_id == info.feature_set_id
    skill = result.metrics["skill_air_temp_c_15min"]
    assert skill >= 0.30, result.metrics
    assert result.metrics["rmse_air_temp_c_15min"] < result.metrics["persistence_rmse_air_temp_c_15min"]
    assert result.validation_rows > 0 and result.train_rows > result.validation_rows


def test_mlflow_has_the_run_metrics_plot_and_registered_challenger(trained):
    from app.tracking import Tracking

    settings, info, result = trained
    tracking = Tracking(settings.tracking_url)
    run = tracking.get_run(result.run_id)
    assert run["status"] == "FINISHED"
    assert run["params"]["feature_set_id"] == info.feature_set_id
    for name in ("rmse_air_temp_c_15min", "mae_air_temp_c_15min", "persistence_rmse_air_temp_c_15min", "skill_air_temp_c_15min", "rmse_rh_pct_60min"):
        assert name in run["metrics"], name
    artifacts = [a.path for a in tracking.client.list_artifacts(result.run_id, "plots")]
    assert artifacts == ["plots/forecast_vs_actual_15min.png"]
    assert tracking.version_by_alias(result.model_name, "challenger") == result.model_version


def test_registered_pyfunc_loads_by_alias_and_predicts(trained):
    from app.preprocess import load_feature_set
    from app.tracking import load_forecast_model, load_pyfunc
    from app.train.model import ForecastModel

    settings, info, result = trained
    assert result.model_name == settings.control.model_name  # the default comes from settings
    model = load_forecast_model(settings.tracking_url, f"models:/{result.model_name}@challenger")
    assert isinstance(model, ForecastModel) and model.feature_set_id == info.feature_set_id
    pyfunc = load_pyfunc(settings.tracking_url, f"models:/{result.model_name}@challenger")
    _, validation, _ = load_feature_set(settings, info.feature_set_id)
    rows = validation.head(20)
    out = pyfunc.predict(rows[model.input_columns()])
    assert list(out.columns) == ["air_temp_c_15min", "air_temp_c_60min", "rh_pct_15min", "rh_pct_60min"]
    assert np.isfinite(out.to_numpy()).all()
    np.testing.assert_allclose(out.to_numpy(), model.predict(rows).to_numpy())
    assert pyfunc.metadata.signature is not None


def _registered_model(settings, result):
    from app.tracking import load_forecast_model

    return load_forecast_model(settings.tracking_url, f"models:/{result.model_name}/{result.model_version}")


def test_behaviour_more_heating_never_lowers_the_forecast(trained):
    from app.preprocess import load_feature_set

    settings, info, result = trained
    model = _registered_model(settings, result)
    _, validation, _ = load_feature_set(settings, info.feature_set_id)
    rows = validation.sample(200, random_state=0).drop(columns=plan_columns(model.horizons_min))
    for h in model.horizons_min:
        forecasts = [model.predict(fill_plans(rows, model.horizons_min, {"heat_pct": pct}))[forecast_key("air_temp_c", h)].to_numpy() for pct in (0, 20, 50, 80, 100)]
        for lower, higher in zip(forecasts, forecasts[1:], strict=False):
            assert (higher >= lower - 1e-6).all()
    # and the effect is real, not just flat
    hot = model.predict(fill_plans(rows, model.horizons_min, {"heat_pct": 100}))["air_temp_c_60min"]
    cold = model.predict(fill_plans(rows, model.horizons_min, {"heat_pct": 0}))["air_temp_c_60min"]
    assert (hot - cold).mean() > 0.2


def test_behaviour_opening_vents_with_colder_outside_never_raises_it(trained):
    from app.preprocess import load_feature_set

    settings, info, result = trained
    model = _registered_model(settings, result)
    _, validation, _ = load_feature_set(settings, info.feature_set_id)
    colder = validation[validation["outside_temp_c"] < validation["air_temp_c"] - 1.0]
    rows = colder.sample(min(200, len(colder)), random_state=0).drop(columns=plan_columns(model.horizons_min))
    assert len(rows) >= 50
    for h in model.horizons_min:
        forecasts = [model.predict(fill_plans(rows, model.horizons_min, {"vent_pct": pct}))[forecast_key("air_temp_c", h)].to_numpy() for pct in (0, 10, 30, 60, 100)]
        for closed, opened in zip(forecasts, forecasts[1:], strict=False):
            assert (opened <= closed + 1e-6).all()


def test_promotion_needs_better_skill_on_the_same_window(trained):
    from app.tracking import Tracking
    from app.train.pipeline import TrainJobParams, run_promotion, run_training
    from app.train.trainer import BoosterParams

    settings, info, result = trained
    first = run_promotion(settings)  # the model name from settings
    assert first.promoted and first.champion_version_after == result.model_version
    weak = run_training(settings, TrainJobParams(feature_set_id=info.feature_set_id, booster=BoosterParams(num_boost_round=2, max_depth=1, eta=0.05)))
    decision = run_promotion(settings, result.model_name)
    assert not decision.promoted
    assert "does not beat" in decision.reason and decision.challenger_version == weak.model_version
    assert decision.challenger_skill < decision.champion_skill
    assert Tracking(settings.tracking_url).version_by_alias(result.model_name, "champion") == result.model_version


def test_tune_job_searches_with_early_stopping_and_registers_the_best(trained):
    """``python -m jobs.tune`` as a process on its own local Ray: ASHA stops weak trials early."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from app.tracking import Tracking

    settings, info, result = trained
    repo = Path(__file__).resolve().parents[2]
    # no RAY_ADDRESS: the job starts a fresh local Ray, never joins a head running on this machine
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"GH_DATA_DIR": str(settings.data_dir)}
    args = ["--feature-set-id", info.feature_set_id, "--num-samples", "4", "--max-rounds", "60", "--grace-rounds", "10"]
    proc = subprocess.run([sys.executable, "-m", "jobs.tune", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = orjson.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["job"] == "tune" and summary["ok"] is True
    search = summary["search"]
    assert len(search["trials"]) == 4
    assert search["stopped_early"] >= 1, search  # ASHA cut at least one trial before max rounds
    assert min(t["val_rmse"] for t in search["trials"]) == pytest.approx(search["best_val_rmse"], abs=1e-4)
    assert summary["metrics"]["skill_air_temp_c_15min"] >= 0.30
    tracking = Tracking(settings.tracking_url)
    assert tracking.version_by_alias(summary["model_name"], "challenger") == summary["model_version"]
    assert tracking.get_run(summary["run_id"])["tags"]["tuned"] == "true"
