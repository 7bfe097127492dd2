"""Tune job: ``python -m jobs.tune [--num-samples N] [--max-rounds R]``.

Searches the boosters' hyperparameters with Ray Tune (ASHA early stopping; each trial a Ray Train
run), then trains the full model with the best parameters exactly as ``jobs.train`` does (MLflow
run, registered version, alias ``challenger``). Prints one JSON summary line.
"""

from __future__ import annotations

import argparse
import sys
import time

from jobs._entry import init_ray, run_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.tune", description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML settings file (env GH_* overrides it)")
    parser.add_argument("--feature-set-id", help="default: the newest feature set")
    parser.add_argument("--num-samples", type=int, default=8, help="trials (default 8)")
    parser.add_argument("--max-rounds", type=int, default=300, help="boosting rounds of a full trial (default 300)")
    parser.add_argument("--grace-rounds", type=int, default=30, help="rounds before ASHA may stop a trial (default 30)")
    parser.add_argument("--num-workers", type=int, default=1, help="Ray Train workers per trial (default 1)")
    parser.add_argument("--max-concurrent-trials", type=int, default=2, help="trials running at once; each holds --num-workers CPUs (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="search seed (default 0)")
    parser.add_argument("--model-name", default="greenhouse-forecaster")
    parser.add_argument("--experiment", default="greenhouse-forecast")
    args = parser.parse_args(argv)

    def body() -> dict:
        from app.config import load_settings
        from app.preprocess import read_feature_set_ray
        from app.train.pipeline import TrainJobParams, latest_feature_set_id, run_training
        from app.train.tune import TuneParams, tune_boosters

        settings = load_settings(args.config)
        init_ray()
        fs_id = args.feature_set_id or latest_feature_set_id(settings)
        from app.preprocess import load_feature_set

        _, _, doc = load_feature_set(settings, fs_id)
        tune_params = TuneParams(num_samples=args.num_samples, max_rounds=args.max_rounds, grace_rounds=args.grace_rounds, num_workers=args.num_workers, max_concurrent_trials=args.max_concurrent_trials, seed=args.seed)
        best, search = tune_boosters(
            read_feature_set_ray(settings, fs_id, "train"),
            read_feature_set_ray(settings, fs_id, "validation"),
            list(doc["feature_columns"]),
            tune_params,
            storage_path=settings.data_dir / "ray_results",
            name=f"tune-{fs_id}-{int(time.time())}",
        )
        params = TrainJobParams(feature_set_id=fs_id, booster=best, num_workers=args.num_workers, model_name=args.model_name, experiment=args.experiment)
        result = run_training(settings, params, tags={"tuned": "true", "tune_trials": str(args.num_samples)})
        return {**result.summary(), "best_params": best.model_dump(), "search": search}

    return run_job("tune", body)


if __name__ == "__main__":
    sys.exit(main())
