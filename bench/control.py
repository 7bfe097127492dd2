"""Season benchmark: the MPC against a tuned thermostat, per season, on twins the model never saw.

For each season week of the TMY3 year (winter 15-21 January, spring 15-21 April, summer 15-21
July; :mod:`app.season.weeks`), as one Ray job:

1. **model**: the training fleet (``--training-greenhouses`` seeded greenhouses under their
   climate computers) runs the ``--training-days`` before the week; the feature engine turns its
   readings into rows, and the training pipeline's in-process fit (physics prior, boosters
   stopped early on the last two days, calibrated 90 % interval edges) makes the model. One task
   per season.
2. **thermostat tuning**: the rule-based controller is tuned on the ``--tuning-days`` before the
   week, on the evaluation twins (a grower tunes his own greenhouse), by a three-stage sweep
   (heating, ventilation, screen: :mod:`app.season.sweep`): the cheapest setting whose time in
   band is within ``--tolerance-pts`` of the best any setting reached. One task per season and
   setting.
3. **evaluation**: ``--twins`` evaluation twins (other seeds, wider parameter variation than the
   training fleet: :mod:`app.season.twins`) run the week under the MPC (the controller core with
   the model in-process, its offset correction, deciding on the feature row serving would build)
   and under the tuned thermostat, the same days, the same twin. One task per twin and season.

Printed: the chosen tuning per season, then per season each figure's mean and spread (min..max)
over twins for both controllers, the margins (energy ratio, time-in-band and humidity
differences in points) and the verdict against the target (energy >= 10 % lower with time in
band at most 0.5 points lower and time above the humidity ceiling no higher; or >= 2 points more
time in band with no more energy). Written to ``--results``: ``results.json`` (every figure, per
twin), ``table.txt``, ``summary.png`` and ``week_<season>.png`` (the first twin's week under both
controllers). Progress lines go to stderr.

The MPC runs with ``control.*`` settings (interval edges recalibrated in closed loop, heating
reversals damped, ventilation's thrown-away heat costed, only the horizons heating can move);
``--set`` overrides any policy field for an experiment (``--set weights.rh_pct2=0.002``),
``--fixed-margin`` ignores the interval edges (the ablation: ``control.margin_c`` instead).
Oscillation shows in ``temp_travel_k_per_day`` (the climate's minute-to-minute travel),
``heat_travel_pct_per_day`` and ``heat_reversals_per_day``.

With ``--bound``, each twin's week also runs under the plant-knowing bound (:mod:`app.season.bound`:
the tuned thermostat's ventilation and screen, the least heat that keeps the band's lower edge
with perfect knowledge of the plant and the weather; one task per twin and season), and the table
adds per season the bound's energy against the thermostat's, its time in band and so the largest
saving any controller could reach by heating alone while holding the band's edge.

Quick runs: ``--twins 2 --days 2 --seasons winter``. Models are cached under ``--cache`` (by
season and training settings) so that a second run skips their fitting; ``--no-cache`` refits.
Ray: a local cluster of ``--cpus`` CPUs unless ``--address`` names one (or ``RAY_ADDRESS`` does).

    python bench/control.py [--twins 4] [--days 7] [--seasons winter,spring,summer] [--bound] [--results DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.config import Settings  # noqa: E402
from app.control.core import ControlPolicy  # noqa: E402
from app.control.policy import RuleTuning, ScreenRule  # noqa: E402
from app.season.bound import LOOKAHEAD_MIN, BoundRow, bound_row, format_bound_rows  # noqa: E402
from app.season.history import HistorySpec  # noqa: E402
from app.season.sweep import INSULATION_LIMIT_W_M2, STAGES, SweepPoint, Tuning, choose, stage_level  # noqa: E402
from app.season.table import Target, format_rows, season_row  # noqa: E402
from app.season.twins import TwinSpec, describe, evaluation_twins  # noqa: E402
from app.season.weeks import SeasonWeek, season_weeks  # noqa: E402

HORIZONS_MIN = (5, 15, 30)
"""The model's horizons: the MPC's cost counts up to ``control.cost_horizon_max_min`` (15)."""
STARTED = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- Ray tasks
def fit_season_model(week: SeasonWeek, history: HistorySpec, cache_dir: str | None) -> Any:
    """The season's model: from the cache when it is there, else fitted (and cached)."""
    from app.preprocess.features import FeatureParams, feature_columns
    from app.season.forecaster import fit_forecaster
    from app.season.history import training_rows
    from app.train.evaluate import evaluate
    from app.train.model import ForecastModel

    key = hashlib.sha256(json.dumps([week.name, week.start.isoformat(), asdict(history), HORIZONS_MIN]).encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"{week.name}-{key}" if cache_dir else None
    if path is not None and (path / "model.json").exists():
        model = ForecastModel.load(path)
        return model, json.loads((path / "skill.json").read_text())
    params = FeatureParams(horizons_min=HORIZONS_MIN)
    train, validation = training_rows(week, history, params)
    model = fit_forecaster(train, validation, feature_columns(), HORIZONS_MIN)
    model.feature_params = asdict(params)
    metrics = evaluate(model, validation)
    skill = {"train_rows": len(train), "validation_rows": len(validation), **{k: round(v, 3) for k, v in metrics.items() if k.startswith(("rmse_air", "skill_air"))}}
    if path is not None:
        model.save(path)
        (path / "skill.json").write_text(json.dumps(skill))
    return model, skill


def sweep_point(week: SeasonWeek, twins: list[TwinSpec], tuning: Tuning, base: ControlPolicy, tuning_days: float) -> SweepPoint:
    """One setting of the thermostat on the tuning days, on every twin (means over twins)."""
    from app.season.trial import TrialController, run_trial

    results = [run_trial(t, week.tuning_start(tuning_days), tuning_days, TrialController("thermostat", tuning.policy(base)), window=f"{week.name} tuning").figures for t in twins]
    n = len(results)
    return SweepPoint(tuning, sum(r.in_band_pct for r in results) / n, sum(r.heating_kwh for r in results) / n, sum(r.rh_above_pct for r in results) / n)


def evaluate_twin(week: SeasonWeek, twin: TwinSpec, model: Any, tuning: Tuning, mpc_policy: ControlPolicy, base: ControlPolicy, intervals: bool, keep_series: bool) -> tuple[Any, Any]:
    """One twin's week under the MPC and under the tuned thermostat."""
    from app.contracts.command import ModelRef
    from app.season.forecaster import model_feature_params, model_forecaster
    from app.season.trial import TrialController, run_trial

    forecaster = model_forecaster(model, ModelRef(name=f"season-{week.name}", version="1"), intervals=intervals)
    params = model_feature_params(model)
    mpc = run_trial(twin, week.start, week.days, TrialController("MPC", tuning.policy(mpc_policy), forecaster, params), window=week.name, keep_series=keep_series)
    thermo = run_trial(twin, week.start, week.days, TrialController("thermostat", tuning.policy(base)), window=week.name, keep_series=keep_series)
    return mpc, thermo


def bound_twin(week: SeasonWeek, twin: TwinSpec, tuning: Tuning, base: ControlPolicy, lookahead_min: float) -> Any:
    """One twin's week under the plant-knowing bound (the tuned thermostat's ventilation and
    screen, the least heat that keeps the band's lower edge)."""
    from app.season.bound import run_bound_trial

    return run_bound_trial(twin, week.start, week.days, tuning, base, lookahead_min=lookahead_min, window=week.name)


# ----------------------------------------------------------------------------- the job
def with_overrides(policy: ControlPolicy, pairs: list[str]) -> ControlPolicy:
    """``policy`` with ``field=value`` or ``part.field=value`` overrides (``part``: targets,
    weights, rule or screen_rule; values in JSON: 0.5, 30, null, true)."""
    for pair in pairs:
        path, _, text = pair.partition("=")
        value = json.loads(text)
        part, _, name = path.partition(".")
        if name:
            policy = replace(policy, **{part: replace(getattr(policy, part), **{name: value})})
        else:
            policy = replace(policy, **{part: value})
    return policy


def policies(args: argparse.Namespace) -> tuple[ControlPolicy, ControlPolicy]:
    """The thermostat's base policy (settings) and the MPC's (settings, with ``--set``)."""
    base = ControlPolicy.from_settings(Settings())
    return base, with_overrides(base, args.set)


def tuning_cache(week: SeasonWeek, twins: list[TwinSpec], base: ControlPolicy, args: argparse.Namespace) -> Path | None:
    """Where the sweep's choice for ``week`` is cached (``None``: no cache)."""
    if args.no_cache:
        return None
    days = float(args.tuning_days or week.days)  # the tuning window, whatever the evaluation's length
    thermostat = (base.limits, base.targets.band_low_c, base.targets.band_high_c, base.targets.rh_max_pct, base.interval_s, base.command_ttl_s)  # all the rule reads
    key = json.dumps(
        [week.name, week.tuning_start(days).isoformat(), days, [asdict(t) for t in twins], args.tolerance_pts, [[t.label() for t in stage(Tuning())] for stage in STAGES], repr(thermostat)],
        default=str,
    )
    return Path(args.cache) / f"tuning-{week.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"


def load_point(path: Path) -> SweepPoint:
    doc = json.loads(path.read_text())
    tuning = Tuning(RuleTuning(**doc["tuning"]["rule"]), ScreenRule(**doc["tuning"]["screen"]))
    return SweepPoint(tuning, doc["in_band_pct"], doc["heating_kwh"], doc["rh_above_pct"])


def tune(ray: Any, task: Any, weeks: list[SeasonWeek], twins: list[TwinSpec], base: ControlPolicy, args: argparse.Namespace) -> dict[str, SweepPoint]:
    """The sweep's stages for every season at once (those not cached); the chosen setting per
    season."""
    cached = {w.name: path for w in weeks if (path := tuning_cache(w, twins, base, args)) is not None and path.exists()}
    picked = {name: load_point(path) for name, path in cached.items()}
    for name, p in picked.items():
        progress(f"{name}: tuning from the cache: {p.in_band_pct:.2f} % in band, {p.heating_kwh:.0f} kWh")
    weeks = [w for w in weeks if w.name not in picked]
    twins_ref = ray.put(twins)
    chosen = {w.name: Tuning() for w in weeks}
    levels = dict.fromkeys(chosen, 0.0)
    seen: dict[tuple[str, Tuning], Any] = {}
    for number, stage in enumerate(STAGES, 1):
        refs = {}
        for w in weeks:
            for tuning in stage(chosen[w.name]):
                if (w.name, tuning) not in seen:
                    seen[(w.name, tuning)] = task.remote(w, twins_ref, tuning, base, args.tuning_days or w.days)
                refs[(w.name, tuning)] = seen[(w.name, tuning)]
        points = dict(zip(refs, ray.get(list(refs.values()))))
        for w in weeks:
            mine = [p for (name, _), p in points.items() if name == w.name]
            levels[w.name] = stage_level(mine, levels[w.name], args.tolerance_pts)
            picked[w.name] = choose(mine, levels[w.name])
            chosen[w.name] = picked[w.name].tuning
            p = picked[w.name]
            progress(f"{w.name}: sweep stage {number}/{len(STAGES)} ({len(mine)} settings): level {levels[w.name]:.2f} %, chose {p.in_band_pct:.2f} % in band, {p.heating_kwh:.0f} kWh")
    for w in weeks:
        path = tuning_cache(w, twins, base, args)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(asdict(picked[w.name])))
    return picked


def run(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    weeks = season_weeks([s.strip() for s in args.seasons.split(",") if s.strip()], args.days)
    twins = evaluation_twins(args.twins, args.twin_seed)
    history = HistorySpec(greenhouses=args.training_greenhouses, training_days=args.training_days)
    base, mpc_policy = policies(args)
    address = args.address or os.environ.get("RAY_ADDRESS")
    ray.init(address=address, log_to_driver=False) if address else ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    progress(f"Ray up ({ray.cluster_resources().get('CPU', 0):.0f} CPUs); seasons {[w.name for w in weeks]}, {len(twins)} twins, {args.days} days")
    fit_task = ray.remote(num_cpus=1)(fit_season_model)
    models = {w.name: fit_task.remote(w, history, None if args.no_cache else str(args.cache)) for w in weeks}
    picked = tune(ray, ray.remote(num_cpus=1)(sweep_point), weeks, twins, base, args)
    eval_task = ray.remote(num_cpus=1)(evaluate_twin)
    pending, skills = {}, {}
    for w in weeks:
        model, skills[w.name] = ray.get(models[w.name])
        progress(f"{w.name}: model ready, {skills[w.name]}")
        model_ref = ray.put(model)
        for i, twin in enumerate(twins):
            pending[eval_task.remote(w, twin, model_ref, picked[w.name].tuning, mpc_policy, base, not args.fixed_margin, i == 0)] = (w.name, twin.twin_id)
    bounds_pending = {}
    if args.bound:
        bound_task = ray.remote(num_cpus=1)(bound_twin)
        bounds_pending = {bound_task.remote(w, twin, picked[w.name].tuning, base, args.bound_lookahead_min): (w.name, twin.twin_id) for w in weeks for twin in twins}
    results: dict[tuple[str, str], tuple[Any, Any]] = {}
    bounds: dict[tuple[str, str], Any] = {}
    while pending or bounds_pending:
        done, _ = ray.wait([*pending, *bounds_pending], num_returns=1)
        left = len(pending) + len(bounds_pending) - 1
        if done[0] in bounds_pending:
            name = bounds_pending.pop(done[0])
            bounds[name] = b = ray.get(done[0])
            progress(f"{name[0]} {name[1]} bound done: {b.figures.in_band_pct:.2f} % in band / {b.figures.heating_kwh:.0f} kWh ({left} left)")
            continue
        name = pending.pop(done[0])
        results[name] = ray.get(done[0])
        m, t = results[name]
        progress(
            f"{name[0]} {name[1]} done: MPC {m.figures.in_band_pct:.2f} % / {m.figures.heating_kwh:.0f} kWh, thermostat {t.figures.in_band_pct:.2f} % / {t.figures.heating_kwh:.0f} kWh ({left} left)"
        )
    ray.shutdown()
    return {"weeks": weeks, "twins": twins, "picked": picked, "results": results, "bounds": bounds, "skills": skills, "mpc_policy": mpc_policy}


def bound_rows(out: dict[str, Any], args: argparse.Namespace) -> list[BoundRow]:
    """Per season, the bound against the tuned thermostat on the same twins (none without
    ``--bound``)."""
    if not out["bounds"]:
        return []
    weeks, twins, results, bounds = out["weeks"], out["twins"], out["results"], out["bounds"]
    return [bound_row(w.name, [(bounds[(w.name, t.twin_id)].figures, results[(w.name, t.twin_id)][1].figures) for t in twins], args.bound_lookahead_min) for w in weeks]


def report(out: dict[str, Any], args: argparse.Namespace) -> str:
    """The table, the JSON and the plots; returns the table's text."""
    from app.season.plots import plot_summary, plot_week

    weeks, twins, results = out["weeks"], out["twins"], out["results"]
    rows = [season_row(w.name, [(results[(w.name, t.twin_id)][0].figures, results[(w.name, t.twin_id)][1].figures) for t in twins], Target()) for w in weeks]
    lines = ["Tuned thermostat per season (sweep on the tuning days, same twins):"]
    for w in weeks:
        p = out["picked"][w.name]
        lines.append(f"  {w.name}: {p.tuning.label()} ({p.in_band_pct:.2f} % in band, {p.heating_kwh:.0f} kWh per twin on the tuning days)")
    lines.append("Models (validation on the training fleet's last 2 days):")
    lines += [f"  {w.name}: {out['skills'][w.name]}" for w in weeks]
    lines.append("Evaluation twins (ratio to the default glasshouse):")
    lines += [f"  {t.twin_id}: {describe(t.params)}" for t in twins]
    lines.append(format_rows(rows))
    limits = bound_rows(out, args)
    if limits:
        lines.append(format_bound_rows(limits, {r.season: r.energy_ratio for r in rows}))
    text = "\n".join(lines)
    directory = Path(args.results)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "table.txt").write_text(text + "\n")
    band = (out["mpc_policy"].targets.band_low_c, out["mpc_policy"].targets.band_high_c)
    for w in weeks:
        mpc, thermo = results[(w.name, twins[0].twin_id)]
        plot_week(mpc, thermo, band, directory / f"week_{w.name}.png")
    plot_summary(rows, directory / "summary.png")
    doc = {
        "args": vars(args) | {"results": str(args.results), "cache": str(args.cache)},
        "weeks": {w.name: {"start": w.start.isoformat(), "days": w.days} for w in weeks},
        "tuning": {w.name: asdict(out["picked"][w.name]) for w in weeks},
        "models": out["skills"],
        "mpc_policy": {
            "targets": asdict(out["mpc_policy"].targets),
            "weights": asdict(out["mpc_policy"].weights),
            "screen_insulate_below_solar_w_m2": out["mpc_policy"].screen_insulate_below_solar_w_m2,
        },
        "rows": [r.as_dict() for r in rows],
        "per_twin": {f"{s}/{t}": {"mpc": m.figures.as_dict(), "thermostat": th.figures.as_dict()} for (s, t), (m, th) in results.items()},
    }
    if limits:
        doc["bound"] = {r.season: r.as_dict() for r in limits}
        for (s, t), b in out["bounds"].items():
            doc["per_twin"][f"{s}/{t}"]["bound"] = b.figures.as_dict()
    (directory / "results.json").write_text(json.dumps(doc, indent=2, default=str))
    return text


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--twins", type=int, default=4, help="evaluation twins per season (default 4)")
    parser.add_argument("--days", type=float, default=7.0, help="evaluation days per season (default 7)")
    parser.add_argument("--seasons", default="winter,spring,summer", help="comma-separated: winter, spring, summer")
    parser.add_argument("--tuning-days", type=float, default=None, help="the thermostat's tuning days before each week (default: --days)")
    parser.add_argument("--tolerance-pts", type=float, default=0.5, help="the tuned thermostat keeps time in band within this many points of the sweep's best (default 0.5)")
    parser.add_argument("--training-days", type=float, default=14.0, help="the model's training days before each week (default 14; the last 2 validate)")
    parser.add_argument("--training-greenhouses", type=int, default=4, help="greenhouses of the training fleet (default 4)")
    parser.add_argument("--twin-seed", type=int, default=7_000, help="seed of the evaluation twins (default 7000)")
    parser.add_argument("--fixed-margin", action="store_true", help="the MPC ignores the model's interval edges (control.margin_c instead): the ablation")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help=f"an MPC policy override (ControlPolicy field, or targets./weights./rule./screen_rule. field; JSON value), e.g. weights.rh_pct2=0.002, targets.edge_scale=0.5, screen_insulate_below_solar_w_m2={INSULATION_LIMIT_W_M2:.0f}; repeatable",
    )
    parser.add_argument("--bound", action="store_true", help="also run each twin's week under the plant-knowing bound (the least heat that keeps the band's lower edge: app.season.bound)")
    parser.add_argument("--bound-lookahead-min", type=float, default=LOOKAHEAD_MIN, help=f"how far the bound's oracle looks ahead (default {LOOKAHEAD_MIN:g} min)")
    parser.add_argument("--results", type=Path, default=REPO / ".greenhouse" / "bench-control" / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ"), help="where the table, JSON and plots go")
    parser.add_argument("--cache", type=Path, default=REPO / ".greenhouse" / "bench-control" / "models", help="fitted models by season and training settings")
    parser.add_argument("--no-cache", action="store_true", help="fit the models again")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster (default 2)")
    parser.add_argument("--address", default=None, help="a Ray cluster to run on (default: RAY_ADDRESS, else a local one)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    out = run(args)
    text = report(out, args)
    print(text)
    progress(f"done in {time.monotonic() - STARTED:.0f} s; results in {args.results}")
    return 0  # a measurement: the verdicts are in the table


if __name__ == "__main__":
    sys.exit(main())
