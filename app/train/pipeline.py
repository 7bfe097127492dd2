"""Train, track and register: feature set -> Ray Train -> validation metrics -> MLflow run -> registry.

Used by ``jobs.train`` (fixed hyperparameters), ``jobs.tune`` (after the search) and the demo.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, Field

from app.config import Settings
from app.train.trainer import BoosterParams

PRIMARY_METRIC = "skill_air_temp_c_15min"


class TrainJobParams(BaseModel):
    """What to train on and where to record it."""

    feature_set_id: str | None = Field(default=None, description="default: the newest feature set")
    booster: BoosterParams = Field(default_factory=BoosterParams)
    num_workers: int = Field(default=1, ge=1, le=64, description="Ray Train workers (1 CPU each)")
    experiment: str = "greenhouse-forecast"
    model_name: str = "greenhouse-forecaster"
    alias: str = "challenger"


@dataclass
class TrainResult:
    run_id: str
    model_name: str
    model_version: str
    alias: str
    feature_set_id: str
    metrics: dict[str, float] = field(default_factory=dict)
    train_rows: int = 0
    validation_rows: int = 0
    elapsed_s: float = 0.0

    def summary(self) -> dict[str, Any]:
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
    settings: Settings,
    params: TrainJobParams,
    *,
    tags: dict[str, str] | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> TrainResult:
    """Fit the forecast model on a feature set, evaluate it, log everything to MLflow, register a
    new model version and point ``params.alias`` at it."""
    from app.preprocess import load_feature_set, read_feature_set_ray
    from app.tracking import Tracking
    from app.tracking.pyfunc import log_and_register
    from app.train.evaluate import evaluate, plot_forecast_vs_actual
    from app.train.trainer import fit_forecast_model

    say = on_progress or (lambda msg: None)
    started = time.monotonic()
    fs_id = params.feature_set_id or latest_feature_set_id(settings)
    say(f"loading feature set {fs_id}")
    train_df, validation_df, doc = load_feature_set(settings, fs_id)
    horizons = [int(h) for h in doc["params"]["horizons_min"]]
    features = list(doc["feature_columns"])

    say(f"training {2 * len(horizons)} boosters with Ray Train ({params.num_workers} worker(s))")
    model = fit_forecast_model(
        read_feature_set_ray(settings, fs_id, "train"),
        features,
        horizons,
        params.booster,
        num_workers=params.num_workers,
        storage_path=settings.data_dir / "ray_results",
        run_name=f"train-{fs_id}-{int(time.time())}",
        feature_set_id=fs_id,
    )
    fs_params = doc["params"]
    model.feature_params = {k: fs_params[k] for k in ("step_s", "max_fill_steps", "latitude", "longitude") if k in fs_params}
    say("evaluating on the validation window")
    metrics = evaluate(model, validation_df)

    tracking = Tracking(settings.tracking_url)
    with tracking.run(params.experiment, f"train-{fs_id}", tags={"feature_set_id": fs_id, **(tags or {})}) as run_id:
        tracking.log_params(
            run_id,
            {**params.booster.model_dump(), "feature_set_id": fs_id, "horizons_min": horizons, "num_workers": params.num_workers,
             "train_rows": len(train_df), "validation_rows": len(validation_df), "features": len(features)},
        )
        tracking.log_metrics(run_id, metrics)
        with tempfile.TemporaryDirectory() as tmp:
            plot = plot_forecast_vs_actual(model, validation_df, Path(tmp) / "forecast_vs_actual_15min.png", horizon_min=15 if 15 in horizons else horizons[0])
            tracking.log_artifact(run_id, plot, "plots")
            model_dir = model.save(Path(tmp) / "forecast_model")
            example = validation_df[model.input_columns()].head(5).reset_index(drop=True)
            say("logging the model to MLflow and registering it")
            version = log_and_register(settings.tracking_url, run_id, model_dir, example, model.predict(example), params.model_name)
    tracking.set_alias(params.model_name, params.alias, version)
    return TrainResult(
        run_id=run_id,
        model_name=params.model_name,
        model_version=version,
        alias=params.alias,
        feature_set_id=fs_id,
        metrics=metrics,
        train_rows=len(train_df),
        validation_rows=len(validation_df),
        elapsed_s=round(time.monotonic() - started, 1),
    )


@dataclass
class PromotionDecision:
    promoted: bool
    reason: str
    model_name: str
    challenger_version: str | None
    champion_version_before: str | None
    champion_version_after: str | None
    challenger_skill: float | None = None
    champion_skill: float | None = None
    feature_set_id: str = ""

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def run_promotion(settings: Settings, model_name: str = "greenhouse-forecaster", *, metric: str = PRIMARY_METRIC, min_improvement: float = 0.0) -> PromotionDecision:
    """Move ``champion`` to ``challenger`` only when the challenger's skill beats the champion's on
    the same validation window (the challenger's feature set, both models evaluated now)."""
    from app.preprocess import load_feature_set
    from app.tracking import Tracking
    from app.tracking.pyfunc import load_model
    from app.train.evaluate import evaluate
    from app.train.model import ForecastModel

    tracking = Tracking(settings.tracking_url)
    challenger = tracking.version_by_alias(model_name, "challenger")
    champion = tracking.version_by_alias(model_name, "champion")
    if challenger is None:
        return PromotionDecision(False, "no challenger to promote", model_name, None, champion, champion)
    if challenger == champion:
        return PromotionDecision(False, "the challenger already is the champion", model_name, challenger, champion, champion)

    def registered(version: str) -> ForecastModel:
        return load_model(settings.tracking_url, f"models:/{model_name}/{version}").unwrap_python_model().model

    challenger_model = registered(challenger)
    _, validation, _doc = load_feature_set(settings, challenger_model.feature_set_id)
    challenger_skill = evaluate(challenger_model, validation)[metric]
    if champion is None:
        tracking.set_alias(model_name, "champion", challenger)
        return PromotionDecision(True, "no champion yet: the challenger becomes champion", model_name, challenger, None, challenger, challenger_skill, None, challenger_model.feature_set_id)
    champion_skill = evaluate(registered(champion), validation)[metric]
    if challenger_skill > champion_skill + min_improvement:
        tracking.set_alias(model_name, "champion", challenger)
        return PromotionDecision(True, f"challenger {metric} {challenger_skill:.4f} beats champion {champion_skill:.4f}", model_name, challenger, champion, challenger, challenger_skill, champion_skill, challenger_model.feature_set_id)
    return PromotionDecision(False, f"challenger {metric} {challenger_skill:.4f} does not beat champion {champion_skill:.4f} (+{min_improvement})", model_name, challenger, champion, champion, challenger_skill, champion_skill, challenger_model.feature_set_id)
