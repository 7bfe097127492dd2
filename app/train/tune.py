"""Hyperparameter search with Ray Tune (ASHA early stopping) over the boosters' parameters.

Each trial is a Tune function trainable holding one CPU: it fits the primary booster (indoor air
temperature at the primary horizon, with the same monotone constraints and physics prior as the
full model) on the feature set's train split and reports the validation RMSE every few boosting rounds, so ASHA stops
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
    """One trial: fit the primary booster (on top of the physics prior, the frames' ``prior``
    column), report validation RMSE every ``report_every`` rounds."""
    import xgboost
    from ray import tune

    def dmatrix(frame):
        return xgboost.DMatrix(frame[spec["features"]].astype("float64"), label=frame[spec["label"]] - frame[spec["base"]], base_margin=frame["prior"], feature_names=spec["features"])

    class Report(xgboost.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log) -> bool:
            if (epoch + 1) % report_every == 0 or epoch + 1 == max_rounds:
                tune.report({"val_rmse": float(evals_log["validation"]["rmse"][-1]), "rounds": epoch + 1})
            return False

    booster = BoosterParams(**{**config, "num_boost_round": max_rounds})
    xgboost.train({**booster.xgb_params(), "monotone_constraints": spec["monotone"]}, dmatrix(train), num_boost_round=max_rounds, evals=[(dmatrix(valid), "validation")], callbacks=[Report()])


def _with_prior(train: Any, valid: Any, spec: dict[str, Any], feature_columns: list[str], horizon_min: int) -> tuple[Any, Any]:
    """The trials' frames: the booster's columns and a ``prior`` column, the physics prior
    (:mod:`app.train.prior`, fitted on ``train``) that the full model's booster starts from too
    (0 when the features lack what the prior reads)."""
    from app.train.fit import PRIOR_COLUMNS
    from app.train.model import fill_plans
    from app.train.prior import fit_prior

    keep = list(dict.fromkeys(spec["features"] + [spec["label"], spec["base"]]))
    train, valid = fill_plans(train, [horizon_min]), fill_plans(valid, [horizon_min])
    if not all(c in feature_columns for c in PRIOR_COLUMNS):
        return train[keep].assign(prior=0.0), valid[keep].assign(prior=0.0)

    def columns(frame: Any) -> dict[str, Any]:
        return {c: frame[c].to_numpy(dtype="float64") for c in frame.columns if c not in ("greenhouse_id", "ts", "split")}

    prior = fit_prior(columns(train), [horizon_min], [PRIMARY_VARIABLE], lambda v, h: (train[spec["label"]] - train[spec["base"]]).to_numpy(dtype="float64"))
    with_prior = [frame[keep].assign(prior=prior.change(PRIMARY_VARIABLE, horizon_min, columns(frame))) for frame in (train, valid)]
    return with_prior[0], with_prior[1]


def tune_boosters(train_dataset, validation_dataset, feature_columns: list[str], params: TuneParams, *, storage_path: str | Path, name: str, verbose: int = 1) -> tuple[BoosterParams, dict[str, Any]]:
    """Search booster parameters; return the best ``BoosterParams`` and a summary of the search.

    ``train_dataset`` / ``validation_dataset`` are Ray Datasets of the feature set's splits."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    spec = target_specs(feature_columns, [params.horizon_min], [PRIMARY_VARIABLE])[forecast_key(PRIMARY_VARIABLE, params.horizon_min)]
    train_df, valid_df = _with_prior(train_dataset.to_pandas(), validation_dataset.to_pandas(), spec, feature_columns, params.horizon_min)
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
