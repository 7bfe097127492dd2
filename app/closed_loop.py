"""Closed-loop control of simulated greenhouses through the Serve app, next to a thermostat baseline.

Two fleets with the same greenhouses, weather and start run side by side for the same simulated
day:

- the *model* fleet posts its readings to the ingest gateway over HTTP; every control interval the
  loop asks ``POST /climate/control`` for each greenhouse (state comes from the sensor topic the
  Serve replica follows), the command goes out on the control topic, and an
  :class:`~app.control.dispatch.ActuatorEndpoint` applies it to the twin;
- the *thermostat* fleet is driven by :func:`app.control.policy.thermostat` at the same interval and
  under the same limits.

The result holds time inside the band and heating energy for both, forecast and control latency,
and the series behind the report's plots.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

import httpx

from app.config import Settings
from app.control.planner import targets_from
from app.control.policy import Limits, screen_rule, thermostat


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
    control_modes: dict[str, int] = field(default_factory=dict)
    commands_applied: int = 0
    control_p50_ms: float = 0.0
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
    on_progress: Callable[[str, float, float], None] | None = None,
) -> ClosedLoopResult:
    """Run both controllers for ``days`` from ``start``; ``base_url`` serves ingest at ``/`` and
    the control app at ``/climate``.

    Both twins start ``warmup_min`` before ``start``, cold, and run that long under the thermostat
    (not counted): the comparison then starts from a settled greenhouse, and the control app's
    window already holds that greenhouse's own recent readings rather than another run's."""
    from app.bus import open_bus
    from app.control.dispatch import ActuatorEndpoint
    from app.ingest.client import GatewayClient
    from app.sim.actuators import FleetActuators
    from app.sim.fleet import FleetSimulator
    from app.sim.twin import ActuatorSetpoints

    progress = on_progress or (lambda stage, done, total: None)
    limits, targets = Limits(), targets_from(settings)
    interval_steps = max(1, int(round(settings.control.interval_s / step_s)))
    horizon_steps = max(1, int(round(forecast_horizon_min * 60 / step_s)))
    warmup_steps = max(0, int(round(warmup_min * 60 / step_s)))
    first = start - timedelta(seconds=warmup_steps * step_s)
    model_fleet = FleetSimulator(greenhouses, first, step_s=step_s, seed=seed)
    thermo_fleet = FleetSimulator(greenhouses, first, step_s=step_s, seed=seed)
    ids = model_fleet.greenhouse_ids
    actuators = FleetActuators(model_fleet)
    endpoint = ActuatorEndpoint(settings, open_bus(settings.bus_url), actuators, set(ids), clock=lambda: model_fleet.now)
    result = ClosedLoopResult(ControllerResult("model (MPC)"), ControllerResult("thermostat"))
    series = {gh: {"ts": [], "model_temp_c": [], "thermo_temp_c": [], "outside_temp_c": [], "model_heat_pct": [], "thermo_heat_pct": [], "forecast_ts": [], "forecast_c": []} for gh in ids}
    control_ms: list[float] = []
    forecast_ms: list[float] = []
    in_band = {"model": 0, "thermo": 0}
    humid = {"model": 0, "thermo": 0}
    samples = 0
    energy0 = {gh: (model_fleet.heating_energy_kwh(gh), thermo_fleet.heating_energy_kwh(gh)) for gh in ids}
    total_steps = int(days * 86_400 // step_s)
    pending_ids: set[str] = set()

    def thermostat_step(fleet: FleetSimulator, fleet_readings: list[dict[str, Any]], now: datetime) -> None:
        """The rule-based thermostat for every greenhouse of ``fleet``, on its latest readings
        (the same limits and interval as the model)."""
        measured = {r["greenhouse_id"]: r["measurements"] for r in fleet_readings if r["device_id"].endswith("-climate")}
        weather = {r["greenhouse_id"]: r["measurements"] for r in fleet_readings if r["device_id"].endswith("-weather")}
        for gh in ids:
            current = fleet.commanded(gh)[0]
            cur = {"vent_pct": current.vent_pct, "heat_pct": current.heat_pct, "screen_pct": current.screen_pct}
            d = thermostat(measured[gh]["air_temp_c"], measured[gh]["rh_pct"], cur, limits=limits, targets=targets, dt_s=settings.control.interval_s,
                           screen_pct=screen_rule(weather[gh]["outside_temp_c"], weather[gh]["solar_w_m2"]))
            fleet.apply_setpoints(gh, ActuatorSetpoints(**d.setpoints), valid_until=now + timedelta(seconds=settings.control.command_ttl_s))

    with GatewayClient(base_url, topic=settings.topics.sensors, batch_size=500) as gateway, httpx.Client(base_url=f"{base_url}/climate", timeout=30) as api:
        for step in range(1 - warmup_steps, total_steps + 1):
            readings = model_fleet.step()
            thermo_readings = thermo_fleet.step()
            gateway.post(readings)
            now = model_fleet.now
            if step == 0:  # the warm-up is over: count from here
                energy0 = {gh: (model_fleet.heating_energy_kwh(gh), thermo_fleet.heating_energy_kwh(gh)) for gh in ids}
            for gh in ids if step > 0 else ():
                m, t = model_fleet.state(gh), thermo_fleet.state(gh)
                s = series[gh]
                s["ts"].append(now)
                s["model_temp_c"].append(m.air_temp_c)
                s["thermo_temp_c"].append(t.air_temp_c)
                s["outside_temp_c"].append(model_fleet.outdoor().outside_temp_c)
                s["model_heat_pct"].append(m.heat_pct)
                s["thermo_heat_pct"].append(t.heat_pct)
                in_band["model"] += targets.band_low_c <= m.air_temp_c <= targets.band_high_c
                in_band["thermo"] += targets.band_low_c <= t.air_temp_c <= targets.band_high_c
                humid["model"] += m.rh_pct > targets.rh_max_pct
                humid["thermo"] += t.rh_pct > targets.rh_max_pct
                samples += 1
            if step % interval_steps == 0:
                thermostat_step(thermo_fleet, thermo_readings, now)
                if step <= 0:  # warming up: the model fleet under its own thermostat
                    thermostat_step(model_fleet, readings, now)
                for gh in ids if step > 0 else ():
                    # the model fleet: through Serve
                    t0 = time.perf_counter()
                    res = api.post("/forecast", json={"greenhouse_id": gh, "as_of": now.isoformat()})
                    forecast_ms.append((time.perf_counter() - t0) * 1000)
                    res.raise_for_status()
                    t0 = time.perf_counter()
                    res = api.post("/control", json={"greenhouse_id": gh, "as_of": now.isoformat()})
                    control_ms.append((time.perf_counter() - t0) * 1000)
                    res.raise_for_status()
                    body = res.json()
                    result.control_requests += 1
                    mode = body["decision"]["mode"]
                    # the forecast under the settings actually applied (the chosen candidate)
                    chosen = body["decision"]["forecast"].get(f"air_temp_c_{forecast_horizon_min}min")
                    if chosen is not None:
                        series[gh]["forecast_ts"].append(now + timedelta(minutes=forecast_horizon_min))
                        series[gh]["forecast_c"].append(chosen)
                    result.control_modes[mode] = result.control_modes.get(mode, 0) + 1
                    if body["dispatch"]["status"] == "dispatched":
                        pending_ids.add(body["command"]["command_id"])
                # apply what the greenhouses received before the next step
                deadline = time.monotonic() + 10
                while pending_ids and time.monotonic() < deadline:
                    for outcome in endpoint.poll(0.05):
                        pending_ids.discard(outcome.command_id)
                pending_ids.clear()
            if step > 0 and (step % 30 == 0 or step == total_steps):
                progress("closed-loop control, model vs thermostat", step, total_steps)
    endpoint.close()

    result.commands_applied = actuators.applied
    result.model.in_band_pct = round(100.0 * in_band["model"] / max(samples, 1), 1)
    result.thermostat.in_band_pct = round(100.0 * in_band["thermo"] / max(samples, 1), 1)
    result.model.rh_above_max_pct = round(100.0 * humid["model"] / max(samples, 1), 1)
    result.thermostat.rh_above_max_pct = round(100.0 * humid["thermo"] / max(samples, 1), 1)
    result.model.heating_kwh = round(sum(model_fleet.heating_energy_kwh(gh) - energy0[gh][0] for gh in ids), 1)
    result.thermostat.heating_kwh = round(sum(thermo_fleet.heating_energy_kwh(gh) - energy0[gh][1] for gh in ids), 1)
    result.model.mean_temp_c = round(sum(sum(series[gh]["model_temp_c"]) for gh in ids) / max(samples, 1), 2)
    result.thermostat.mean_temp_c = round(sum(sum(series[gh]["thermo_temp_c"]) for gh in ids) / max(samples, 1), 2)
    result.control_p50_ms, result.control_p99_ms = round(percentile(control_ms, 0.5), 1), round(percentile(control_ms, 0.99), 1)
    result.forecast_p50_ms, result.forecast_p99_ms = round(percentile(forecast_ms, 0.5), 1), round(percentile(forecast_ms, 0.99), 1)
    # online forecast skill: forecast made at t for t+h against the true state at t+h, and
    # persistence (the state at t) on the same pairs
    errs, pers = [], []
    for gh in ids:
        s = series[gh]
        index = {ts: i for i, ts in enumerate(s["ts"])}
        for ts_f, value in zip(s["forecast_ts"], s["forecast_c"]):
            i = index.get(ts_f)
            if i is None or value is None or i < horizon_steps:
                continue
            actual = s["model_temp_c"][i]
            errs.append((value - actual) ** 2)
            pers.append((s["model_temp_c"][i - horizon_steps] - actual) ** 2)
    if errs:
        result.online_forecast_rmse_c = round((sum(errs) / len(errs)) ** 0.5, 3)
        result.online_persistence_rmse_c = round((sum(pers) / len(pers)) ** 0.5, 3)
    result.series = series
    return result


def write_report(result: ClosedLoopResult, directory: Path, *, summary_rows: list[tuple[str, str]], band: tuple[float, float]) -> Path:
    """PNG plots (forecast vs actual; indoor temperature under both controllers) and an HTML page."""
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

    rows = "".join(f"<tr><td>{k}</td><td style='text-align:right'>{v}</td></tr>" for k, v in summary_rows)
    html = directory / "report.html"
    html.write_text(
        "<!doctype html><meta charset='utf-8'><title>Greenhouse demo report</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}td{padding:2px 12px;border-bottom:1px solid #ddd}</style>"
        f"<h1>Greenhouse demo report</h1><table>{rows}</table>"
        f"<h2>Indoor temperature: model-predictive control vs thermostat</h2><img src='{control_png.name}' width='100%'>"
        f"<h2>Forecast vs actual</h2><img src='{forecast_png.name}' width='100%'>"
    )
    return html
