"""Promote job: ``python -m jobs.promote [--model-name NAME] [--min-improvement X] [--rollout [--steps 0.1,0.5,1]]``.

Moves alias ``champion`` to the ``challenger`` version only when the challenger's skill against
persistence (15-min indoor air temperature) beats the champion's on the same test window
(the challenger's feature set; both models are evaluated now). Otherwise leaves the champion and
says why. With ``--rollout`` a challenger that passes starts a canary rollout instead (serving
replicas then judge it online, step by step, and promote or roll it back: docs/rollouts.md);
without a champion yet it is promoted directly. Prints one JSON summary line (exit 0 either way;
non-zero only on errors).
"""

from __future__ import annotations

from typing import Any

from app.entrypoints.runtime import add_model_name, init_ray, job_parser, run_job


def _steps(text: str) -> list[float]:
    """``"0.1,0.5,1"`` -> ``[0.1, 0.5, 1.0]`` (argparse reports the ValueError)."""
    return [float(part) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), decide the promotion, print the summary; the exit code."""
    parser = job_parser("promote", __doc__.split("\n\n")[1])
    add_model_name(parser)
    parser.add_argument("--min-improvement", type=float, default=0.0, help="skill margin the challenger must exceed (default 0)")
    parser.add_argument("--rollout", action="store_true", help="start a canary rollout of a passing challenger instead of moving champion at once")
    parser.add_argument("--steps", type=_steps, default=None, help="canary steps with --rollout, fractions of greenhouses ending at 1 (default: settings rollout.steps)")
    args = parser.parse_args(argv)
    if args.steps is not None and not args.rollout:
        parser.error("--steps needs --rollout")

    def body() -> dict:
        from app.config import load_settings
        from app.train.promotion import run_promotion

        settings = load_settings(args.config)
        init_ray(settings.ray.auth_token_file)  # both models forecast the test window with Ray Data
        model_name = args.model_name or settings.control.model_name
        if not args.rollout:
            return run_promotion(settings, model_name, min_improvement=args.min_improvement).summary()
        decision = run_promotion(settings, model_name, min_improvement=args.min_improvement, move_alias=False)
        return {**decision.summary(), **_rollout(settings, model_name, decision, args.steps)}

    return run_job("promote", body)


def _rollout(settings: Any, model_name: str, decision: Any, steps: list[float] | None) -> dict[str, Any]:
    """The summary fields of ``--rollout``: a challenger that passed the offline gate
    (``decision.promoted``) starts a canary rollout, or with no champion yet becomes champion at
    once; ``champion_version_after``/``alias_moved`` say where ``champion`` points now."""
    from app.control.rollout_store import CHAMPION, RolloutStore

    if not decision.promoted:
        return {"rollout_id": None}
    store = RolloutStore.from_settings(settings)
    try:
        if decision.champion_version_before is None:
            store.registry.set_alias(model_name, CHAMPION, decision.challenger_version)
            return {"rollout_id": None, "champion_version_after": decision.challenger_version, "alias_moved": True}
        plan = store.start(model_name, decision.challenger_version, mode="canary", steps=steps, by="job:promote", reason=decision.reason, champion_version=decision.champion_version_before)
    finally:
        store.close()
    return {
        "rollout_id": plan.rollout_id,
        "rollout_steps": list(plan.steps),
        "champion_version_after": decision.champion_version_before,
        "reason": f"{decision.reason}: canary rollout {plan.rollout_id} started",
    }
