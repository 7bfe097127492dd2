"""Data-parallel training of the forecast boosters with Ray Train V2 (XGBoostTrainer).

One Train run fits every (variable, horizon) booster: each worker reads its shard of the feature
set's train split, and XGBoost's collective (set up by Ray Train) makes the histogram building
data-parallel across workers. Rank 0 reports a checkpoint holding all boosters.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from app.contracts.vocabulary import TARGET_VARIABLES, forecast_key, plan_columns, target_column
from app.train.model import ForecastModel, monotone_constraints


class BoosterParams(BaseModel):
    """XGBoost hyperparameters (what Tune searches over)."""

    max_depth: int = Field(default=6, ge=1, le=16)
    eta: float = Field(default=0.08, gt=0, le=1)
    num_boost_round: int = Field(default=300, ge=1, le=5000)
    min_child_weight: float = Field(default=5.0, ge=0)
    subsample: float = Field(default=0.8, gt=0, le=1)
    colsample_bytree: float = Field(default=0.8, gt=0, le=1)
    reg_lambda: float = Field(default=1.0, ge=0)

    def xgb_params(self) -> dict[str, Any]:
        """The parameters ``xgboost.train`` takes (one thread: Ray schedules the CPUs)."""
        return {
            "objective": "reg:squarederror",
            "tree_method": "hist",
            "eval_metric": "rmse",
            "max_depth": self.max_depth,
            "eta": self.eta,
            "min_child_weight": self.min_child_weight,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "lambda": self.reg_lambda,
            "nthread": 1,
        }


def target_specs(feature_columns: list[str], horizons_min: list[int], variables: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Per booster: its feature list, label column, base (current value) column, constraints."""
    specs = {}
    for variable in variables or list(TARGET_VARIABLES):
        for h in horizons_min:
            features = list(feature_columns) + plan_columns([h])
            specs[forecast_key(variable, h)] = {
                "features": features,
                "label": target_column(variable, h),
                "base": variable,
                "monotone": "(" + ",".join(str(c) for c in monotone_constraints(variable, features, h)) + ")",
            }
    return specs


def shuffled_targets(frame: Any, target_columns: list[str], *, seed: int) -> Any:
    """``frame`` (a DataFrame) with its target columns permuted across rows, all by one
    permutation: the features no longer say anything about the targets (a deliberately useless
    model for rollout drills)."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(frame))
    out = frame.copy()
    out[target_columns] = frame[target_columns].to_numpy()[order]
    return out


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs on every Train worker: fit each booster on this worker's shard (collectively)."""
    import ray.train
    import xgboost
    from ray.train import Checkpoint

    shard = ray.train.get_dataset_shard("train")
    frame = shard.materialize().to_pandas()
    rank = ray.train.get_context().get_world_rank()
    if config.get("shuffle_seed") is not None:
        frame = shuffled_targets(frame, sorted({spec["label"] for spec in config["specs"].values()}), seed=config["shuffle_seed"] + rank)
    boosters = {}
    for key, spec in config["specs"].items():
        label = frame[spec["label"]] - frame[spec["base"]]
        dtrain = xgboost.DMatrix(frame[spec["features"]].astype("float64"), label=label, feature_names=spec["features"])
        params = {**config["xgb_params"], "monotone_constraints": spec["monotone"]}
        boosters[key] = xgboost.train(params, dtrain, num_boost_round=config["num_boost_round"])
    metrics = {"boosters": len(boosters), "train_rows_rank": len(frame)}
    if rank == 0:
        with tempfile.TemporaryDirectory() as tmp:
            for key, booster in boosters.items():
                booster.save_model(str(Path(tmp) / f"{key}.json"))
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))
    else:
        ray.train.report(metrics)


def fit_forecast_model(
    train_dataset: Any,
    feature_columns: list[str],
    horizons_min: list[int],
    params: BoosterParams,
    *,
    num_workers: int = 1,
    storage_path: str | Path,
    run_name: str,
    feature_set_id: str = "",
    shuffle_targets: bool = False,
    shuffle_seed: int = 0,
) -> ForecastModel:
    """Fit all boosters with Ray Train on ``train_dataset`` (a Ray Dataset); return the model.

    ``shuffle_targets`` permutes each worker's targets across its rows (seed ``shuffle_seed`` +
    rank) before fitting: a deliberately useless model, see :func:`shuffled_targets`."""
    import xgboost
    from ray.train import RunConfig, ScalingConfig
    from ray.train.xgboost import XGBoostTrainer

    specs = target_specs(feature_columns, horizons_min)
    # Read the (small) feature set before the workers take their CPUs: read tasks that start
    # after the workers hold every free CPU would wait for one forever on a small cluster.
    train_dataset = train_dataset.materialize()
    trainer = XGBoostTrainer(
        train_loop_per_worker,
        train_loop_config={"specs": specs, "xgb_params": params.xgb_params(), "num_boost_round": params.num_boost_round, "shuffle_seed": shuffle_seed if shuffle_targets else None},
        scaling_config=ScalingConfig(num_workers=num_workers, resources_per_worker={"CPU": 1}),
        datasets={"train": train_dataset},
        run_config=RunConfig(storage_path=str(Path(storage_path).resolve()), name=run_name),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training produced no checkpoint: {result.error}")
    boosters = {}
    with result.checkpoint.as_directory() as directory:
        for key in specs:
            booster = xgboost.Booster()
            booster.load_model(str(Path(directory) / f"{key}.json"))
            boosters[key] = booster
    return ForecastModel(boosters, list(feature_columns), list(horizons_min), list(TARGET_VARIABLES), feature_set_id)
