"""Train job: ``python -m jobs.train [--feature-set-id ID] [--num-workers N] [booster options]``.

Fits the forecast boosters with Ray Train on a feature set, evaluates them against persistence on
the validation window, logs params/metrics/plots/model to MLflow, registers a new version of the
model and sets alias ``challenger`` on it. Prints one JSON summary line.

The MLflow run is tagged with the ids of the orchestration that started the job (the Airflow DAG
run and task, the Ray job submission; ``lineage.*``) when the environment names them.
``--shuffle-targets`` trains a deliberately useless model (targets permuted across rows, the run
tagged ``degraded=true``) for rollout drills.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from app.entrypoints.runtime import add_model_name, init_ray, job_parser, run_job


def add_training_args(parser: argparse.ArgumentParser, *, num_workers_help: str) -> None:
    """The options train and tune share: feature set, workers, registered model, experiment."""
    parser.add_argument("--feature-set-id", help="default: the newest feature set")
    parser.add_argument("--num-workers", type=int, default=1, help=num_workers_help)
    add_model_name(parser)
    parser.add_argument("--experiment", default="greenhouse-forecast", help="MLflow experiment")


def training_params(args: argparse.Namespace, settings: Any, booster: Any, feature_set_id: str | None = None) -> Any:
    """``TrainJobParams`` from the shared options (the model name defaults to the settings')."""
    from app.train.pipeline import TrainJobParams

    return TrainJobParams(
        feature_set_id=feature_set_id or args.feature_set_id,
        booster=booster,
        num_workers=args.num_workers,
        model_name=args.model_name or settings.control.model_name,
        experiment=args.experiment,
        shuffle_targets=getattr(args, "shuffle_targets", False),
    )


def orchestration_run_ids() -> dict[str, str]:
    """The Airflow DAG run / task and Ray job submission ids this job runs under (from the
    environment), for the MLflow run's ``lineage.*`` tags."""
    from app.orchestration.run_ids import run_ids_from_env

    return run_ids_from_env(os.environ)


def add_booster_args(parser: argparse.ArgumentParser) -> None:
    """One ``--<param>`` option per XGBoost parameter of ``BoosterParams`` (default: its default)."""
    from app.train.trainer import BoosterParams

    defaults = BoosterParams()
    group = parser.add_argument_group("booster (XGBoost) parameters")
    for name in BoosterParams.model_fields:
        group.add_argument(f"--{name.replace('_', '-')}", type=type(getattr(defaults, name)), default=None, help=f"default {getattr(defaults, name)}")


def booster_from_args(args: argparse.Namespace) -> Any:
    """``BoosterParams`` with the booster options that were given."""
    from app.train.trainer import BoosterParams

    return BoosterParams(**{k: v for k, v in vars(args).items() if k in BoosterParams.model_fields and v is not None})


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), train and register, print the summary; the exit code."""
    parser = job_parser("train", __doc__.split("\n\n")[1])
    add_training_args(parser, num_workers_help="Ray Train workers, 1 CPU each (default 1)")
    add_booster_args(parser)
    parser.add_argument("--shuffle-targets", action="store_true", help="train on targets permuted across rows: a deliberately useless model for rollout drills (tagged degraded=true)")
    args = parser.parse_args(argv)

    def body() -> dict:
        from app.config import load_settings
        from app.train.pipeline import run_training

        settings = load_settings(args.config)
        init_ray(settings.ray.auth_token_file)
        return run_training(settings, training_params(args, settings, booster_from_args(args)), run_ids=orchestration_run_ids()).summary()

    return run_job("train", body)
