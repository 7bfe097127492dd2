"""``greenhouse rollout ...``: roll a new version of the control model out, step by step.

    greenhouse rollout start --candidate 7            canary: 10%, 50%, then all greenhouses
    greenhouse rollout start --candidate 7 --blue-green
    greenhouse rollout start --candidate 7 --shadow-only
    greenhouse rollout status [--json]                state, live figures, the step log
    greenhouse rollout promote --reason "..."         the candidate becomes champion now
    greenhouse rollout abort --reason "..."           the champion serves everything again

Serving replicas judge the active rollout after each control interval and advance it, roll it back
or promote it by themselves (docs/rollouts.md has the rules); these commands start one, show it,
and let an operator end it early.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app.config import Settings
from app.control.rollout import RolloutPlan, VersionFigures, judge
from app.control.rollout_store import RolloutStore

HELP = """Canary, blue-green and shadow rollouts of the control model (the registered model the
control app serves at alias champion).

canary: the candidate serves a growing share of the greenhouses (--steps, default 0.1,0.5,1); each
step is judged on the online forecast errors and the time in band of both versions, then the
rollout advances, rolls back, or at the last step promotes the candidate to champion.

blue-green: the candidate first shadows every greenhouse (forecasts, does not decide), then all
greenhouses switch to it at once; judged like a canary.

shadow: the candidate only shadows; it is never promoted by itself: promote or abort by hand.
"""

app = typer.Typer(name="rollout", help=HELP, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console(stderr=True)  # messages; what scripts read goes to stdout

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML settings file (GH_* environment variables override it).")
ModelOpt = typer.Option(None, "--model-name", help="Registered model (default: the settings' control.model_name).")
ReasonOpt = typer.Option("", "--reason", help="Why (kept in the step log).")


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


ByOpt = typer.Option(None, "--by", help="Who does it, for the step log (default: cli:<login user>).")


def open_store(settings: Settings) -> RolloutStore:
    """The rollout store of ``settings`` (tests replace this)."""
    return RolloutStore.from_settings(settings)


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


@contextmanager
def _session(config: Path | None, model_name: str | None) -> Iterator[tuple[RolloutStore, str]]:
    """The store and the model name; a bad setting or a refused action is one message, exit 2."""
    from app.config import load_settings

    try:
        settings = load_settings(config)
        store = open_store(settings)
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(f"invalid settings: {exc}") from None
    try:
        yield store, model_name or settings.control.model_name
    except ValueError as exc:
        raise _fail(str(exc)) from None
    finally:
        store.close()


def _parse_steps(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise _fail(f"--steps takes fractions separated by commas (e.g. 0.1,0.5,1), got {text!r}") from None


@app.command()
def start(
    candidate: str = typer.Option(..., "--candidate", help="The registered version to roll out (e.g. 7)."),
    model_name: str | None = ModelOpt,
    steps: str | None = typer.Option(None, "--steps", help="Canary steps: fractions of greenhouses on the candidate, ending at 1 (default: settings rollout.steps, 0.1,0.5,1)."),
    blue_green: bool = typer.Option(False, "--blue-green", help="Blue-green: the candidate shadows all greenhouses, then all switch at once (steps 0,1)."),
    shadow_only: bool = typer.Option(False, "--shadow-only", help="Shadow: the candidate only forecasts alongside the champion; never promoted by itself."),
    error_margin_c: float | None = typer.Option(None, "--error-margin-c", min=0, help="Roll back when the candidate's forecast RMSE exceeds the champion's by more than this (default: settings)."),
    in_band_margin_pct: float | None = typer.Option(
        None, "--in-band-margin-pct", min=0, max=100, help="Roll back when the candidate's time in band is this many points below the champion's (default: settings)."
    ),
    min_errors: int | None = typer.Option(None, "--min-errors", min=1, help="Settled forecast errors of each version needed before a step is judged (default: settings)."),
    by: str | None = ByOpt,
    reason: str = ReasonOpt,
    config: Path | None = ConfigOpt,
) -> None:
    """Start rolling a version out against the champion (canary unless --blue-green or --shadow-only)."""
    if blue_green and shadow_only:
        raise _fail("choose one of --blue-green and --shadow-only")
    mode = "blue_green" if blue_green else "shadow" if shadow_only else "canary"
    if steps is not None and mode != "canary":
        raise _fail(f"--steps is for a canary rollout; {mode.replace('_', '-')} has fixed steps")
    with _session(config, model_name) as (store, name):
        plan = store.start(
            name,
            candidate,
            mode=mode,
            steps=_parse_steps(steps) if steps is not None else None,
            by=by or f"cli:{_login()}",
            reason=reason,
            error_margin_c=error_margin_c,
            in_band_margin_pct=in_band_margin_pct,
            min_errors_per_step=min_errors,
        )
    typer.echo(plan.rollout_id)
    console.print(
        f"{plan.mode} rollout {plan.rollout_id} of {escape(name)}: version {plan.candidate_version} against champion {plan.champion_version}, steps {', '.join(f'{s:g}' for s in plan.steps)}"
    )


@app.command()
def status(model_name: str | None = ModelOpt, as_json: bool = typer.Option(False, "--json", help="Print one JSON document instead of tables."), config: Path | None = ConfigOpt) -> None:
    """The newest rollout of the model: its state, the live figures of both versions, the step log."""
    with _session(config, model_name) as (store, name):
        plan = store.active(name) or store.latest(name)
        if plan is None:
            if as_json:
                typer.echo(json.dumps({"model_name": name, "rollout": None}))
                return
            raise _fail(f"no rollout of {name!r} yet")
        champion, candidate = store.figures(plan)
        history = store.history(plan.rollout_id)
    verdict = judge(plan, champion, candidate)
    if as_json:
        body = {
            "model_name": name,
            "rollout": plan.to_document(),
            "fraction": plan.fraction,
            "figures": verdict.figures(),
            "next": {"action": verdict.action, "reason": verdict.reason},
            "history": history,
        }
        typer.echo(json.dumps(body, default=str))
        return
    _print_status(plan, champion, candidate, f"{verdict.action}: {verdict.reason}", history)


def _print_status(plan: RolloutPlan, champion: VersionFigures, candidate: VersionFigures, next_step: str, history: list[dict[str, Any]]) -> None:
    steps = ", ".join(f"[bold]{s:g}[/bold]" if i == plan.step_index and plan.status == "active" else f"{s:g}" for i, s in enumerate(plan.steps))
    console.print(f"rollout {plan.rollout_id} of {escape(plan.model_name)} ({plan.mode}, {plan.status}): candidate {plan.candidate_version} against champion {plan.champion_version}")
    console.print(f"steps {steps}; step started {_cell(plan.step_started_at)}; started {_cell(plan.started_at)} by {escape(plan.started_by)}")
    figures = Table(title="since the step started")
    for column in ("version", "role", "decisions", "in band %", f"{plan.horizon_min}-min errors", "forecast RMSE C"):
        figures.add_column(column)
    for role, version, f in (("champion", plan.champion_version, champion), ("candidate", plan.candidate_version, candidate)):
        figures.add_row(version, role, str(f.decisions), _cell(f.in_band_pct), str(f.errors_n), _cell(f.forecast_rmse_c))
    console.print(figures)
    if plan.status == "active":
        console.print(f"next: {escape(next_step)}")
    log = Table(title="step log")
    for column in ("at", "event", "fraction", "by", "reason"):
        log.add_column(column)
    for doc in history:
        log.add_row(_cell(doc.get("at")), str(doc.get("event")), _cell(doc.get("fraction")), escape(str(doc.get("by"))), escape(str(doc.get("reason"))))
    console.print(log)


def _cell(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.3g}"
    return "-" if value is None else str(value)


@app.command()
def promote(model_name: str | None = ModelOpt, reason: str = ReasonOpt, by: str | None = ByOpt, config: Path | None = ConfigOpt) -> None:
    """Promote the active rollout's candidate to champion now, whatever its step (the old champion keeps alias previous-champion)."""
    with _session(config, model_name) as (store, name):
        plan = store.promote(name, by=by or f"cli:{_login()}", reason=reason)
    console.print(f"version {plan.candidate_version} of {escape(name)} is champion (was {plan.champion_version}); rollout {plan.rollout_id} promoted")


@app.command()
def abort(model_name: str | None = ModelOpt, reason: str = ReasonOpt, by: str | None = ByOpt, config: Path | None = ConfigOpt) -> None:
    """Stop the active rollout: the champion serves every greenhouse again; aliases stay as they are."""
    with _session(config, model_name) as (store, name):
        plan = store.abort(name, by=by or f"cli:{_login()}", reason=reason)
    console.print(f"rollout {plan.rollout_id} aborted: champion {plan.champion_version} of {escape(name)} serves every greenhouse")
