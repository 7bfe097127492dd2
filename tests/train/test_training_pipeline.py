"""The learning path through Ray on twin data: sink -> preprocess -> Ray Train -> MLflow -> promote."""

from __future__ import annotations

import contextlib

import numpy as np
import orjson
import pandas as pd
import pytest

from app.config import Settings
from app.contracts.vocabulary import forecast_key, plan_columns
from app.train.model import fill_plans
from tests.helpers.lake import seed_two_greenhouses

DAYS = 4


FINAL_EVALUATION = "final evaluation on the untouched test window"
READS: list[tuple[str, str]] = []
"""(the training's progress message when it happened, a path read) for every read of the lake
during the module's training run: the test window must not be among them before the final
evaluation."""
DRIVER_READS: list[str] = []
"""Paths the training run's driver read into memory itself (``Lake.read_table``), not through Ray Data."""


@pytest.fixture(scope="module")
def trained(ray_local, tmp_path_factory):
    from app.preprocess import PreprocessParams, run_preprocess
    from app.train.pipeline import TrainJobParams, run_training
    from app.train.trainer import BoosterParams

    settings = Settings(data_dir=tmp_path_factory.mktemp("learn"))
    seed_two_greenhouses(settings, DAYS)
    info = run_preprocess(settings, PreprocessParams(horizons_min=(15, 60)))
    phase = ["start"]
    with _recording_reads(phase):
        result = run_training(settings, TrainJobParams(booster=BoosterParams(num_boost_round=200)), tags={"test": "pipeline"}, on_progress=lambda msg: phase.__setitem__(0, msg))
    return settings, info, result


@contextlib.contextmanager
def _recording_reads(phase: list[str]):
    """Record every path the lake reads or lists, and every path Ray Data reads, with the phase."""
    import ray.data

    from app.lake import Lake

    def recorded(original, path_of):
        def wrapper(*args, **kwargs):
            for path in path_of(*args, **kwargs):
                READS.append((phase[0], str(path)))
            return original(*args, **kwargs)

        return wrapper

    def read_table(self, paths, *args, **kwargs):
        paths = list(paths)
        DRIVER_READS.extend(str(p) for p in paths)
        return original_read_table(self, paths, *args, **kwargs)

    original_read_table = Lake.read_table
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Lake, "read_table", recorded(read_table, lambda self, paths, *a, **k: list(paths)))
        patch.setattr(Lake, "list_files", recorded(Lake.list_files, lambda self, prefix, *a, **k: [prefix]))
        patch.setattr(ray.data, "read_parquet", recorded(ray.data.read_parquet, lambda paths, *a, **k: [paths] if isinstance(paths, str) else list(paths)))
        yield


def test_the_test_window_is_read_only_by_the_final_evaluation(trained):
    """Fitting, early stopping and the interval calibration never see the test window; the final
    evaluation does (so this test would notice a read before it)."""
    test_reads = [(when, path) for when, path in READS if "split=test" in path]
    assert test_reads, "the final evaluation read the test window"
    assert {when for when, _ in test_reads} == {FINAL_EVALUATION}, test_reads
    phases = [when for when, _ in READS]
    assert any("training" in p for p in phases) and phases.index(FINAL_EVALUATION) > max(i for i, p in enumerate(phases) if "training" in p or "calibrating" in p)


def test_the_driver_never_reads_the_feature_set_into_memory(trained):
    """Training, calibration and evaluation read every window through Ray Data (workers and
    inference actors); the driver holds forecast tables, never the windows."""
    assert [p for p in DRIVER_READS if "/features/" in p] == []
    assert any("split=train" in path for _, path in READS)  # read, by Ray Data


def test_the_windows_follow_each_other_without_overlap(trained):
    from app.preprocess import load_feature_set, load_test_window

    settings, info, _ = trained
    train, validation, doc = load_feature_set(settings, info.feature_set_id)
    test = load_test_window(settings, info.feature_set_id)
    horizon = pd.Timedelta(minutes=max(doc["params"]["horizons_min"]))
    assert train["ts"].max() + horizon < validation["ts"].min()  # no train target inside validation
    assert validation["ts"].max() + horizon < test["ts"].min()
    assert str(test["ts"].min()) >= doc["test_start"][:19].replace("T", " ")
    assert len(test) == info.rows_test > 0


def test_ray_reads_never_hand_out_the_test_window(trained):
    from app.preprocess import read_feature_set_ray

    settings, info, _ = trained
    with pytest.raises(ValueError, match="load_test_window"):
        read_feature_set_ray(settings, info.feature_set_id, "test")


def test_forecast_beats_persistence_by_30_percent_at_15_min(trained):
    _, info, result = trained
    assert result.feature_set_id == info.feature_set_id
    skill = result.metrics["skill_air_temp_c_15min"]
    assert skill >= 0.30, result.metrics
    assert result.metrics["rmse_air_temp_c_15min"] < result.metrics["persistence_rmse_air_temp_c_15min"]
    assert result.validation_rows > 0 and result.test_rows > 0 and result.train_rows > result.validation_rows
    # the honest figure has its interval, and the validation figure sits next to it
    assert result.metrics["skill_air_temp_c_15min_ci_low"] < skill < result.metrics["skill_air_temp_c_15min_ci_high"]
    assert "validation_skill_air_temp_c_15min" in result.metrics and result.metrics["rows"] == result.test_rows
    for gh in info.greenhouses:
        assert f"skill_air_temp_c_15min_{gh}_ci_low" in result.metrics
    assert 0.7 <= result.metrics["coverage_air_temp_c_15min"] <= 1.0  # the nominal 90 % interval, on a short window


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
    assert [a.path for a in tracking.client.list_artifacts(result.run_id, "evaluation")] == ["evaluation/test_window_skill.json"]
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


def test_promotion_needs_better_skill_on_the_same_test_window(trained):
    from app.tracking import Tracking
    from app.train.pipeline import TrainJobParams, run_training
    from app.train.promotion import run_promotion
    from app.train.trainer import BoosterParams

    settings, info, result = trained
    first = run_promotion(settings)  # the model name from settings
    assert first.promoted and first.champion_version_after == result.model_version
    weak = run_training(settings, TrainJobParams(feature_set_id=info.feature_set_id, booster=BoosterParams(num_boost_round=2, max_depth=1, eta=0.05)))
    decision = run_promotion(settings, result.model_name)
    assert not decision.promoted
    assert "does not clear" in decision.reason and decision.challenger_version == weak.model_version
    assert decision.challenger_skill < decision.champion_skill
    assert decision.difference_ci is not None and decision.difference_ci[0] < decision.difference_ci[1] < 0  # a real interval, all below 0
    assert Tracking(settings.tracking_url).version_by_alias(result.model_name, "champion") == result.model_version
    # both judged from batch predictions written to the lake, the same figures as predicting in process
    from app.lake import Lake
    from app.preprocess import load_test_window
    from app.train.bootstrap import skill_difference, skill_interval
    from app.train.evaluate import errors_of

    lake = Lake.from_url(settings.lake_url)
    for version in (result.model_version, weak.model_version):
        assert lake.list_files(f"predictions/{result.model_name}/{version}/{info.feature_set_id}/test")
    window = load_test_window(settings, info.feature_set_id)
    mine, theirs = (errors_of(_registered_model(settings, r), window, "air_temp_c_15min") for r in (weak, result))
    assert decision.challenger_skill == skill_interval(mine).value
    diff = skill_difference(mine, theirs)
    assert decision.difference_ci == (round(diff.low, 4), round(diff.high, 4))


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


def test_two_workers_fit_disjoint_shards_of_the_streamed_train_window(trained):
    """Ray Train with 2 workers: each fits its own shard of the train window (the shares add up to
    the window), and the model they fit together forecasts well."""
    from app.preprocess import read_feature_set_ray
    from app.preprocess.pipeline import feature_set_doc
    from app.train.batch_inference import StoredModel, forecast_window
    from app.train.evaluate import table_metrics
    from app.train.trainer import BoosterParams, fit_forecast_model

    settings, info, _ = trained
    doc = feature_set_doc(settings, info.feature_set_id)
    validation = read_feature_set_ray(settings, info.feature_set_id, "validation")
    run = fit_forecast_model(
        read_feature_set_ray(settings, info.feature_set_id, "train"),
        validation,
        list(doc["feature_columns"]),
        [15, 60],
        BoosterParams(num_boost_round=40, eta=0.2),
        num_workers=2,
        cpus_per_worker=0.5,
        storage_path=settings.data_dir / "ray_results",
        run_name="two-workers",
        feature_set_id=info.feature_set_id,
        edges=False,
    )
    assert len(run.train_rows_by_rank) == 2 and min(run.train_rows_by_rank) > 0, run.train_rows_by_rank
    assert run.train_rows == info.rows_train  # disjoint shards covering the window
    metrics = table_metrics(forecast_window(validation, StoredModel.put(run.model)), run.model.output_keys())
    assert metrics["rows"] == info.rows_validation
    assert metrics["skill_air_temp_c_15min"] > 0.3, metrics


def test_batch_inference_scores_exactly_as_predicting_in_process(trained):
    """The same registered model over the same test rows: Ray Data map_batches (what training's
    evaluation and promotion use) and model.predict in this process give the same figures, to
    the last bit; and they are the figures training logged."""
    from app.preprocess import load_test_window
    from app.preprocess.pipeline import feature_set_doc
    from app.train.batch_inference import RegisteredModel, forecast_window, window_dataset
    from app.train.evaluate import evaluate, interval_metrics, skill_intervals, table_metrics, table_skill_intervals

    settings, info, result = trained
    model = _registered_model(settings, result)
    window = load_test_window(settings, info.feature_set_id)
    direct = evaluate(model, window) | interval_metrics(skill_intervals(model, window))
    source = RegisteredModel(settings.tracking_url, result.model_name, result.model_version, str(settings.model_cache_path))
    table = forecast_window(window_dataset(settings, feature_set_doc(settings, info.feature_set_id), "test"), source)
    batch = table_metrics(table, model.output_keys()) | interval_metrics(table_skill_intervals(table, model.output_keys()))
    assert batch == direct
    assert {k: v for k, v in result.metrics.items() if not k.startswith("validation_")} == direct
    # the validation figures too (interval calibration on batch forecasts, then widened edges)
    from app.preprocess import load_feature_set

    _, validation, _ = load_feature_set(settings, info.feature_set_id)
    assert {f"validation_{k}": v for k, v in evaluate(model, validation).items()} == {k: v for k, v in result.metrics.items() if k.startswith("validation_")}


def test_batch_predict_job_writes_predictions_to_the_lake(trained, monkeypatch, capsys):
    from app.entrypoints.batch_predict import main
    from app.lake import Lake
    from app.metadata import open_metadata
    from app.train.batch_predict import BATCH_PREDICTIONS

    settings, info, result = trained
    with pytest.raises(SystemExit) as help_exit:
        main(["--help"])
    assert help_exit.value.code == 0 and "predictions/<model>/<version>/<feature_set_id>/<window>/" in " ".join(capsys.readouterr().out.split())
    monkeypatch.setenv("GH_DATA_DIR", str(settings.data_dir))
    args = ["--model-name", result.model_name, "--version", result.model_version, "--feature-set-id", info.feature_set_id, "--window", "test"]
    assert main(args) == 0
    summary = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["job"] == "batch_predict" and summary["ok"] and summary["rows"] == info.rows_test
    relative = f"predictions/{result.model_name}/{result.model_version}/{info.feature_set_id}/test"
    assert summary["relative_path"] == relative and summary["files"] >= 1
    assert summary["metrics"]["skill_air_temp_c_15min"] == pytest.approx(result.metrics["skill_air_temp_c_15min"], abs=1e-4)
    lake = Lake.from_url(settings.lake_url)
    written = lake.read_table(lake.list_files(relative)).to_pandas()
    assert len(written) == info.rows_test
    assert {"greenhouse_id", "ts", "air_temp_c", "target_air_temp_c_15min", "air_temp_c_15min", "air_temp_c_15min_low", "air_temp_c_15min_high"} <= set(written.columns)
    doc = open_metadata(settings.metadata_url).collection(BATCH_PREDICTIONS).find_one({"_id": relative})
    assert doc["model_version"] == result.model_version and doc["rows"] == info.rows_test and doc["files"] == summary["files"]


def test_a_time_range_keeps_only_its_rows_and_gets_its_own_directory():
    """``--start``/``--end`` (what the inference actors do with them, without Ray)."""
    from datetime import datetime, timezone

    from app.train.batch_inference import Forecasting
    from app.train.batch_predict import predictions_path, window_label
    from tests.train.test_model_unit import fit_local, frame

    rows = frame(120)
    model = fit_local(rows)

    class Source:
        def load(self):
            return model

    start, end = rows["ts"].iloc[10], rows["ts"].iloc[40]
    ranged = Forecasting(Source(), start.isoformat(), end.isoformat())(rows)
    assert ranged["ts"].tolist() == rows["ts"].iloc[10:40].tolist()
    np.testing.assert_array_equal(ranged["air_temp_c_15min"].to_numpy(), model.predict(rows.iloc[10:40])["air_temp_c_15min"].to_numpy())
    assert len(Forecasting(Source(), None, start.tz_localize(None).isoformat())(rows)) == 10  # naive: UTC
    label = window_label("test", datetime(2026, 6, 1, 2, tzinfo=timezone.utc), datetime(2026, 6, 1, 5))
    assert predictions_path("m", "3", "fs-1", label) == "predictions/m/3/fs-1/test-20260601T020000-20260601T050000"
