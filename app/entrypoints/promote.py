"""Promote job: ``python -m jobs.promote [--model-name NAME] [--min-improvement X]``.

Moves alias ``champion`` to the ``challenger`` version only when the challenger's skill against
persistence (15-min indoor air temperature) beats the champion's on the same validation window
(the challenger's feature set; both models are evaluated now). Otherwise leaves the champion and
says why. Prints one JSON summary line (exit 0 either way; non-zero only on errors).
"""

from __future__ import annotations

from app.entrypoints.runtime import add_model_name, job_parser, run_job


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), decide the promotion, print the summary; the exit code."""
    parser = job_parser("promote", __doc__.split("\n\n")[1])
    add_model_name(parser)
    parser.add_argument("--min-improvement", type=float, default=0.0, help="skill margin the challenger must exceed (default 0)")
    args = parser.parse_args(argv)

    def body() -> dict:
        from app.config import load_settings
        from app.train.pipeline import run_promotion

        settings = load_settings(args.config)
        model_name = args.model_name or settings.control.model_name
        return run_promotion(settings, model_name, min_improvement=args.min_improvement).summary()

    return run_job("promote", body)
