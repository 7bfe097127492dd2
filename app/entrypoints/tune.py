"""Tune job: ``python -m jobs.tune [--num-samples N] [--max-rounds R]``.

Searches the boosters' hyperparameters with Ray Tune (ASHA early stopping; each trial a Ray Train
run), then trains the full model with the best parameters exactly as ``jobs.train`` does (MLflow
run, registered version, alias ``challenger``, ``lineage.*`` tags). Prints one JSON summary line.
"""

from __future__ import annotations

import argparse
import time

from app.entrypoints.runtime import init_ray, job_parser, run_job
from app.entrypoints.train import add_training_args, orchestration_run_ids, training_params


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), search, train the best, print the summary; the exit code."""
    parser = job_parser("tune", __doc__.split("\n\n")[1])
    add_training_args(parser, num_workers_help="Ray Train workers per trial (default 1)")
    parser.add_argument("--num-samples", type=int, default=8, help="trials (default 8)")
    parser.add_argument("--max-rounds", type=int, default=300, help="boosting rounds of a full trial (default 300)")
    parser.add_argument("--grace-rounds", type=int, default=30, help="rounds before ASHA may stop a trial (default 30)")
    parser.add_argument("--max-concurrent-trials", type=int, default=2, help="trials running at once; each holds --num-workers CPUs (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="search seed (default 0)")
    args = parser.parse_args(argv)
    return run_job("tune", lambda: _tune_and_train(args))


def _tune_and_train(args: argparse.Namespace) -> dict:
    from app.config import load_settings
    from app.preprocess import read_feature_set_ray
    from app.preprocess.pipeline import feature_set_doc
    from app.train.pipeline import latest_feature_set_id, run_training
    from app.train.tune import TuneParams, tune_boosters

    settings = load_settings(args.config)
    init_ray(settings.ray.auth_token_file)
    fs_id = args.feature_set_id or latest_feature_set_id(settings)
    doc = feature_set_doc(settings, fs_id)
    tune_params = TuneParams(**{name: getattr(args, name) for name in ("num_samples", "max_rounds", "grace_rounds", "num_workers", "max_concurrent_trials", "seed")})
    best, search = tune_boosters(
        read_feature_set_ray(settings, fs_id, "train"),
        read_feature_set_ray(settings, fs_id, "validation"),
        list(doc["feature_columns"]),
        tune_params,
        storage_path=settings.data_dir / "ray_results",
        name=f"tune-{fs_id}-{int(time.time())}",
    )
    result = run_training(settings, training_params(args, settings, best, fs_id), tags={"tuned": "true", "tune_trials": str(args.num_samples)}, run_ids=orchestration_run_ids())
    return {**result.summary(), "best_params": best.model_dump(), "search": search}
