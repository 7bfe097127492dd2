"""One twin x window x controller, simulated in-process, and what it achieved.

A trial runs one evaluation twin (:class:`~app.season.twins.TwinSpec`) over a window of the TMY3
year under one controller: the controller core (:class:`~app.control.core.Controller`) with a
forecaster (the MPC, deciding on the feature row serving would build from the twin's readings)
or without one (its rule-based controller: the thermostat). Both decide every
``policy.interval_s`` under the same limits; the twin starts ``warmup_h`` hours before the window
under the same controller (not counted), so both start from a settled greenhouse.

Counted every simulated minute on the twin's *true* state: time in the band, below it, above it,
above the humidity ceiling, mean temperature and the temperature's travel per day (the sum of its
changes from minute to minute: an oscillating climate travels far); the heat delivered; and the
commanded setpoints' travel per day (the sum of their changes: oscillating actuators show up here)
and heating reversals per day.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from app.contracts.command import Setpoints
from app.contracts.vocabulary import ACTUATORS
from app.control.core import ControlDecision, Controller, ControlPolicy, GreenhouseState, ModelForecaster, thermostat_state
from app.control.correction import ForecastOffsets
from app.preprocess.features import FeatureParams
from app.season.twins import TwinSpec
from app.season.window import ReadingLog

if TYPE_CHECKING:
    from app.sim.fleet import FleetSimulator

SERIES_EVERY_STEPS = 5
"""The kept series (for plots) holds every fifth step."""

SetpointOverride = Callable[["FleetSimulator", str, ControlDecision], Mapping[str, float]]
"""What a trial sends instead of its controller's decision: from the fleet (stepped to now), the
greenhouse id and the decision, the setpoints to apply (``heat_pct``, ``vent_pct``,
``screen_pct``): an oracle that may look into the simulator (:mod:`app.season.bound`)."""


@dataclass(frozen=True)
class TrialController:
    """A controller under trial: its name, its policy, and for the MPC its forecaster and the
    feature parameters of that forecaster's model."""

    name: str
    policy: ControlPolicy
    forecaster: ModelForecaster | None = None
    feature_params: FeatureParams = field(default_factory=FeatureParams)
    offset_alpha: float = 0.1


@dataclass(frozen=True)
class Figures:
    """What one trial achieved (percentages of the counted minutes; travel per simulated day)."""

    in_band_pct: float
    below_band_pct: float
    above_band_pct: float
    rh_above_pct: float
    mean_temp_c: float
    heating_kwh: float
    heat_travel_pct_per_day: float
    vent_travel_pct_per_day: float
    screen_travel_pct_per_day: float
    heat_reversals_per_day: float
    temp_travel_k_per_day: float
    mpc_share_pct: float
    """Share of the decisions the MPC made (the rest: its thermostat fallback)."""
    days: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class TrialResult:
    """A trial's figures, and the series behind its plots when asked for."""

    twin_id: str
    window: str
    controller: str
    figures: Figures
    series: dict[str, list[Any]] = field(default_factory=dict)


class _Tally:
    """The counts behind :class:`Figures`."""

    def __init__(self, policy: ControlPolicy) -> None:
        self.targets = policy.targets
        self.minutes = self.in_band = self.below = self.above = self.humid = 0
        self.temp_sum_c = self.temp_travel_k = 0.0
        self.last_temp_c = math.nan
        self.travel = dict.fromkeys(ACTUATORS, 0.0)
        self.reversals = self.decisions = self.mpc = 0
        self.last: dict[str, float] | None = None
        self.last_heat_move = 0.0

    def minute(self, air_temp_c: float, rh_pct: float) -> None:
        t = self.targets
        self.minutes += 1
        self.in_band += t.band_low_c <= air_temp_c <= t.band_high_c
        self.below += air_temp_c < t.band_low_c
        self.above += air_temp_c > t.band_high_c
        self.humid += rh_pct > t.rh_max_pct
        self.temp_sum_c += air_temp_c
        if math.isfinite(self.last_temp_c):
            self.temp_travel_k += abs(air_temp_c - self.last_temp_c)
        self.last_temp_c = air_temp_c

    def decision(self, setpoints: Mapping[str, float], mode: str) -> None:
        self.decisions += 1
        self.mpc += mode == "mpc"
        if self.last is not None:
            for a in ACTUATORS:
                self.travel[a] += abs(setpoints[a] - self.last[a])
            move = setpoints["heat_pct"] - self.last["heat_pct"]
            if abs(move) > 0.5:
                self.reversals += self.last_heat_move * move < 0
                self.last_heat_move = move
        self.last = dict(setpoints)

    def figures(self, heating_kwh: float, days: float) -> Figures:
        n, per_day = max(1, self.minutes), 1.0 / max(days, 1e-9)

        def pct(count: int) -> float:
            return round(100.0 * count / n, 2)

        return Figures(
            pct(self.in_band),
            pct(self.below),
            pct(self.above),
            pct(self.humid),
            round(self.temp_sum_c / n, 3),
            round(heating_kwh, 1),
            round(self.travel["heat_pct"] * per_day, 1),
            round(self.travel["vent_pct"] * per_day, 1),
            round(self.travel["screen_pct"] * per_day, 1),
            round(self.reversals * per_day, 2),
            round(self.temp_travel_k * per_day, 2),
            round(100.0 * self.mpc / max(1, self.decisions), 1),
            round(days, 3),
        )


def _measured(readings: list[dict[str, Any]]) -> dict[str, float]:
    """What the greenhouse's own sensors said this step (climate and weather devices)."""
    out: dict[str, float] = {}
    for r in readings:
        if r["device_id"].endswith(("-climate", "-weather")):
            out.update(r["measurements"])
    return out


def _decide(controller: Controller, spec: TrialController, gh: str, now: datetime, readings: list[dict[str, Any]], log: ReadingLog | None, commanded: Mapping[str, float]) -> ControlDecision:
    """The MPC on the newest feature row (its thermostat until the window has one), or the
    thermostat on the raw measurements and the commanded positions (a climate computer)."""
    if spec.forecaster is not None and log is not None:
        features = log.latest_features(spec.feature_params)
        if features is not None:
            return controller.decide_sync(GreenhouseState(gh, features), spec.forecaster, now, dry_run=True)
    state = thermostat_state(gh, now, _measured(readings), commanded)
    return controller.decide_sync(state, None, now, unavailable="thermostat", dry_run=True)


def run_trial(
    twin: TwinSpec,
    start: datetime,
    days: float,
    spec: TrialController,
    *,
    window: str = "",
    warmup_h: float = 24.0,
    step_s: float = 60.0,
    keep_series: bool = False,
    override: SetpointOverride | None = None,
) -> TrialResult:
    """Simulate ``twin`` under ``spec`` for ``days`` from ``start`` (after ``warmup_h`` hours not
    counted) and count what it achieved; with ``keep_series`` also keep every
    :data:`SERIES_EVERY_STEPS`-th step's climate and setpoints. With ``override`` the setpoints
    sent (and counted) are its answer to each decision instead of the decision's own."""
    from app.sim.fleet import FleetSimulator

    warmup_steps = max(0, math.ceil(warmup_h * 3600 / step_s))
    total_steps = math.ceil(days * 86_400 / step_s)
    interval_steps = max(1, round(spec.policy.interval_s / step_s))
    fleet = FleetSimulator(1, start - timedelta(seconds=warmup_steps * step_s), step_s=step_s, seed=twin.seed, base_params=twin.params, vary_greenhouses=False)
    gh = fleet.greenhouse_ids[0]
    log = ReadingLog(gh) if spec.forecaster is not None else None
    controller = Controller(spec.policy, ForecastOffsets(alpha=spec.offset_alpha))
    tally, energy0 = _Tally(spec.policy), 0.0
    series: dict[str, list[Any]] = {k: [] for k in ("ts", "air_temp_c", "rh_pct", "outside_temp_c", "solar_w_m2", "heat_pct", "vent_pct", "screen_pct")} if keep_series else {}
    for step in range(1 - warmup_steps, total_steps + 1):
        readings = fleet.step()
        now = fleet.now
        if log is not None:
            log.add(readings, now)
        if step == 0:
            energy0 = fleet.heating_energy_kwh(gh)
        truth = fleet.state(gh)
        if step > 0:
            tally.minute(truth.air_temp_c, truth.rh_pct)
        if step % interval_steps == 0:
            d = _decide(controller, spec, gh, now, readings, log, fleet.commanded(gh)[0].model_dump())
            sent = d.command.setpoints if override is None else Setpoints.clamped(**override(fleet, gh, d))
            fleet.apply_setpoints(gh, sent, valid_until=d.command.valid_until)
            if step > 0:
                tally.decision(d.setpoints if override is None else sent.model_dump(), d.mode)
        if keep_series and step > 0 and step % SERIES_EVERY_STEPS == 0:
            outdoor, commanded = fleet.outdoor(), fleet.commanded(gh)[0]
            for key, value in (("ts", now), ("air_temp_c", truth.air_temp_c), ("rh_pct", truth.rh_pct), ("outside_temp_c", outdoor.outside_temp_c), ("solar_w_m2", outdoor.solar_w_m2)):
                series[key].append(value)
            for a in ACTUATORS:
                series[a].append(getattr(commanded, a))
    figures = tally.figures(fleet.heating_energy_kwh(gh) - energy0, total_steps * step_s / 86_400)
    return TrialResult(twin.twin_id, window, spec.name, figures, series)
