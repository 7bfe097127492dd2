"""Train job: ``python -m jobs.train [--feature-set-id ID] [--num-workers N] [booster options]``.

Fits the forecast boosters with Ray Train on a feature set, evaluates them against persistence on
the validation window, logs params/metrics/plots/model to MLflow, registers a new version of the
model and sets alias ``challenger`` on it. Prints one JSON summary line.
"""

from __future__ import annotations

import argparse
import sys

from jobs._entry import init_ray, run_job


def add_booster_args(parser: argparse.ArgumentParser) -> None:
    from app.train.trainer import BoosterParams

    defaults = BoosterParams()
    group = parser.add_argument_group("booster (XGBoost) parameters")
    for name, field in BoosterParams.model_fields.items():
        group.add_argument(f"--{name.replace('_', '-')}", type=type(getattr(defaults, name)), default=None, help=f"default {getattr(defaults, name)}")


def booster_from_args(args: argparse.Namespace):
    from app.train.trainer import BoosterParams

    return BoosterParams(**{k: v for k, v in vars(args).items() if k in BoosterParams.model_fields and v is not None})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.train", description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML settings file (env GH_* overrides it)")
    parser.add_argument("--feature-set-id", help="default: the newest feature set")
    parser.add_argument("--num-workers", type=int, default=1, help="Ray Train workers, 1 CPU each (default 1)")
    parser.add_argument("--model-name", default="greenhouse-forecaster", help="registered model name")
    parser.add_argument("--experiment", default="greenhouse-forecast", help="MLflow experiment")
    add_booster_args(parser)
    args = parser.parse_args(argv)

    def body() -> dict:
        from app.config import load_settings
        from app.train.pipeline import TrainJobParams, run_training

        settings = load_settings(args.config)
        init_ray()
        params = TrainJobParams(feature_set_id=args.feature_set_id, booster=booster_from_args(args), num_workers=args.num_workers, model_name=args.model_name, experiment=args.experiment)
        return run_training(settings, params).summary()

    return run_job("train", body)


if __name__ == "__main__":
    sys.exit(main())
