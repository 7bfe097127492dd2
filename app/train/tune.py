"""Hyperparameter search with Ray Tune (ASHA early stopping) over the boosters' parameters.

Tune runs a driver function per trial that builds and fits an ``XGBoostTrainer`` (Ray Train V2)
with ``TuneReportCallback`` in the Train ``RunConfig``. Trials fit only the primary booster
(indoor air temperature at the primary horizon) and report the validation RMSE every few boosting
rounds, so ASHA can stop poor trials early. The best parameters then train the full model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from app.train.trainer import BoosterParams, target_specs

PRIMARY_VARIABLE = "air_temp_c"


class TuneParams(BaseModel):
    num_samples: int = Field(default=8, ge=1, le=500)
    max_rounds: int = Field(default=300, ge=10)
    grace_rounds: int = Field(default=30, ge=1)
    report_every_rounds: int = Field(default=10, ge=1)
    horizon_min: int = 15
    num_workers: int = Field(default=1, ge=1)
    # Each running trial holds num_workers whole CPUs for its Train workers; 2 fits a 2-core box.
    max_concurrent_trials: int = Field(default=2, ge=1)
    seed: int = 0


def _tune_loop_per_worker(config: dict[str, Any]) -> None:
    """Train worker of one trial: fit the primary booster, report validation RMSE as it improves."""
    import ray.train
    import xgboost
    from ray.train.xgboost import RayTrainReportCallback

    spec = config["spec"]
    train = ray.train.get_dataset_shard("train").materialize().to_pandas()
    valid = ray.train.get_dataset_shard("validation").materialize().to_pandas()

    def dmatrix(frame):
        return xgboost.DMatrix(frame[spec["features"]].astype("float64"), label=frame[spec["label"]] - frame[spec["base"]], feature_names=spec["features"])

    xgboost.train(
        {**config["xgb_params"], "monotone_constraints": spec["monotone"]},
        dmatrix(train),
        num_boost_round=config["num_boost_round"],
        evals=[(dmatrix(valid), "validation")],
        callbacks=[RayTrainReportCallback(metrics={"val_rmse": "validation-rmse"}, frequency=config["report_every"], checkpoint_at_end=False)],
    )


def tune_boosters(
    train_dataset,
    validation_dataset,
    feature_columns: list[str],
    params: TuneParams,
    *,
    storage_path: str | Path,
    name: str,
) -> tuple[BoosterParams, dict[str, Any]]:
    """Search booster parameters; return the best ``BoosterParams`` and a summary of the search."""
    from ray import tune
    from ray.train import DataConfig, RunConfig, ScalingConfig
    from ray.train.xgboost import XGBoostTrainer
    from ray.tune.integration.ray_train import TuneReportCallback
    from ray.tune.schedulers import ASHAScheduler

    spec = target_specs(feature_columns, [params.horizon_min], [PRIMARY_VARIABLE])[f"{PRIMARY_VARIABLE}_{params.horizon_min}min"]
    # read before any trial's workers take CPUs (see fit_forecast_model)
    train_dataset, validation_dataset = train_dataset.materialize(), validation_dataset.materialize()
    storage = str(Path(storage_path).resolve())

    def trial(config: dict[str, Any]) -> None:
        booster = BoosterParams(**{**config, "num_boost_round": params.max_rounds})
        trainer = XGBoostTrainer(
            _tune_loop_per_worker,
            train_loop_config={"spec": spec, "xgb_params": booster.xgb_params(), "num_boost_round": params.max_rounds, "report_every": params.report_every_rounds},
            # 0.9 CPU per worker: with each trial's driver holding 0.01, two one-worker trials fit
            # on 2 CPUs (whole CPUs would leave the second trial's worker waiting forever).
            scaling_config=ScalingConfig(num_workers=params.num_workers, resources_per_worker={"CPU": 0.9}),
            datasets={"train": train_dataset, "validation": validation_dataset},
            dataset_config=DataConfig(datasets_to_split=["train"]),
            run_config=RunConfig(storage_path=storage, name=f"{name}-{tune.get_context().get_trial_id()}", callbacks=[TuneReportCallback()]),
        )
        trainer.fit()

    space = {
        "max_depth": tune.randint(3, 9),
        "eta": tune.loguniform(0.02, 0.3),
        "min_child_weight": tune.loguniform(1.0, 30.0),
        "subsample": tune.uniform(0.6, 1.0),
        "colsample_bytree": tune.uniform(0.5, 1.0),
        "reg_lambda": tune.loguniform(0.1, 10.0),
    }
    # Iterations reported = rounds / report_every; ASHA's time unit is the report count.
    max_t = max(1, params.max_rounds // params.report_every_rounds)
    grace = max(1, params.grace_rounds // params.report_every_rounds)
    tuner = tune.Tuner(
        # The trial driver only waits for its Train workers: it reserves a token CPU share (Tune
        # refuses an empty bundle) so that the workers get the whole CPUs.
        tune.with_resources(trial, {"CPU": 0.01}),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric="val_rmse",
            mode="min",
            num_samples=params.num_samples,
            scheduler=ASHAScheduler(max_t=max_t, grace_period=grace, reduction_factor=3),
            # An explicit search_alg ignores TuneConfig.max_concurrent_trials; bound it here, or
            # every trial's driver starts at once and their Train workers queue for CPUs.
            search_alg=tune.search.BasicVariantGenerator(random_state=params.seed, max_concurrent=params.max_concurrent_trials),
        ),
        run_config=tune.RunConfig(storage_path=storage, name=name),
    )
    grid = tuner.fit()
    best = grid.get_best_result(metric="val_rmse", mode="min")
    trials = [
        {"config": {k: round(v, 5) if isinstance(v, float) else v for k, v in r.config.items()},
         "val_rmse": round(float(r.metrics.get("val_rmse", float("nan"))), 5),
         "iterations": int(r.metrics.get("training_iteration", 0))}
        for r in grid
    ]
    stopped_early = sum(1 for t in trials if t["iterations"] < max_t)
    best_params = BoosterParams(**{**best.config, "num_boost_round": params.max_rounds})
    return best_params, {"best_val_rmse": float(best.metrics["val_rmse"]), "trials": trials, "stopped_early": stopped_early, "num_samples": params.num_samples}
