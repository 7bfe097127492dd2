"""Preprocess job: ``python -m jobs.preprocess [--start-date D] [--end-date D] [--horizons 5,15,30,60]``.

Builds a feature set from the raw lake with Ray Data (clean, resample, per-greenhouse features,
targets at the horizons, split by time), writes it to ``features/<id>/`` in the lake and records a
``feature_sets`` document with per-column statistics. Prints one JSON summary line.
"""

from __future__ import annotations

import argparse
import os
from datetime import date

from app.entrypoints.runtime import init_ray, job_parser, run_job


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), build the feature set, print the summary; the exit code."""
    parser = job_parser("preprocess", __doc__.split("\n\n")[1])
    parser.add_argument("--start-date", type=date.fromisoformat, help="first date=YYYY-MM-DD partition to read (default: all)")
    parser.add_argument("--end-date", type=date.fromisoformat, help="last date partition to read (default: all)")
    parser.add_argument("--horizons", default="5,15,30,60", help="forecast horizons in minutes, comma-separated (default 5,15,30,60)")
    parser.add_argument(
        "--step-s",
        type=_step,
        default="auto",
        help="resampling step in seconds, or 'auto' (default): the smallest of 60, 120, 180, 300, 600, 900 s that the slowest device's reporting interval fits in",
    )
    parser.add_argument("--max-fill-steps", type=int, default=5, help="longest gap (in steps) filled (default 5)")
    parser.add_argument("--validation-fraction", type=float, default=0.2, help="share of the time range after the train window, for early stopping and the search (default 0.2)")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="last share of the time range, seen only by the final evaluation and promotion (default 0.2)")
    args = parser.parse_args(argv)
    if args.validation_fraction + args.test_fraction >= 0.9:
        parser.error("--validation-fraction plus --test-fraction must leave at least 10 % of the time range for training")
    try:
        horizons = tuple(int(h) for h in args.horizons.split(",") if h.strip())
    except ValueError:
        parser.error(f"--horizons must be integers separated by commas, got {args.horizons!r}")

    def body() -> dict:
        from app.config import load_settings
        from app.orchestration.run_ids import run_ids_from_env
        from app.preprocess import PreprocessParams, run_preprocess

        settings = load_settings(args.config)
        params = PreprocessParams(
            horizons_min=horizons,
            step_s=args.step_s,
            max_fill_steps=args.max_fill_steps,
            validation_fraction=args.validation_fraction,
            test_fraction=args.test_fraction,
            start_date=args.start_date,
            end_date=args.end_date,
        )
        init_ray(settings.ray.auth_token_file)
        return run_preprocess(settings, params, run_ids=run_ids_from_env(os.environ)).summary()

    return run_job("preprocess", body)


def _step(value: str) -> int | str:
    """``--step-s``: ``auto`` or whole seconds between 10 and 3600."""
    if value == "auto":
        return value
    try:
        step = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'auto' or whole seconds, got {value!r}") from None
    if not 10 <= step <= 3600:
        raise argparse.ArgumentTypeError(f"must be between 10 and 3600 seconds, got {step}")
    return step
