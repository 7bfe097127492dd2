"""A fleet of simulated greenhouses and their devices, emitting readings in the wire contract.

Every greenhouse ``gh-NN`` has a twin (:mod:`app.sim.twin`), a local climate computer
(:mod:`app.sim.climate_computer`) and three devices that report every step:

- ``gh-NN-climate``: ``air_temp_c``, ``rh_pct``, ``co2_ppm``, ``par_umol_m2_s``;
- ``gh-NN-weather``: ``outside_temp_c``, ``outside_rh_pct``, ``solar_w_m2``, ``wind_m_s``;
- ``gh-NN-actuators``: actual ``vent_pct``, ``heat_pct``, ``screen_pct`` positions.

Sensors add small seeded noise; the twins' true state stays available through
:meth:`FleetSimulator.state` for evaluation. All greenhouses share the site's outdoor weather.
Every random stream is derived from ``(seed, greenhouse id)``, so a greenhouse behaves the same
whatever the size of the fleet.

External setpoints (from a control loop) win over the local climate computer until they expire.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from app.contracts.command import Setpoints
from app.sim.climate_computer import ClimateComputer, ClimateComputerConfig
from app.sim.twin import ClimateState, GreenhouseParams, GreenhouseTwin
from app.sim.weather import OutdoorWeather, Tmy3Weather, WeatherProvider

READING_SCHEMA_VERSION = 1
ControlSource = Literal["external", "local"]


def format_ts(ts: datetime) -> str:
    """RFC 3339 UTC string with a ``Z`` suffix (milliseconds only when not whole seconds)."""
    ts = ts.astimezone(timezone.utc)
    if ts.microsecond:
        return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def vary_params(base: GreenhouseParams, seed: int, greenhouse_id: str) -> GreenhouseParams:
    """``base`` with size, cover, heating, ventilation and mass varied by a few to ~20 % (seeded),
    so that greenhouses in a fleet are alike but not identical."""
    rng = random.Random(f"fleet-params:{seed}:{greenhouse_id}")
    size = rng.uniform(0.8, 1.25)
    return replace(
        base,
        floor_area_m2=base.floor_area_m2 * size,
        volume_m3=base.volume_m3 * size * rng.uniform(0.9, 1.1),
        cover_area_m2=base.cover_area_m2 * size,
        cover_u_w_m2_k=base.cover_u_w_m2_k * rng.uniform(0.9, 1.1),
        cover_transmissivity=min(base.cover_transmissivity * rng.uniform(0.93, 1.07), 0.95),
        heating_capacity_w=base.heating_capacity_w * size * rng.uniform(0.85, 1.15),
        max_vent_air_changes_per_h=base.max_vent_air_changes_per_h * rng.uniform(0.85, 1.15),
        leakage_air_changes_per_h=base.leakage_air_changes_per_h * rng.uniform(0.7, 1.3),
        structure_heat_capacity_j_k=base.structure_heat_capacity_j_k * size,
        thermal_mass_j_k=base.thermal_mass_j_k * size * rng.uniform(0.8, 1.2),
        mass_air_conductance_w_k=base.mass_air_conductance_w_k * size,
        ground_conductance_w_k=base.ground_conductance_w_k * size,
    )


@dataclass(frozen=True, slots=True)
class SensorNoise:
    """Standard deviations of the sensor noise (``relative`` ones are fractions of the value)."""

    air_temp_c: float = 0.1
    rh_pct: float = 1.0
    co2_ppm: float = 5.0
    par_relative: float = 0.02
    outside_temp_c: float = 0.2
    outside_rh_pct: float = 1.5
    solar_relative: float = 0.02
    wind_m_s: float = 0.2

    @classmethod
    def none(cls) -> SensorNoise:
        """Perfect sensors."""
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def _clip(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


class _Greenhouse:
    """Everything the fleet keeps for one greenhouse."""

    __slots__ = ("computer", "external", "external_valid_until", "greenhouse_id", "last_setpoints", "last_source", "measured_air_temp_c", "measured_outdoor", "measured_rh_pct", "noise_rng", "twin")

    def __init__(self, greenhouse_id: str, twin: GreenhouseTwin, computer: ClimateComputer, noise_rng: random.Random) -> None:
        self.greenhouse_id = greenhouse_id
        self.twin = twin
        self.computer = computer
        self.noise_rng = noise_rng
        self.external: Setpoints | None = None
        self.external_valid_until: datetime | None = None
        self.measured_air_temp_c = 0.0
        self.measured_rh_pct = 0.0
        self.measured_outdoor: OutdoorWeather | None = None
        self.last_setpoints = Setpoints.clamped()
        self.last_source: ControlSource = "local"


DEVICE_KINDS: tuple[str, ...] = ("climate", "weather", "actuators")
"""The devices of every simulated greenhouse; a reading's ``device_id`` is ``<greenhouse_id>-<kind>``."""


class FleetSimulator:
    """``n_greenhouses`` simulated greenhouses stepping together from ``start`` every ``step_s``.

    ``weather`` defaults to the real TMY3 year (:class:`~app.sim.weather.Tmy3Weather`);
    ``base_params`` (default :class:`GreenhouseParams`) is varied per greenhouse when
    ``vary_greenhouses`` is true; ``climate_config`` configures every local climate computer;
    ``sensor_noise`` sets the device noise (:meth:`SensorNoise.none` for perfect sensors).
    """

    def __init__(
        self,
        n_greenhouses: int,
        start: datetime,
        step_s: float = 60.0,
        seed: int = 0,
        *,
        weather: WeatherProvider | None = None,
        base_params: GreenhouseParams | None = None,
        vary_greenhouses: bool = True,
        climate_config: ClimateComputerConfig | None = None,
        sensor_noise: SensorNoise | None = None,
    ) -> None:
        if n_greenhouses < 1:
            raise ValueError("n_greenhouses must be at least 1")
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")
        if not (math.isfinite(step_s) and step_s > 0):
            raise ValueError("step_s must be a positive number")
        self.start = start.astimezone(timezone.utc)
        self.step_s = float(step_s)
        self.seed = seed
        self.weather: WeatherProvider = weather or Tmy3Weather(self.start)
        self.sensor_noise = sensor_noise or SensorNoise()
        self._steps_done = 0
        base = base_params or GreenhouseParams()
        self._greenhouses: dict[str, _Greenhouse] = {}
        for index in range(1, n_greenhouses + 1):
            gh_id = f"gh-{index:02d}"
            params = vary_params(base, seed, gh_id) if vary_greenhouses else base
            twin = GreenhouseTwin(params, self.weather, seed=f"{seed}:{gh_id}", start=self.start)
            computer = ClimateComputer(climate_config, seed=f"{seed}:{gh_id}")
            gh = _Greenhouse(gh_id, twin, computer, random.Random(f"fleet-sensors:{seed}:{gh_id}"))
            self._measure(gh, twin.state, self.weather.at(self.start))
            self._greenhouses[gh_id] = gh

    # ----------------------------------------------------------------- introspection
    @property
    def greenhouse_ids(self) -> tuple[str, ...]:
        """Ids of the greenhouses, ``("gh-01", "gh-02", ...)``."""
        return tuple(self._greenhouses)

    def device_ids(self, greenhouse_id: str) -> tuple[str, ...]:
        """Ids of one greenhouse's devices (each posts its readings with its own credential)."""
        self._get(greenhouse_id)
        return tuple(f"{greenhouse_id}-{kind}" for kind in DEVICE_KINDS)

    @property
    def now(self) -> datetime:
        """Simulated time of the latest readings (``start`` before the first step)."""
        return self.start + timedelta(seconds=self._steps_done * self.step_s)

    def params(self, greenhouse_id: str) -> GreenhouseParams:
        """Physical parameters of one greenhouse."""
        return self._get(greenhouse_id).twin.params

    def state(self, greenhouse_id: str) -> ClimateState:
        """The true (noise-free) climate state of one greenhouse at :attr:`now`."""
        return self._get(greenhouse_id).twin.state

    def outdoor(self) -> OutdoorWeather:
        """The true outdoor conditions at :attr:`now`."""
        return self.weather.at(self.now)

    def heating_energy_kwh(self, greenhouse_id: str) -> float:
        """Heat delivered to one greenhouse since ``start``."""
        return self._get(greenhouse_id).twin.heating_energy_kwh

    def commanded(self, greenhouse_id: str) -> tuple[Setpoints, ControlSource]:
        """Setpoints used in the latest step and who set them (``"external"`` or ``"local"``)."""
        gh = self._get(greenhouse_id)
        return gh.last_setpoints, gh.last_source

    # ----------------------------------------------------------------- control
    def apply_setpoints(self, greenhouse_id: str, setpoints: Setpoints, valid_until: datetime | None = None) -> None:
        """Override the local climate computer of one greenhouse with ``setpoints`` from the next
        step on, until simulated time reaches ``valid_until`` (``None``: until replaced or cleared).
        A newer call replaces the previous override."""
        gh = self._get(greenhouse_id)
        if valid_until is not None and valid_until.tzinfo is None:
            raise ValueError("valid_until must be timezone-aware (UTC)")
        if not isinstance(setpoints, Setpoints):
            raise TypeError("setpoints must be an Setpoints")
        gh.external = setpoints
        gh.external_valid_until = valid_until

    def clear_setpoints(self, greenhouse_id: str) -> None:
        """Hand one greenhouse back to its local climate computer."""
        gh = self._get(greenhouse_id)
        gh.external = None
        gh.external_valid_until = None

    # ----------------------------------------------------------------- stepping
    def step(self) -> list[dict[str, Any]]:
        """Advance every greenhouse by ``step_s`` and return the readings stamped at the new
        :attr:`now` (three per greenhouse: climate, weather, actuators).

        Setpoints for the interval are decided at its start: an unexpired external override, else
        the local climate computer acting on the latest measured values.
        """
        t0 = self.now
        states: list[ClimateState] = []
        for gh in self._greenhouses.values():
            setpoints, source = self._setpoints_for(gh, t0)
            gh.last_setpoints, gh.last_source = setpoints, source
            states.append(gh.twin.step(self.step_s, setpoints))
        self._steps_done += 1
        t1 = self.now
        ts = format_ts(t1)
        outdoor = self.weather.at(t1)
        readings: list[dict[str, Any]] = []
        for gh, state in zip(self._greenhouses.values(), states, strict=True):
            readings.extend(self._measure(gh, state, outdoor, ts))
        return readings

    def iter_steps(self, duration_s: float) -> Iterator[list[dict[str, Any]]]:
        """Step for ``duration_s`` of simulated time (rounded up to whole steps), yielding each
        step's readings."""
        n_steps = math.ceil(duration_s / self.step_s - 1e-9)
        for _ in range(max(n_steps, 0)):
            yield self.step()

    def _setpoints_for(self, gh: _Greenhouse, ts: datetime) -> tuple[Setpoints, ControlSource]:
        if gh.external is not None:
            if gh.external_valid_until is None or ts < gh.external_valid_until:
                return gh.external, "external"
            gh.external = None
            gh.external_valid_until = None
        outdoor = gh.measured_outdoor or self.weather.at(ts)
        decided = gh.computer.decide(ts, gh.measured_air_temp_c, gh.measured_rh_pct, outdoor)
        return decided, "local"

    def _measure(self, gh: _Greenhouse, state: ClimateState, outdoor: OutdoorWeather, ts: str | None = None) -> list[dict[str, Any]]:
        """Sample the devices of one greenhouse and remember what its climate computer sees.

        Returns the readings stamped ``ts``; none when ``ts`` is ``None`` (the initial sample)."""
        noise = self.sensor_noise
        gauss = gh.noise_rng.gauss

        air_temp_c = state.air_temp_c + gauss(0.0, noise.air_temp_c)
        rh_pct = _clip(state.rh_pct + gauss(0.0, noise.rh_pct), 0.0, 100.0)
        co2_ppm = max(state.co2_ppm + gauss(0.0, noise.co2_ppm), 0.0)
        par = max(state.par_umol_m2_s * (1.0 + gauss(0.0, noise.par_relative)), 0.0)
        outside_temp_c = outdoor.outside_temp_c + gauss(0.0, noise.outside_temp_c)
        outside_rh_pct = _clip(outdoor.outside_rh_pct + gauss(0.0, noise.outside_rh_pct), 0.0, 100.0)
        solar_w_m2 = max(outdoor.solar_w_m2 * (1.0 + gauss(0.0, noise.solar_relative)), 0.0)
        wind_m_s = max(outdoor.wind_m_s + gauss(0.0, noise.wind_m_s), 0.0)

        gh.measured_air_temp_c = air_temp_c
        gh.measured_rh_pct = rh_pct
        gh.measured_outdoor = OutdoorWeather(
            outside_temp_c=outside_temp_c,
            outside_rh_pct=outside_rh_pct,
            solar_w_m2=solar_w_m2,
            wind_m_s=wind_m_s,
            sun_elevation_deg=outdoor.sun_elevation_deg,  # computed from the clock, not measured
        )
        if ts is None:
            return []
        gh_id = gh.greenhouse_id

        def reading(device: str, measurements: dict[str, float]) -> dict[str, Any]:
            return {"schema_version": READING_SCHEMA_VERSION, "greenhouse_id": gh_id, "device_id": f"{gh_id}-{device}", "ts": ts, "measurements": measurements}

        return [
            reading("climate", {"air_temp_c": round(air_temp_c, 2), "rh_pct": round(rh_pct, 2), "co2_ppm": round(co2_ppm, 1), "par_umol_m2_s": round(par, 1)}),
            reading("weather", {"outside_temp_c": round(outside_temp_c, 2), "outside_rh_pct": round(outside_rh_pct, 2), "solar_w_m2": round(solar_w_m2, 1), "wind_m_s": round(wind_m_s, 2)}),
            reading("actuators", {"vent_pct": round(state.vent_pct, 2), "heat_pct": round(state.heat_pct, 2), "screen_pct": round(state.screen_pct, 2)}),
        ]

    def _get(self, greenhouse_id: str) -> _Greenhouse:
        try:
            return self._greenhouses[greenhouse_id]
        except KeyError:
            raise KeyError(f"unknown greenhouse {greenhouse_id!r}; known: {', '.join(self._greenhouses)}") from None
