"""Hyperparameter search with Ray Tune (ASHA early stopping) over the boosters' parameters.

Each trial is a Tune function trainable holding one CPU: it fits the primary booster (indoor air
temperature at the primary horizon, with the same monotone constraints as the full model) on the
feature set's train split and reports the validation RMSE every few boosting rounds, so ASHA stops
poor trials early. The splits are put in the object store once and shared by every trial. The best
parameters then train the full model with Ray Train (``jobs.tune`` -> ``run_training``).

Why not a Ray Train run per trial: on a small cluster the nested worker groups (one per trial)
compete with the trials' own drivers for CPUs and every report crosses two controllers; a booster
this size fits in seconds in one process, so the search runs trials, and Train runs the final fit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from app.contracts.vocabulary import forecast_key
from app.train.trainer import BoosterParams, target_specs

PRIMARY_VARIABLE = "air_temp_c"


class TuneParams(BaseModel):
    """The search: trials, boosting rounds, ASHA's grace period and report interval, concurrency."""

    num_samples: int = Field(default=8, ge=1, le=500)
    max_rounds: int = Field(default=300, ge=10)
    grace_rounds: int = Field(default=30, ge=1)
    report_every_rounds: int = Field(default=10, ge=1)
    horizon_min: int = 15
    num_workers: int = Field(default=1, ge=1, description="Ray Train workers of the final fit")
    max_concurrent_trials: int = Field(default=2, ge=1)
    seed: int = 0


def _trial(config: dict[str, Any], spec: dict[str, Any], train: Any, valid: Any, max_rounds: int, report_every: int) -> None:
    """One trial: fit the primary booster, report validation RMSE every ``report_every`` rounds."""
    import xgboost
    from ray import tune

    def dmatrix(frame):
        return xgboost.DMatrix(frame[spec["features"]].astype("float64"), label=frame[spec["label"]] - frame[spec["base"]], feature_names=spec["features"])

    class Report(xgboost.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log) -> bool:
            if (epoch + 1) % report_every == 0 or epoch + 1 == max_rounds:
                tune.report({"val_rmse": float(evals_log["validation"]["rmse"][-1]), "rounds": epoch + 1})
            return False

    booster = BoosterParams(**{**config, "num_boost_round": max_rounds})
    xgboost.train({**booster.xgb_params(), "monotone_constraints": spec["monotone"]}, dmatrix(train), num_boost_round=max_rounds, evals=[(dmatrix(valid), "validation")], callbacks=[Report()])


def tune_boosters(train_dataset, validation_dataset, feature_columns: list[str], params: TuneParams, *, storage_path: str | Path, name: str, verbose: int = 1) -> tuple[BoosterParams, dict[str, Any]]:
    """Search booster parameters; return the best ``BoosterParams`` and a summary of the search.

    ``train_dataset`` / ``validation_dataset`` are Ray Datasets of the feature set's splits."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    spec = target_specs(feature_columns, [params.horizon_min], [PRIMARY_VARIABLE])[forecast_key(PRIMARY_VARIABLE, params.horizon_min)]
    from app.train.model import fill_plans

    def frame(ds):
        df = ds.to_pandas()
        return fill_plans(df, [params.horizon_min])[list(dict.fromkeys(spec["features"] + [spec["label"], spec["base"]]))]

    train_df, valid_df = frame(train_dataset), frame(validation_dataset)
    storage = str(Path(storage_path).resolve())
    # One CPU per trial; never more trials at once than the free CPUs hold.
    free = float(ray.available_resources().get("CPU", 1.0))
    concurrent = max(1, min(params.max_concurrent_trials, int(free)))
    trainable = tune.with_resources(tune.with_parameters(_trial, spec=spec, train=train_df, valid=valid_df, max_rounds=params.max_rounds, report_every=params.report_every_rounds), {"CPU": 1})
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
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric="val_rmse",
            mode="min",
            num_samples=params.num_samples,
            scheduler=ASHAScheduler(max_t=max_t, grace_period=grace, reduction_factor=3),
            # An explicit search_alg ignores TuneConfig.max_concurrent_trials: bound it here.
            search_alg=tune.search.BasicVariantGenerator(random_state=params.seed, max_concurrent=concurrent),
        ),
        run_config=tune.RunConfig(storage_path=storage, name=name, verbose=verbose),
    )
    grid = tuner.fit()
    best = grid.get_best_result(metric="val_rmse", mode="min")
    trials = [
        {
            "config": {k: round(v, 5) if isinstance(v, float) else v for k, v in r.config.items()},
            "val_rmse": round(float(r.metrics.get("val_rmse", float("nan"))), 5),
            "iterations": int(r.metrics.get("training_iteration", 0)),
        }
        for r in grid
    ]
    stopped_early = sum(1 for t in trials if t["iterations"] < max_t)
    best_params = BoosterParams(**{**best.config, "num_boost_round": params.max_rounds})
    return best_params, {"best_val_rmse": float(best.metrics["val_rmse"]), "trials": trials, "stopped_early": stopped_early, "num_samples": params.num_samples, "concurrent_trials": concurrent}
