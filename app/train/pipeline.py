"""Train, track and register: feature set -> Ray Train -> validation metrics -> MLflow run -> registry.

Used by ``jobs.train`` (fixed hyperparameters), ``jobs.tune`` (after the search) and the demo.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from app.config import Settings
from app.tracking import LINEAGE_TAG_PREFIX
from app.train.model import ForecastModel, load_saved_model
from app.train.trainer import BoosterParams, TrainRun

if TYPE_CHECKING:
    import pandas as pd


class TrainJobParams(BaseModel):
    """What to train on and where to record it."""

    feature_set_id: str | None = Field(default=None, description="default: the newest feature set")
    booster: BoosterParams = Field(default_factory=BoosterParams)
    num_workers: int = Field(default=1, ge=1, le=64, description="Ray Train workers (1 CPU each)")
    experiment: str = "greenhouse-forecast"
    model_name: str | None = Field(default=None, description="registered model; default: settings.control.model_name")
    alias: str = "challenger"
    shuffle_targets: bool = Field(
        default=False,
        description=(
            "train on the targets shuffled across rows, each row's from the opposite time of day: a deliberately useless model (for rollout drills and the demo's rollback), its MLflow run tagged degraded=true"
        ),
    )


def training_tags(feature_set_doc: Mapping[str, Any], params: TrainJobParams, run_ids: Mapping[str, str] | None, tags: Mapping[str, str] | None) -> dict[str, str]:
    """The MLflow run's tags: the feature set and its source batch count, the orchestration run
    ids (``lineage.<key>``, empty ones left out), ``degraded=true`` for shuffled targets, then
    the caller's ``tags``."""
    out = {"feature_set_id": str(feature_set_doc["_id"]), "source_batch_count": str(feature_set_doc.get("source_batch_count", len(feature_set_doc.get("source_batches", []))))}
    out |= {f"{LINEAGE_TAG_PREFIX}{k}": str(v) for k, v in (run_ids or {}).items() if v}
    if params.shuffle_targets:
        out["degraded"] = "true"
    return out | dict(tags or {})


@dataclass
class TrainResult:
    """What a training run produced: the MLflow run, the registered version and its metrics."""

    run_id: str
    model_name: str
    model_version: str
    alias: str
    feature_set_id: str
    metrics: dict[str, float] = field(default_factory=dict)
    train_rows: int = 0
    validation_rows: int = 0
    test_rows: int = 0
    train_rows_by_rank: list[int] = field(default_factory=list)
    """Train rows each Ray Train worker fitted (disjoint shards of the train window)."""
    elapsed_s: float = 0.0
    degraded: bool = False
    """Trained on shuffled targets (``TrainJobParams.shuffle_targets``)."""

    def summary(self) -> dict[str, Any]:
        """A JSON-ready dict, metrics rounded."""
        out = asdict(self)
        out["metrics"] = {k: round(v, 5) for k, v in self.metrics.items()}
        return out


def latest_feature_set_id(settings: Settings) -> str:
    """The id of the newest feature set in the metadata store."""
    from app.metadata import FEATURE_SETS, open_metadata

    doc = open_metadata(settings.metadata_url).collection(FEATURE_SETS).find_one({}, sort=[("created_at", -1)])
    if doc is None:
        raise LookupError("no feature set found: run `python -m jobs.preprocess` first")
    return str(doc["_id"])


def run_training(
    settings: Settings, params: TrainJobParams, *, tags: dict[str, str] | None = None, run_ids: Mapping[str, str] | None = None, on_progress: Callable[[str], None] | None = None
) -> TrainResult:
    """Fit the forecast model on a feature set, evaluate it, log everything to MLflow, register a
    new model version (of ``params.model_name``, default ``settings.control.model_name``) and point
    ``params.alias`` at it.

    ``run_ids`` are the ids of the orchestration that started this training (the Airflow DAG
    run, the Ray job submission: ``app.orchestration.run_ids.run_ids_from_env`` in the job's
    entry point); they are tagged on the run as ``lineage.<key>`` (see :func:`training_tags`)."""
    from app.preprocess.pipeline import feature_set_doc
    from app.tracking import Tracking

    say = on_progress or (lambda msg: None)
    started = time.monotonic()
    model_name = params.model_name or settings.control.model_name
    fs_id = params.feature_set_id or latest_feature_set_id(settings)
    say(f"loading feature set {fs_id}")
    doc = feature_set_doc(settings, fs_id)
    if not doc.get("rows", {}).get("train") or not doc.get("rows", {}).get("validation"):
        raise LookupError(f"feature set {fs_id} has an empty train or validation window: build it from more data")
    horizons = [int(h) for h in doc["params"]["horizons_min"]]
    features = list(doc["feature_columns"])

    validation = _read(settings, fs_id, "validation")
    run = _fit(settings, params, doc, validation, say)
    model = run.model
    evaluation = _evaluate(settings, model, validation, doc, say)

    tracking = Tracking(settings.tracking_url)
    with tracking.run(params.experiment, f"train-{fs_id}", tags=training_tags(doc, params, run_ids, tags)) as run_id:
        tracking.log_params(
            run_id,
            {
                **params.booster.model_dump(),
                "feature_set_id": fs_id,
                "horizons_min": horizons,
                "num_workers": params.num_workers,
                "train_rows": run.train_rows,
                "train_rows_by_rank": run.train_rows_by_rank,
                "validation_rows": evaluation.validation_rows,
                "test_rows": len(evaluation.test),
                "features": len(features),
                "shuffle_targets": params.shuffle_targets,
            },
        )
        tracking.log_metrics(run_id, evaluation.metrics)
        version = _log_model_and_plot(tracking, run_id, model, evaluation, model_name, say)
    tracking.set_alias(model_name, params.alias, version)
    return TrainResult(
        run_id=run_id,
        model_name=model_name,
        model_version=version,
        alias=params.alias,
        feature_set_id=fs_id,
        metrics=evaluation.metrics,
        train_rows=run.train_rows,
        validation_rows=evaluation.validation_rows,
        test_rows=len(evaluation.test),
        train_rows_by_rank=run.train_rows_by_rank,
        elapsed_s=round(time.monotonic() - started, 1),
        degraded=params.shuffle_targets,
    )


def _read(settings: Settings, fs_id: str, window: str) -> Any:
    """A window of the feature set read into the object store by Ray Data tasks (the blocks stay
    on the nodes that read them): training and the interval calibration share one read."""
    from app.preprocess import read_feature_set_ray

    return read_feature_set_ray(settings, fs_id, window).materialize()


@dataclass
class _Evaluation:
    test: pd.DataFrame
    """The test window's forecast table (:func:`app.train.evaluate.forecast_table`)."""
    example: pd.DataFrame
    """A few input rows (the logged model's input example)."""
    metrics: dict[str, float]
    intervals: dict[str, Any]
    validation_rows: int


def _evaluate(settings: Settings, model: ForecastModel, validation: Any, doc: Mapping[str, Any], say: Callable[[str], None]) -> _Evaluation:
    """Calibrate the intervals and score on the validation window (``validation_*`` metrics:
    early stopping saw it), then, last, read the untouched test window and score on it (the
    unprefixed metrics, with bootstrap intervals). The forecasts come from batch inference on the
    cluster (:mod:`app.train.batch_inference`); the driver holds only the forecast tables."""
    from app.train.batch_inference import StoredModel, forecast_window, window_dataset
    from app.train.evaluate import interval_metrics, intervals_json, table_metrics, table_skill_intervals, widened
    from app.train.fit import interval_widening

    keys = model.output_keys()
    say("calibrating the forecast intervals on the validation window")
    model.edge_widening = {}
    rows = doc.get("rows", {})
    raw = forecast_window(validation, StoredModel.put(model), rows=rows.get("validation"))
    model.edge_widening = interval_widening(raw, [k for k in keys if k in model.edge_boosters])
    metrics = {f"validation_{k}": v for k, v in table_metrics(widened(raw, model.edge_widening), keys).items()}
    say("final evaluation on the untouched test window")
    window = window_dataset(settings, doc, "test")
    test = forecast_window(window, StoredModel.put(model), rows=rows.get("test"))
    intervals = table_skill_intervals(test, keys)
    metrics |= table_metrics(test, keys) | interval_metrics(intervals)
    example = validation.take_batch(5, batch_format="pandas")[model.input_columns()].reset_index(drop=True)  # already in the object store
    return _Evaluation(test, example, metrics, intervals_json(intervals), len(raw))


def _fit(settings: Settings, params: TrainJobParams, doc: Mapping[str, Any], validation: Any, say: Callable[[str], None]) -> TrainRun:
    """Fit every booster on the feature set ``doc`` with Ray Train (on shuffled targets when
    ``params.shuffle_targets``), each stopped early on ``validation`` (a Ray Dataset); the model
    carries the feature set's feature parameters."""
    from app.train.trainer import fit_forecast_model

    fs_id = str(doc["_id"])
    horizons = [int(h) for h in doc["params"]["horizons_min"]]
    say(
        f"training {2 * len(horizons)} forecasts (a physics prior, boosters and interval edges) with Ray Train ({params.num_workers} worker(s))"
        + (" on shuffled targets" if params.shuffle_targets else "")
    )
    run = fit_forecast_model(
        _read(settings, fs_id, "train"),
        validation,
        list(doc["feature_columns"]),
        horizons,
        params.booster,
        num_workers=params.num_workers,
        storage_path=settings.data_dir / "ray_results",
        run_name=f"train-{fs_id}-{int(time.time())}",
        feature_set_id=fs_id,
        shuffle_targets=params.shuffle_targets,
    )
    fs_params = doc["params"]
    run.model.feature_params = {k: fs_params[k] for k in ("step_s", "max_fill_steps", "latitude", "longitude") if k in fs_params}
    return run


def _log_model_and_plot(tracking: Any, run_id: str, model: ForecastModel, evaluation: _Evaluation, model_name: str, say: Callable[[str], None]) -> str:
    """Log the test window's forecast-vs-actual plot and skill intervals (JSON) and the model to
    the run, register the model; return its version."""
    import json

    from app.tracking import log_forecast_model
    from app.train.evaluate import plot_forecast_vs_actual

    horizon = 15 if 15 in model.horizons_min else model.horizons_min[0]
    with tempfile.TemporaryDirectory() as tmp:
        plot = plot_forecast_vs_actual(evaluation.test, model.variables, Path(tmp) / "forecast_vs_actual_15min.png", horizon_min=horizon)
        tracking.log_artifact(run_id, plot, "plots")
        skill = Path(tmp) / "test_window_skill.json"
        skill.write_text(json.dumps(evaluation.intervals, indent=1))
        tracking.log_artifact(run_id, skill, "evaluation")
        model_dir = model.save(Path(tmp) / "forecast_model")
        example = evaluation.example
        say("logging the model to MLflow and registering it")
        return log_forecast_model(tracking.url, run_id, model_dir, load=load_saved_model, input_example=example, output_example=model.predict(example), registered_name=model_name)
