"""Data-parallel training of the forecast model with Ray Train V2 (XGBoostTrainer).

One Train run fits the whole model (:func:`app.train.fit.fit_model`): the feature set's train and
validation windows come as Ray Datasets (read by Ray Data tasks, never loaded in the driver), Ray
Train streams each worker its own shard of them, and XGBoost's collective (set up by Ray Train)
makes the prior's statistics and every booster's histograms data-parallel across workers. Rank 0
reports a checkpoint holding the saved model and how many rows each worker fitted.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
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
    early_stopping_rounds: int = Field(default=30, ge=1, description="stop a booster after this many rounds without a better validation score")
    nthread: int = Field(default=1, ge=1, le=64, description="XGBoost threads per booster (1 where Ray schedules the CPUs)")

    def xgb_params(self) -> dict[str, Any]:
        """The parameters ``xgboost.train`` takes (``nthread``: 1 where Ray schedules the CPUs)."""
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
            "nthread": self.nthread,
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
    """``frame`` (a DataFrame with ``ts``) with its target columns shuffled across rows, each row's
    targets taken from a row at the opposite time of day (12 hours apart on the clock, any day or
    greenhouse): a deliberately useless model for rollout drills, which forecasts the night's
    climate at noon and the day's at night. (A plain permutation is not useless enough: it learns to
    revert to the mean, close to persistence whenever the climate sits near it, as at night.)"""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    ts = pd.to_datetime(frame["ts"], utc=True)
    clock_s = (ts.dt.hour * 3600 + ts.dt.minute * 60 + ts.dt.second).to_numpy() + rng.uniform(0, 1, len(frame))  # ties broken at random
    by_clock = np.argsort(clock_s)
    opposite = np.empty(len(frame), dtype=np.int64)
    opposite[by_clock] = np.roll(by_clock, len(frame) // 2)  # half the rows on: 12 h on the clock when rows cover the day evenly
    out = frame.copy()
    out[target_columns] = frame[target_columns].to_numpy()[opposite]
    return out


def rows_by_rank(rows: int, rank: int, world_size: int) -> list[int]:
    """How many train rows each worker holds (this one's is ``rows``), summed over the workers
    with XGBoost's collective, so that rank 0 can report every worker's share."""
    import numpy as np
    import xgboost

    mine = np.zeros(world_size, dtype=np.float64)
    mine[rank] = rows
    if xgboost.collective.is_distributed():
        mine = xgboost.collective.allreduce(mine, xgboost.collective.Op.SUM)
    return [int(n) for n in mine]


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs on every Train worker: fit the model on this worker's shards (collectively: the
    prior's statistics and every booster's histograms are summed over the workers)."""
    import ray.train
    from ray.train import Checkpoint

    from app.train.fit import fit_model

    def shard(name: str) -> Any:
        return ray.train.get_dataset_shard(name).materialize().to_pandas()

    frame = shard("train")
    validation = shard("validation") if config.get("with_validation") else None
    rank = ray.train.get_context().get_world_rank()
    if config.get("shuffle_seed") is not None:
        frame = shuffled_targets(frame, sorted({spec["label"] for spec in target_specs(config["feature_columns"], config["horizons_min"]).values()}), seed=config["shuffle_seed"] + rank)
        # a deliberately useless model learns its wrong targets for all its rounds (stopped early
        # on the real outcomes, it would stop at once, at its prior)
        validation = None
    params = BoosterParams(**config["booster"])
    model = fit_model(frame, validation, config["feature_columns"], config["horizons_min"], params, edges=config["edges"], feature_set_id=config["feature_set_id"])
    by_rank = rows_by_rank(len(frame), rank, ray.train.get_context().get_world_size())
    metrics = {"boosters": len(model.boosters) + len(model.edge_boosters), "train_rows_rank": len(frame), "train_rows_by_rank": by_rank}
    if rank == 0:
        with tempfile.TemporaryDirectory() as tmp:
            model.save(tmp)
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))
    else:
        ray.train.report(metrics)


@dataclass
class TrainRun:
    """What one Ray Train run produced: the model (its interval edges not calibrated yet) and how
    many train rows each worker fitted (their shards are disjoint: the sum is the window)."""

    model: ForecastModel
    train_rows_by_rank: list[int] = field(default_factory=list)

    @property
    def train_rows(self) -> int:
        """The rows of the train window the workers fitted, all shards together."""
        return sum(self.train_rows_by_rank)


def fit_forecast_model(
    train_dataset: Any,
    validation_dataset: Any | None,
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
    edges: bool = True,
    cpus_per_worker: float = 1.0,
) -> TrainRun:
    """Fit the model (:func:`app.train.fit.fit_model`) with Ray Train on ``train_dataset`` (a Ray
    Dataset), each booster stopped early on ``validation_dataset`` (when given); return it with the
    rows each worker fitted. Its interval edges are not calibrated yet
    (:func:`app.train.fit.interval_widening`).

    The driver never holds the data: the windows are read by Ray Data tasks into the object
    store (on the nodes that read them) and streamed to the ``num_workers`` workers, one disjoint
    shard each (Ray Train's ``streaming_split``); each worker turns only its shard into pandas.

    ``shuffle_targets`` permutes each worker's targets across its rows (seed ``shuffle_seed`` +
    rank) before fitting: a deliberately useless model, see :func:`shuffled_targets`."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.xgboost import XGBoostTrainer

    # Run the read tasks before the workers take their CPUs: read tasks that start after the
    # workers hold every free CPU would wait for one forever on a small cluster. The blocks stay
    # in the object store of the nodes that read them (the driver holds references, not rows).
    datasets = {"train": train_dataset.materialize()}
    if validation_dataset is not None:
        datasets["validation"] = validation_dataset.materialize()
    config = {
        "feature_columns": list(feature_columns),
        "horizons_min": [int(h) for h in horizons_min],
        "booster": params.model_dump(),
        "edges": edges,
        "with_validation": validation_dataset is not None,
        "feature_set_id": feature_set_id,
        "shuffle_seed": shuffle_seed if shuffle_targets else None,
    }
    trainer = XGBoostTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=num_workers, resources_per_worker={"CPU": cpus_per_worker}),
        datasets=datasets,
        run_config=RunConfig(storage_path=str(Path(storage_path).resolve()), name=run_name),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training produced no checkpoint: {result.error}")
    with result.checkpoint.as_directory() as directory:
        model = ForecastModel.load(directory)
    return TrainRun(model, [int(n) for n in (result.metrics or {}).get("train_rows_by_rank", [])])
