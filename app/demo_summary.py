"""The demo's result and how it reads: the summary, its rows (terminal table and HTML report), the
verdict of model-based control against the thermostat."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DemoSummary:
    """The demo's result; ``ok`` is the exactly-once check (lake rows == accepted readings)."""

    greenhouses: int
    simulated_days: float
    readings_generated: int = 0
    readings_accepted: int = 0
    readings_rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    request_p50_ms: float = 0.0
    request_p99_ms: float = 0.0
    lake_rows: int = 0
    lake_files: int = 0
    batch_documents: int = 0
    dead_letters: int = 0
    sink_duplicates: int = 0
    elapsed_s: float = 0.0
    data_dir: str = ""
    gateway_url: str = ""
    security: str = ""
    ok: bool = False
    # learning path
    feature_set_id: str = ""
    feature_rows: int = 0
    tune_trials: int = 0
    tune_stopped_early: int = 0
    model_version: str = ""
    forecast_skill_15min: float | None = None
    """On the untouched test window."""
    forecast_skill_15min_ci: tuple[float, float] | None = None
    validation_skill_15min: float | None = None
    interval_coverage_15min: float | None = None
    """The share of test-window outcomes inside the nominal 90 % interval."""
    promoted: bool = False
    candidates: dict[str, str] = field(default_factory=dict)
    """Versions trained for the rollout drill: label (good, degraded) -> version."""
    rollouts: list[dict[str, Any]] = field(default_factory=list)
    version_errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    champion_after: str = ""
    # control
    control: dict[str, Any] = field(default_factory=dict)
    control_verdict: str = ""
    report: str = ""
    stage_s: dict[str, float] = field(default_factory=dict)


def _skill_text(s: DemoSummary) -> str:
    if s.forecast_skill_15min is None:
        return "-"
    ci = f" [{s.forecast_skill_15min_ci[0]:.3f}, {s.forecast_skill_15min_ci[1]:.3f}]" if s.forecast_skill_15min_ci else ""
    validation = f" ({s.validation_skill_15min:.3f})" if s.validation_skill_15min is not None else ""
    return f"{s.forecast_skill_15min:.3f}{ci}{validation}"


def control_verdict(model_in_band: float, model_kwh: float, thermo_in_band: float, thermo_kwh: float, model_rh_above: float = 0.0, thermo_rh_above: float = 0.0) -> str:
    """Whether the model-based controller did better than the thermostat, and by how much: the
    season benchmark's target (:func:`app.season.table.verdict`: >= 10 % less heating with at
    most 0.5 points less time in band, or >= 2 points more time in band with no more heating;
    humidity no worse either way), its margins, and both controllers' figures."""
    from app.season.table import verdict

    energy_ratio = model_kwh / thermo_kwh if thermo_kwh > 0 else (1.0 if model_kwh <= 0 else float("inf"))
    met, said = verdict(energy_ratio, model_in_band - thermo_in_band, model_rh_above - thermo_rh_above)
    figures = f"MPC {model_in_band:.1f}% in band with {model_kwh:.1f} kWh vs thermostat {thermo_in_band:.1f}% with {thermo_kwh:.1f} kWh"
    return f"{'better' if met else 'not better'}: {said.split(': ', 1)[1]}; {figures}"


def _rollout_rows(s: DemoSummary) -> list[tuple[str, str]]:
    rows = []
    for r in s.rollouts:
        events = " -> ".join(f"{step['event']}" + (f" {step['fraction']:g}" if step["event"] in ("start", "advance") else "") for step in r["steps"])
        rows.append((f"rollout {r['rollout_id']} ({r['label']} v{r['candidate']})", f"{r['status']}: {events}"))
    for version, f in s.version_errors.items():
        rmse = "-" if f.get("forecast_rmse_c") is None else f"{f['forecast_rmse_c']:.3f}"
        rows.append((f"v{version}: online 15-min RMSE °C (errors) / decisions", f"{rmse} ({f.get('errors_n', 0)}) / {f.get('decisions', 0)}"))
    if s.champion_after:
        rows.append(("champion after the run", f"v{s.champion_after}"))
    if s.rollouts:
        expected = all(r["status"] == r["expected"] for r in s.rollouts)
        rows.append(("rollout drill", "as expected (degraded rolled back, good promoted)" if expected else "NOT as expected: " + ", ".join(f"{r['label']} {r['status']}" for r in s.rollouts)))
    return rows


def summary_rows(s: DemoSummary) -> list[tuple[str, str]]:
    """The demo's summary as (what, value) rows, for the terminal table and the HTML report."""
    rows = [
        ("greenhouses x simulated days", f"{s.greenhouses} x {s.simulated_days:g}"),
        ("readings generated", str(s.readings_generated)),
        ("readings accepted (HTTP 200)", str(s.readings_accepted)),
        ("readings rejected", str(s.readings_rejected)),
        *[(f"  rejected: {reason}", str(n)) for reason, n in sorted(s.rejected_by_reason.items())],
        ("dead-lettered records", str(s.dead_letters)),
        ("ingest HTTPS requests (p50 / p99 ms)", f"{s.requests} ({s.request_p50_ms} / {s.request_p99_ms})"),
        ("security", s.security or "-"),
        ("rows added to the lake", str(s.lake_rows)),
        ("duplicates dropped by the sink", str(s.sink_duplicates)),
        ("Parquet files / batch documents", f"{s.lake_files} / {s.batch_documents}"),
        ("lake rows + duplicates == accepted", "yes" if s.lake_rows + s.sink_duplicates == s.readings_accepted else "NO"),
    ]
    if s.feature_set_id:
        rows += [
            ("feature set (rows)", f"{s.feature_set_id} ({s.feature_rows})"),
            ("tune trials (stopped early by ASHA)", f"{s.tune_trials} ({s.tune_stopped_early})"),
            ("model version (promoted to champion)", f"{s.model_version} ({'yes' if s.promoted else 'no'})"),
            ("15-min forecast skill vs persistence: test window [90 % interval] (validation)", _skill_text(s)),
            ("90 % forecast interval: share of test outcomes inside", "-" if s.interval_coverage_15min is None else f"{100 * s.interval_coverage_15min:.1f}%"),
        ]
    c = s.control
    if c:
        rows += [
            ("15-min forecast RMSE online (persistence) °C", f"{c['online_forecast_rmse_c']} ({c['online_persistence_rmse_c']})"),
            ("time inside band: model / thermostat %", f"{c['model_in_band_pct']} / {c['thermostat_in_band_pct']}"),
            ("heating energy: model / thermostat kWh", f"{c['model_heating_kwh']} / {c['thermostat_heating_kwh']}"),
            ("mean indoor temp: model / thermostat °C", f"{c['model_mean_temp_c']} / {c['thermostat_mean_temp_c']}"),
            ("time humidity above ceiling: model / thermostat %", f"{c.get('model_rh_above_max_pct')} / {c.get('thermostat_rh_above_max_pct')}"),
            ("control loop decisions (by mode; missed)", f"{c['control_requests']} {c['control_modes']}; {c.get('control_missed', 0)}"),
            ("decisions by model version", str(c.get("versions_serving", {}))),
            ("commands applied by the greenhouses", str(c["commands_applied"])),
            ("/forecast latency p50 / p99 ms", f"{c['forecast_p50_ms']} / {c['forecast_p99_ms']}"),
            ("control loop: readings posted to commands applied p50 / p99 ms", f"{c['control_p50_ms']} / {c['control_p99_ms']}"),
            ("model vs thermostat", s.control_verdict),
        ]
    rows += _rollout_rows(s)
    rows += [(f"stage: {k} s", str(v)) for k, v in s.stage_s.items()]
    if s.elapsed_s:
        rows.append(("elapsed s", str(s.elapsed_s)))
    rows.append(("data dir", s.data_dir))
    if s.report:
        rows.append(("report", s.report))
    return rows
