"""Promote job: ``python -m jobs.promote [--model-name NAME] [--min-improvement X]``.

Moves alias ``champion`` to the ``challenger`` version only when the challenger's skill against
persistence (15-min indoor air temperature) beats the champion's on the same validation window
(the challenger's feature set; both models are evaluated now). Otherwise leaves the champion and
says why. Prints one JSON summary line (exit 0 either way; non-zero only on errors).
"""

from __future__ import annotations

import argparse
import sys

from jobs._entry import run_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.promote", description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML settings file (env GH_* overrides it)")
    parser.add_argument("--model-name", default="greenhouse-forecaster")
    parser.add_argument("--min-improvement", type=float, default=0.0, help="skill margin the challenger must exceed (default 0)")
    args = parser.parse_args(argv)

    def body() -> dict:
        from app.config import load_settings
        from app.train.pipeline import run_promotion

        settings = load_settings(args.config)
        return run_promotion(settings, args.model_name, min_improvement=args.min_improvement).summary()

    return run_job("promote", body)


if __name__ == "__main__":
    sys.exit(main())
