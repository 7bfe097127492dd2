"""Closed-loop control of simulated greenhouses through the Serve app, next to a thermostat baseline.

Two fleets with the same greenhouses, weather and start run side by side for the same simulated
day:

- the *model* fleet posts its readings to the ingest gateway over HTTPS; the control loop service
  (:class:`~app.serve.control_loop.ControlLoop`, on the readings' clock: the plant is simulated)
  decides every greenhouse once per control interval from the sensor topic it follows, the signed
  command goes out on the control topic, and an :class:`~app.control.dispatch.ActuatorEndpoint`
  applies it to the twin; this loop only waits for each interval's commands (and asks
  ``POST /climate/forecast`` for each greenhouse, to measure its latency);
- the *thermostat* fleet is driven by the same controller core
  (:class:`~app.control.core.Controller`) without a forecaster, i.e. by its thermostat, at the
  same interval and under the same limits.

The result holds time inside the band and heating energy for both, forecast and control latency,
and the series behind the report's plots.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any

import httpx

from app.config import Settings
from app.contracts.vocabulary import forecast_key
from app.control.core import Controller, ControlPolicy, thermostat_state
from app.control.loop_ledger import interval_start


@dataclass
class ControllerResult:
    """How one controller did over the run (all greenhouses)."""

    name: str
    in_band_pct: float = 0.0
    heating_kwh: float = 0.0
    mean_temp_c: float = 0.0
    rh_above_max_pct: float = 0.0
    """Share of the time the indoor humidity was above the ceiling (``control.rh_max_pct``)."""


@dataclass
class ClosedLoopResult:
    model: ControllerResult
    thermostat: ControllerResult
    control_requests: int = 0
    """Decisions of the control loop that reached the twins in their interval."""
    control_missed: int = 0
    """Greenhouse-intervals whose command did not arrive within the wait."""
    control_modes: dict[str, int] = field(default_factory=dict)
    versions_serving: dict[str, int] = field(default_factory=dict)
    """Model version -> decisions it made."""
    commands_applied: int = 0
    control_p50_ms: float = 0.0
    """From the interval's readings posted to every greenhouse's command applied (p50, p99)."""
    control_p99_ms: float = 0.0
    forecast_p50_ms: float = 0.0
    forecast_p99_ms: float = 0.0
    online_forecast_rmse_c: float | None = None
    online_persistence_rmse_c: float | None = None
    # series for the report: per greenhouse, per step
    series: dict[str, dict[str, list[Any]]] = field(default_factory=dict)

    @property
    def online_skill(self) -> float | None:
        if not self.online_forecast_rmse_c or not self.online_persistence_rmse_c:
            return None
        return 1.0 - self.online_forecast_rmse_c / self.online_persistence_rmse_c


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class _Run:
    """One closed-loop run: both fleets, the actuator side, and what is counted."""

    def __init__(self, settings: Settings, greenhouses: int, first: datetime, step_s: float, seed: int, forecast_horizon_min: int) -> None:
        from app.bus import open_bus
        from app.control.dispatch import ActuatorEndpoint
        from app.sim.actuators import FleetActuators
        from app.sim.fleet import FleetSimulator

        policy = ControlPolicy.from_settings(settings)
        self.targets, self.baseline = policy.targets, Controller(policy)
        self.horizon_min = forecast_horizon_min
        self.model_fleet = FleetSimulator(greenhouses, first, step_s=step_s, seed=seed)
        self.thermo_fleet = FleetSimulator(greenhouses, first, step_s=step_s, seed=seed)
        self.ids = self.model_fleet.greenhouse_ids
        self.actuators = FleetActuators(self.model_fleet)
        self.endpoint = ActuatorEndpoint(settings, open_bus(settings.bus_url, topics=settings.topics), self.actuators, set(self.ids), clock=lambda: self.model_fleet.now)
        self.result = ClosedLoopResult(ControllerResult("model (MPC)"), ControllerResult("thermostat"))
        self.series = {gh: {k: [] for k in SERIES_KEYS} for gh in self.ids}
        self.control_ms: list[float] = []
        self.forecast_ms: list[float] = []
        self.in_band = {"model": 0, "thermo": 0}
        self.humid = {"model": 0, "thermo": 0}
        self.samples = 0
        self.start_counting()

    def start_counting(self) -> None:
        """Heating energy counts from here (the warm-up is over)."""
        self.energy0 = {gh: (self.model_fleet.heating_energy_kwh(gh), self.thermo_fleet.heating_energy_kwh(gh)) for gh in self.ids}

    def record(self, now: datetime) -> None:
        """Both fleets' climate at ``now``, into the series and the counts."""
        t = self.targets
        for gh in self.ids:
            m, th = self.model_fleet.state(gh), self.thermo_fleet.state(gh)
            s = self.series[gh]
            for key, value in (
                ("ts", now),
                ("model_temp_c", m.air_temp_c),
                ("thermo_temp_c", th.air_temp_c),
                ("outside_temp_c", self.model_fleet.outdoor().outside_temp_c),
                ("model_heat_pct", m.heat_pct),
                ("thermo_heat_pct", th.heat_pct),
            ):
                s[key].append(value)
            self.in_band["model"] += t.band_low_c <= m.air_temp_c <= t.band_high_c
            self.in_band["thermo"] += t.band_low_c <= th.air_temp_c <= t.band_high_c
            self.humid["model"] += m.rh_pct > t.rh_max_pct
            self.humid["thermo"] += th.rh_pct > t.rh_max_pct
            self.samples += 1

    def thermostat_step(self, fleet: Any, fleet_readings: list[dict[str, Any]], now: datetime) -> None:
        """The controller core without a model (its thermostat) for every greenhouse of ``fleet``,
        on its latest readings and commanded positions (the same limits and interval as the model)."""
        measured: dict[str, dict[str, float]] = defaultdict(dict)
        for r in fleet_readings:
            if r["device_id"].endswith(("-climate", "-weather")):
                measured[r["greenhouse_id"]].update(r["measurements"])
        for gh in self.ids:
            state = thermostat_state(gh, now, measured[gh], fleet.commanded(gh)[0].model_dump())
            d = self.baseline.decide_sync(state, None, now, unavailable="thermostat baseline", dry_run=True)
            fleet.apply_setpoints(gh, d.command.setpoints, valid_until=d.command.valid_until)

    def loop_step(self, api: httpx.Client, now: datetime, interval_s: float, *, counted: bool) -> None:
        """The model fleet under the control loop service: a forecast per greenhouse (its latency
        is measured), then the interval's command applied to every greenhouse (10 s at most)."""
        posted = time.perf_counter()
        for gh in self.ids:
            t0 = time.perf_counter()
            res = api.post("/forecast", json={"greenhouse_id": gh, "as_of": now.isoformat()})
            self.forecast_ms.append((time.perf_counter() - t0) * 1000)
            res.raise_for_status()
        waiting = self._await_commands(interval_start(now, interval_s), timeout_s=10.0)
        if not counted:
            return
        self.control_ms.append((time.perf_counter() - posted) * 1000)
        self.result.control_missed += len(waiting)
        for gh in self.ids:
            if gh not in waiting:
                self._count(gh, now, self.actuators.last[gh])

    def _await_commands(self, start: datetime, timeout_s: float) -> set[str]:
        """Poll the control topic until every greenhouse has applied a command issued in the
        interval starting at ``start``; the greenhouses still waiting at the deadline."""
        deadline = time.monotonic() + timeout_s
        waiting = set(self.ids)
        while True:
            waiting = {gh for gh in waiting if (last := self.actuators.last.get(gh)) is None or last.issued_at < start}
            if not waiting or time.monotonic() > deadline:
                return waiting
            self.endpoint.poll(0.05)

    def _count(self, gh: str, now: datetime, command: Any) -> None:
        r = self.result
        r.control_requests += 1
        mode = command.reason.get("mode", "?")
        # the forecast under the settings actually applied (the chosen candidate)
        chosen = (command.reason.get("forecast") or {}).get(forecast_key("air_temp_c", self.horizon_min))
        if chosen is not None:
            self.series[gh]["forecast_ts"].append(now + timedelta(minutes=self.horizon_min))
            self.series[gh]["forecast_c"].append(chosen)
        r.control_modes[mode] = r.control_modes.get(mode, 0) + 1
        if mode == "mpc":
            r.versions_serving[command.model.version] = r.versions_serving.get(command.model.version, 0) + 1

    def finish(self, step_s: float) -> ClosedLoopResult:
        """The figures of the run."""
        self.endpoint.close()
        r, n = self.result, max(self.samples, 1)
        r.commands_applied = self.actuators.applied
        for c, name, fleet, which in ((r.model, "model", self.model_fleet, 0), (r.thermostat, "thermo", self.thermo_fleet, 1)):
            c.in_band_pct = round(100.0 * self.in_band[name] / n, 1)
            c.rh_above_max_pct = round(100.0 * self.humid[name] / n, 1)
            c.heating_kwh = round(sum(fleet.heating_energy_kwh(gh) - self.energy0[gh][which] for gh in self.ids), 1)
            c.mean_temp_c = round(sum(sum(self.series[gh][f"{name}_temp_c"]) for gh in self.ids) / n, 2)
        r.control_p50_ms, r.control_p99_ms = round(percentile(self.control_ms, 0.5), 1), round(percentile(self.control_ms, 0.99), 1)
        r.forecast_p50_ms, r.forecast_p99_ms = round(percentile(self.forecast_ms, 0.5), 1), round(percentile(self.forecast_ms, 0.99), 1)
        r.online_forecast_rmse_c, r.online_persistence_rmse_c = online_rmse(self.series, max(1, int(round(self.horizon_min * 60 / step_s))))
        r.series = self.series
        return r


SERIES_KEYS = ("ts", "model_temp_c", "thermo_temp_c", "outside_temp_c", "model_heat_pct", "thermo_heat_pct", "forecast_ts", "forecast_c")


def online_rmse(series: dict[str, dict[str, list[Any]]], horizon_steps: int) -> tuple[float | None, float | None]:
    """Online forecast RMSE (forecast made at t for t+h against the true state at t+h) and
    persistence's (the state at t) on the same pairs; ``None`` without pairs."""
    errs, pers = [], []
    for s in series.values():
        index = {ts: i for i, ts in enumerate(s["ts"])}
        for ts_f, value in zip(s["forecast_ts"], s["forecast_c"]):
            i = index.get(ts_f)
            if i is None or value is None or i < horizon_steps:
                continue
            actual = s["model_temp_c"][i]
            errs.append((value - actual) ** 2)
            pers.append((s["model_temp_c"][i - horizon_steps] - actual) ** 2)
    if not errs:
        return None, None
    return round((sum(errs) / len(errs)) ** 0.5, 3), round((sum(pers) / len(pers)) ** 0.5, 3)


def _bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def run_closed_loop(
    settings: Settings,
    base_url: str,
    *,
    greenhouses: int,
    start: datetime,
    days: float = 1.0,
    step_s: float = 60.0,
    seed: int = 0,
    forecast_horizon_min: int = 15,
    warmup_min: float = 60.0,
    verify: str | bool = True,
    operator_token: str | None = None,
    on_progress: Callable[[str, float, float], None] | None = None,
    on_interval: Callable[[datetime], None] | None = None,
) -> ClosedLoopResult:
    """Run both controllers for ``days`` from ``start``; ``base_url`` serves ingest at ``/`` and
    the control app (with its control loop, on event time) at ``/climate`` (HTTPS verified with
    ``verify``, a CA file; ``/forecast`` asked with ``operator_token``, which needs
    ``control:simulate``: the twin's instants are past). ``on_interval(now)`` is called after each
    counted interval's commands are applied (the demo starts rollouts from it).

    Both twins start ``warmup_min`` before ``start``, cold, and run that long (not counted): the
    thermostat twin under its thermostat, the model twin already under the control loop, so the
    comparison starts from settled greenhouses and the loop's window holds their own readings."""
    from app.ingest.client import GatewayClient
    from app.security.credentials import DeviceRegistry
    from app.sim.credentials import FleetCredentials

    progress = on_progress or (lambda stage, done, total: None)
    interval_steps = max(1, int(round(settings.control.interval_s / step_s)))
    warmup_steps = max(0, int(round(warmup_min * 60 / step_s)))
    total_steps = int(days * 86_400 // step_s)
    run = _Run(settings, greenhouses, start - timedelta(seconds=warmup_steps * step_s), step_s, seed, forecast_horizon_min)
    registry = DeviceRegistry.from_settings(settings)  # each simulated device posts with its own token
    credentials = FleetCredentials.for_fleet(registry, run.model_fleet)
    registry.close()
    with (
        GatewayClient(base_url, topic=settings.topics.sensors, batch_size=500, token_for=credentials.token_for, verify=verify) as gateway,
        httpx.Client(base_url=f"{base_url}/climate", timeout=30, verify=verify, headers=_bearer(operator_token)) as api,
    ):
        for step in range(1 - warmup_steps, total_steps + 1):
            readings, thermo_readings = run.model_fleet.step(), run.thermo_fleet.step()
            gateway.post(readings)
            now = run.model_fleet.now
            if step == 0:  # the warm-up is over: count from here
                run.start_counting()
            if step > 0:
                run.record(now)
            if step % interval_steps == 0:
                run.thermostat_step(run.thermo_fleet, thermo_readings, now)
                run.loop_step(api, now, settings.control.interval_s, counted=step > 0)
                if step > 0 and on_interval is not None:
                    on_interval(now)
            if step > 0 and (step % 30 == 0 or step == total_steps):
                progress("closed-loop control, model vs thermostat", step, total_steps)
    return run.finish(step_s)


def write_report(
    result: ClosedLoopResult,
    directory: Path,
    *,
    summary_rows: list[tuple[str, str]],
    band: tuple[float, float],
    rollouts: list[dict[str, Any]] | None = None,
    version_errors: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """PNG plots (forecast vs actual; indoor temperature under both controllers; each model
    version's online error) and an HTML page with the rollouts' steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    ids = sorted(result.series)

    def per_greenhouse(path: Path, title: str, draw: Callable[[Any, dict[str, list[Any]]], None]) -> Path:
        fig, axes = plt.subplots(len(ids), 1, figsize=(11, 3.2 * len(ids)), squeeze=False)
        for ax, gh in zip(axes[:, 0], ids):
            draw(ax, result.series[gh])
            ax.set_title(f"{gh}: {title}")
            ax.set_ylabel("°C")
            ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def forecast_vs_actual(ax: Any, s: dict[str, list[Any]]) -> None:
        ax.plot(s["ts"], s["model_temp_c"], label="actual (model-controlled)", lw=1.2)
        ax.plot(s["forecast_ts"], s["forecast_c"], ".", ms=3, label="15-min forecast", alpha=0.8)

    def controllers(ax: Any, s: dict[str, list[Any]]) -> None:
        ax.axhspan(band[0], band[1], color="green", alpha=0.08, label="target band")
        ax.plot(s["ts"], s["model_temp_c"], label="model (MPC)", lw=1.2)
        ax.plot(s["ts"], s["thermo_temp_c"], label="thermostat", lw=1.2)
        ax.plot(s["ts"], s["outside_temp_c"], label="outside", lw=0.8, color="grey")

    forecast_png = per_greenhouse(directory / "forecast_vs_actual.png", "indoor air temperature, forecast vs actual", forecast_vs_actual)
    control_png = per_greenhouse(directory / "controllers.png", "indoor temperature under both controllers", controllers)

    rows = "".join(f"<tr><td>{escape(k)}</td><td style='text-align:right'>{escape(v)}</td></tr>" for k, v in summary_rows)
    rollout_html = _rollouts_html(rollouts or [], version_errors or {}, directory, plt)
    html = directory / "report.html"
    html.write_text(
        "<!doctype html><meta charset='utf-8'><title>Greenhouse demo report</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{padding:2px 12px;border-bottom:1px solid #ddd}</style>"
        f"<h1>Greenhouse demo report</h1><table>{rows}</table>"
        f"<h2>Indoor temperature: model-predictive control vs thermostat</h2><img src='{control_png.name}' width='100%'>"
        f"<h2>Forecast vs actual</h2><img src='{forecast_png.name}' width='100%'>"
        f"{rollout_html}"
    )
    return html


def _rollouts_html(rollouts: list[dict[str, Any]], version_errors: dict[str, dict[str, Any]], directory: Path, plt: Any) -> str:
    """The rollouts' steps (from their ``deployments`` documents) and each version's online error."""
    if not rollouts and not version_errors:
        return ""
    parts = ["<h2>Model rollouts</h2>"]
    for r in rollouts:
        parts.append(f"<h3>{escape(r['rollout_id'])}: {escape(r['label'])} version {escape(r['candidate'])}: {escape(r['status'])}</h3>")
        head = "<tr><th>event</th><th>at (simulated)</th><th>fraction</th><th>champion RMSE °C</th><th>candidate RMSE °C</th><th>reason</th></tr>"
        body = "".join(
            f"<tr><td>{escape(str(step['event']))}</td><td>{escape(str(step['at']))}</td><td>{step['fraction']}</td>"
            f"<td>{_fmt(step['champion_rmse_c'])}</td><td>{_fmt(step['candidate_rmse_c'])}</td><td>{escape(str(step['reason'] or ''))}</td></tr>"
            for step in r["steps"]
        )
        parts.append(f"<table>{head}{body}</table>")
    if version_errors:
        versions = list(version_errors)
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.bar([f"v{v}" for v in versions], [version_errors[v].get("forecast_rmse_c") or 0.0 for v in versions], color="tab:blue")
        ax.set_ylabel("online 15-min RMSE °C")
        ax.set_title("online forecast error by model version (serving and shadow)")
        fig.tight_layout()
        fig.savefig(directory / "version_errors.png", dpi=110)
        plt.close(fig)
        parts.append("<h3>Online forecast error by model version</h3><img src='version_errors.png' width='60%'>")
    return "".join(parts)


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3f}"
