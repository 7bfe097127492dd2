"""Batch prediction job: ``python -m jobs.batch_predict [--model-name NAME] [--alias A | --version V] [--window test]``.

Runs a registered model version (``--version``, or the one ``--alias`` points at, default
``champion``) over a window of a feature set (``--feature-set-id``, default the newest;
``--window`` train, validation or test, default test; ``--start``/``--end`` narrow it to a time
range) on the Ray cluster: Ray Data reads the window, a pool of inference actors (each loads the
model once, from this node's model cache when it holds the version) forecasts it batch by batch,
and the predictions go to the lake as Parquet under
``predictions/<model>/<version>/<feature_set_id>/<window>/`` (replaced when run again), recorded in
the ``batch_predictions`` metadata collection. Prints one JSON summary line: rows, files, path,
and RMSE, MAE and skill against persistence per forecast, pooled over the window. The promotion
gate uses the same stage for both models.
"""

from __future__ import annotations

import os
from datetime import datetime

from app.entrypoints.runtime import add_model_name, init_ray, job_parser, run_job


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), predict and write, print the summary; the exit code."""
    parser = job_parser("batch_predict", __doc__.split("\n\n")[1])
    add_model_name(parser)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--alias", default="champion", help="alias to resolve (default champion)")
    which.add_argument("--version", default=None, help="a registered version (instead of an alias)")
    parser.add_argument("--feature-set-id", help="default: the newest feature set")
    parser.add_argument("--window", choices=("train", "validation", "test"), default="test", help="window of the feature set (default test)")
    parser.add_argument("--start", type=datetime.fromisoformat, default=None, help="only rows from this time on (ISO 8601, UTC when no offset)")
    parser.add_argument("--end", type=datetime.fromisoformat, default=None, help="only rows before this time (ISO 8601, UTC when no offset)")
    parser.add_argument("--max-actors", type=int, default=2, help="inference actors at most, each loads the model once (default 2)")
    parser.add_argument("--no-write", action="store_true", help="score only; write nothing to the lake")
    args = parser.parse_args(argv)

    def body() -> dict:
        from app.config import load_settings
        from app.orchestration.run_ids import run_ids_from_env
        from app.train.batch_predict import BatchPredictParams, run_batch_predict

        settings = load_settings(args.config)
        init_ray(settings.ray.auth_token_file)
        params = BatchPredictParams(
            model_name=args.model_name,
            alias=args.alias,
            version=args.version,
            feature_set_id=args.feature_set_id,
            window=args.window,
            start=args.start,
            end=args.end,
            max_actors=args.max_actors,
            write=not args.no_write,
        )
        return run_batch_predict(settings, params, run_ids=run_ids_from_env(os.environ)).summary()

    return run_job("batch_predict", body)
