"""A lumped greenhouse climate twin: heat, vapour and CO2 balances driven by outdoor weather.

Two thermal nodes: the *air* node (air plus light structure and canopy, minutes to respond) and the
*mass* node (floor, soil, pipes and water, hours to respond). Each sub-step freezes the drivers and
solves every balance exactly as a linear first-order ODE (``x -> x_eq + (x - x_eq) * exp(-k h)``),
which stays stable however stiff ventilation makes the air node.

Heat into the air node: the absorbed solar share not taken by the mass, heating, exchange with the
mass, minus cover conduction (reduced by the screen), ventilation with outside air and the latent
heat of transpiration. Vapour: transpiration driven by absorbed radiation and VPD, ventilation,
condensation on the cold cover, and a cap at saturation (fog). CO2: canopy photosynthesis with a
light and CO2 response, respiration, and ventilation toward outside air.

The physics is deterministic; ``seed`` only drives a small slow heat disturbance (people, doors,
unmodelled sources) so that the twin is not perfectly predictable. Sensor noise belongs to the
device layer (:mod:`app.sim.fleet`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone

from app.contracts.command import Setpoints
from app.sim.psychrometrics import (
    KELVIN_OFFSET,
    WATER_VAPOUR_GAS_CONSTANT_J_KG_K,
    relative_humidity_pct,
    saturation_vapour_density_kg_m3,
    saturation_vapour_pressure_pa,
    vapour_density_from_rh_kg_m3,
    vapour_pressure_deficit_kpa,
)
from app.sim.weather import OutdoorWeather, WeatherProvider

AIR_DENSITY_KG_M3 = 1.2
AIR_HEAT_CAPACITY_J_KG_K = 1005.0
LATENT_HEAT_J_KG = 2.45e6
# Global radiation -> PAR: ~47 % of the energy is PAR, at ~4.57 umol per joule.
PAR_UMOL_PER_J_GLOBAL = 0.47 * 4.57
# Moles of air per m3 near 20 degC; converts canopy CO2 fluxes (umol/m2/s) to ppm changes.
AIR_MOLAR_DENSITY_MOL_M3 = 41.6


def _check_positive(obj: object, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(obj, name)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number (got {value!r})")


def _check_fraction(obj: object, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(obj, name)
        if not (0.0 <= value <= 1.0):
            raise ValueError(f"{name} must be within 0..1 (got {value!r})")


@dataclass(frozen=True)
class GreenhouseParams:
    """Physical properties of one greenhouse; defaults describe a ~1000 m² Venlo glasshouse with a
    tomato-like crop, pipe heating, roof vents and one combined energy/shade screen."""

    floor_area_m2: float = 1_000.0
    volume_m3: float = 4_500.0
    cover_area_m2: float = 1_300.0
    cover_u_w_m2_k: float = 6.0
    """Overall heat transfer through single glass, including radiative loss to the sky."""
    cover_transmissivity: float = 0.70
    """Share of outdoor global radiation reaching the crop (glass and structure shading)."""
    screen_shading_fraction: float = 0.45
    """Share of the transmitted light the fully closed screen blocks."""
    screen_insulation_fraction: float = 0.45
    """Share of cover heat loss the fully closed screen saves."""
    screen_condensation_fraction: float = 0.6
    """Share of condensation on the cover that the fully closed screen prevents."""
    heating_capacity_w: float = 200_000.0
    max_vent_air_changes_per_h: float = 40.0
    """Air changes per hour with vents fully open and a fresh wind."""
    leakage_air_changes_per_h: float = 0.5
    """Air changes per hour through leaks with vents closed and no wind."""
    structure_heat_capacity_j_k: float = 1.0e7
    """Light structure, glass and canopy, lumped with the air node."""
    thermal_mass_j_k: float = 1.2e8
    """Floor, soil, heating pipes and water: the slow node."""
    mass_air_conductance_w_k: float = 10_000.0
    ground_conductance_w_k: float = 2_000.0
    ground_temp_c: float = 14.0
    """Deep soil temperature (close to the site's annual mean air temperature)."""
    solar_to_mass_fraction: float = 0.35
    transpiration_radiation_fraction: float = 0.45
    """Share of the radiation absorbed in the greenhouse turned into latent heat by the crop."""
    transpiration_vpd_w_m2_kpa: float = 40.0
    """Latent heat flux per kPa of vapour pressure deficit (night and shade transpiration)."""
    condensation_conductance_m_s: float = 2.5e-3
    photosynthesis_max_umol_m2_s: float = 25.0
    light_half_saturation_umol_m2_s: float = 500.0
    co2_half_saturation_ppm: float = 350.0
    co2_compensation_ppm: float = 50.0
    respiration_umol_m2_s: float = 2.0
    """Crop respiration at 20 °C (doubles every 10 K)."""
    outside_co2_ppm: float = 420.0
    vent_time_constant_s: float = 120.0
    heat_time_constant_s: float = 300.0
    screen_time_constant_s: float = 180.0
    disturbance_w_m2: float = 3.0
    """Standard deviation of the slow random heat disturbance; 0 disables it."""
    disturbance_time_constant_s: float = 900.0

    def __post_init__(self) -> None:
        _check_positive(
            self,
            (
                "floor_area_m2",
                "volume_m3",
                "cover_area_m2",
                "cover_u_w_m2_k",
                "structure_heat_capacity_j_k",
                "thermal_mass_j_k",
                "mass_air_conductance_w_k",
                "leakage_air_changes_per_h",
                "vent_time_constant_s",
                "heat_time_constant_s",
                "screen_time_constant_s",
                "disturbance_time_constant_s",
                "light_half_saturation_umol_m2_s",
                "co2_half_saturation_ppm",
            ),
        )
        _check_fraction(
            self, ("cover_transmissivity", "screen_shading_fraction", "screen_insulation_fraction", "screen_condensation_fraction", "solar_to_mass_fraction", "transpiration_radiation_fraction")
        )
        for f in fields(self):
            value = getattr(self, f.name)
            if not math.isfinite(value) or (f.name != "ground_temp_c" and value < 0):
                raise ValueError(f"{f.name} must be finite and non-negative (got {value!r})")

    @property
    def air_heat_capacity_j_k(self) -> float:
        """Heat capacity of the air node (air plus structure and canopy)."""
        return AIR_DENSITY_KG_M3 * AIR_HEAT_CAPACITY_J_KG_K * self.volume_m3 + self.structure_heat_capacity_j_k


def _photosynthesis_temp_factor(temp_c: float) -> float:
    """1 between 15 and 33 degC, falling linearly to 0 at 5 and 45 degC."""
    return min(max((temp_c - 5.0) / 10.0, 0.0), 1.0, max((45.0 - temp_c) / 12.0, 0.0))


def _clamp_pct(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite (got {value!r})")
    return min(max(value, 0.0), 100.0)


@dataclass(frozen=True, slots=True)
class ClimateState:
    """The true indoor climate and actual actuator positions at ``ts``."""

    ts: datetime
    air_temp_c: float
    rh_pct: float
    co2_ppm: float
    par_umol_m2_s: float
    vent_pct: float
    heat_pct: float
    screen_pct: float
    mass_temp_c: float
    """Temperature of the slow thermal mass (floor, soil, pipes)."""

    @property
    def vpd_kpa(self) -> float:
        """Vapour pressure deficit of the indoor air."""
        return vapour_pressure_deficit_kpa(self.air_temp_c, self.rh_pct)


def default_initial_state(ts: datetime, outdoor: OutdoorWeather) -> ClimateState:
    """A plausible starting climate for ``outdoor`` conditions: a few degrees above outside, kept
    between 16 and 28 °C, humid, outside CO2, actuators at rest."""
    air_temp_c = min(max(outdoor.outside_temp_c + 3.0, 16.0), 28.0)
    return ClimateState(ts=ts, air_temp_c=air_temp_c, rh_pct=75.0, co2_ppm=420.0, par_umol_m2_s=0.0, vent_pct=0.0, heat_pct=0.0, screen_pct=0.0, mass_temp_c=air_temp_c)


class GreenhouseTwin:
    """Simulates one greenhouse from ``start`` on, one :meth:`step` at a time.

    ``weather`` gives the outdoor conditions (:class:`~app.sim.weather.WeatherProvider`);
    ``initial_state`` defaults to :func:`default_initial_state` for the weather at ``start``.
    Steps longer than ``max_substep_s`` are split into equal sub-steps.
    """

    def __init__(self, params: GreenhouseParams, weather: WeatherProvider, seed: int | str = 0, *, start: datetime, initial_state: ClimateState | None = None, max_substep_s: float = 60.0) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")
        if not max_substep_s > 0:
            raise ValueError("max_substep_s must be positive")
        self.params = params
        self.weather = weather
        self.max_substep_s = float(max_substep_s)
        self._rng = random.Random(f"greenhouse-twin:{seed}")
        self._now = start.astimezone(timezone.utc)
        state = initial_state or default_initial_state(self._now, weather.at(self._now))
        self._air_temp_c = state.air_temp_c
        self._mass_temp_c = state.mass_temp_c
        self._vapour_kg_m3 = vapour_density_from_rh_kg_m3(state.air_temp_c, state.rh_pct)
        self._co2_ppm = state.co2_ppm
        self._par_umol_m2_s = state.par_umol_m2_s
        self._vent_pct = _clamp_pct("vent_pct", state.vent_pct)
        self._heat_pct = _clamp_pct("heat_pct", state.heat_pct)
        self._screen_pct = _clamp_pct("screen_pct", state.screen_pct)
        self._disturbance_w_m2 = 0.0
        self._heating_energy_j = 0.0

    @property
    def now(self) -> datetime:
        """Simulated time of :attr:`state`."""
        return self._now

    @property
    def heating_energy_kwh(self) -> float:
        """Heat delivered by the heating system since the twin was created."""
        return self._heating_energy_j / 3.6e6

    @property
    def state(self) -> ClimateState:
        """The current true state."""
        return ClimateState(
            ts=self._now,
            air_temp_c=self._air_temp_c,
            rh_pct=relative_humidity_pct(self._vapour_kg_m3, self._air_temp_c),
            co2_ppm=self._co2_ppm,
            par_umol_m2_s=self._par_umol_m2_s,
            vent_pct=self._vent_pct,
            heat_pct=self._heat_pct,
            screen_pct=self._screen_pct,
            mass_temp_c=self._mass_temp_c,
        )

    def step(self, dt_s: float, setpoints: Setpoints) -> ClimateState:
        """Advance ``dt_s`` seconds with actuators moving toward ``setpoints``; return the state."""
        if not (math.isfinite(dt_s) and dt_s > 0):
            raise ValueError("dt_s must be a positive finite number")
        n_sub = max(1, math.ceil(dt_s / self.max_substep_s - 1e-9))
        h_s = dt_s / n_sub
        t0 = self._now
        for k in range(n_sub):
            # Drivers are taken at the sub-step midpoint (second-order accurate for smooth weather).
            outdoor = self.weather.at(t0 + timedelta(seconds=(k + 0.5) * h_s))
            self._substep(h_s, setpoints, outdoor)
        self._now = t0 + timedelta(seconds=dt_s)
        return self.state

    def _move_actuators(self, h_s: float, setpoints: Setpoints) -> None:
        """First-order lag toward the setpoints (motors, valves and water in the pipes)."""
        p = self.params
        self._vent_pct += (setpoints.vent_pct - self._vent_pct) * (1.0 - math.exp(-h_s / p.vent_time_constant_s))
        self._heat_pct += (setpoints.heat_pct - self._heat_pct) * (1.0 - math.exp(-h_s / p.heat_time_constant_s))
        self._screen_pct += (setpoints.screen_pct - self._screen_pct) * (1.0 - math.exp(-h_s / p.screen_time_constant_s))

    def _step_disturbance(self, h_s: float) -> None:
        """Slow random heat disturbance (Ornstein-Uhlenbeck, exact discretisation)."""
        p = self.params
        if p.disturbance_w_m2 > 0:
            decay = math.exp(-h_s / p.disturbance_time_constant_s)
            self._disturbance_w_m2 = self._disturbance_w_m2 * decay + p.disturbance_w_m2 * math.sqrt(1.0 - decay * decay) * self._rng.gauss(0.0, 1.0)

    def _air_exchange_per_s(self, vent: float, wind_m_s: float) -> float:
        """Air changes per second: wind pressure dominates; the stack effect keeps some exchange in
        calm air."""
        p = self.params
        wind_factor = min(1.0, 0.35 + 0.65 * wind_m_s / 5.0)
        air_changes_per_h = p.leakage_air_changes_per_h * (1.0 + 0.1 * wind_m_s) + vent * p.max_vent_air_changes_per_h * wind_factor
        return air_changes_per_h / 3600.0

    def _mass_after(self, h_s: float, t_mass: float, t_air_new: float, solar_in_w_m2: float) -> float:
        """The thermal mass after ``h_s``, coupled to the updated air and the deep ground."""
        p = self.params
        g_mass_w_k = p.mass_air_conductance_w_k + p.ground_conductance_w_k
        t_mass_eq = (p.solar_to_mass_fraction * solar_in_w_m2 * p.floor_area_m2 + p.mass_air_conductance_w_k * t_air_new + p.ground_conductance_w_k * p.ground_temp_c) / g_mass_w_k
        return t_mass_eq + (t_mass - t_mass_eq) * math.exp(-g_mass_w_k * h_s / p.thermal_mass_j_k)

    def _co2_after(self, h_s: float, t_air: float, vent_rate_per_s: float) -> float:
        """CO2 after ``h_s``: net canopy uptake (explicit, slow) and ventilation toward outside air
        (exact), from the state at the start of the step."""
        p = self.params
        co2_ppm = self._co2_ppm
        co2_effective = max(co2_ppm - p.co2_compensation_ppm, 0.0)
        gross_umol_m2_s = (
            p.photosynthesis_max_umol_m2_s
            * self._par_umol_m2_s
            / (self._par_umol_m2_s + p.light_half_saturation_umol_m2_s)
            * co2_effective
            / (co2_effective + p.co2_half_saturation_ppm)
            * _photosynthesis_temp_factor(t_air)
        )
        # Q10 = 2, levelling off above 35 degC where the crop is heat-stressed anyway.
        respiration_umol_m2_s = p.respiration_umol_m2_s * 2.0 ** ((min(t_air, 35.0) - 20.0) / 10.0)
        uptake_ppm_s = (gross_umol_m2_s - respiration_umol_m2_s) * p.floor_area_m2 / (AIR_MOLAR_DENSITY_MOL_M3 * p.volume_m3)
        co2_eq = p.outside_co2_ppm - uptake_ppm_s / vent_rate_per_s
        return co2_eq + (co2_ppm - co2_eq) * math.exp(-vent_rate_per_s * h_s)

    def _substep(self, h_s: float, setpoints: Setpoints, outdoor: OutdoorWeather) -> None:
        """One explicit integration step of the coupled heat, moisture, CO2 and light balances:
        every flux reads the state at the start of the step before any is applied."""
        p = self.params
        self._move_actuators(h_s, setpoints)
        vent = self._vent_pct / 100.0
        heat = self._heat_pct / 100.0
        screen = self._screen_pct / 100.0

        t_out = outdoor.outside_temp_c
        wind_m_s = max(outdoor.wind_m_s, 0.0)
        t_air = self._air_temp_c
        t_mass = self._mass_temp_c
        area = p.floor_area_m2

        # Radiation absorbed inside, per m2 floor.
        solar_in_w_m2 = max(outdoor.solar_w_m2, 0.0) * p.cover_transmissivity * (1.0 - screen * p.screen_shading_fraction)
        self._par_umol_m2_s = solar_in_w_m2 * PAR_UMOL_PER_J_GLOBAL

        vent_rate_per_s = self._air_exchange_per_s(vent, wind_m_s)
        flow_m3_s = vent_rate_per_s * p.volume_m3
        g_vent_w_k = flow_m3_s * AIR_DENSITY_KG_M3 * AIR_HEAT_CAPACITY_J_KG_K
        g_cover_w_k = p.cover_u_w_m2_k * p.cover_area_m2 * (1.0 - screen * p.screen_insulation_fraction) * (1.0 + 0.03 * wind_m_s)

        # Transpiration: a radiation term plus a VPD term; the VPD term is linear in indoor vapour
        # density, so it goes into the implicit vapour update below.
        t_air_k = t_air + KELVIN_OFFSET
        es_air_pa = saturation_vapour_pressure_pa(t_air)
        e_air_pa = self._vapour_kg_m3 * WATER_VAPOUR_GAS_CONSTANT_J_KG_K * t_air_k
        rad_transpiration_kg_s = p.transpiration_radiation_fraction * solar_in_w_m2 * area / LATENT_HEAT_J_KG
        vpd_coeff_kg_s_per_pa = p.transpiration_vpd_w_m2_kpa * area / 1000.0 / LATENT_HEAT_J_KG
        # The VPD term only adds water while the indoor air is below saturation.
        below_saturation = es_air_pa > e_air_pa
        transpiration_kg_s = rad_transpiration_kg_s + (vpd_coeff_kg_s_per_pa * (es_air_pa - e_air_pa) if below_saturation else 0.0)

        self._step_disturbance(h_s)

        # Air node.
        heating_w = heat * p.heating_capacity_w
        source_air_w = (
            (1.0 - p.solar_to_mass_fraction) * solar_in_w_m2 * area
            + heating_w
            + self._disturbance_w_m2 * area
            - LATENT_HEAT_J_KG * transpiration_kg_s
            + p.mass_air_conductance_w_k * t_mass
            + (g_cover_w_k + g_vent_w_k) * t_out
        )
        g_air_w_k = p.mass_air_conductance_w_k + g_cover_w_k + g_vent_w_k
        t_air_eq = source_air_w / g_air_w_k
        t_air_new = t_air_eq + (t_air - t_air_eq) * math.exp(-g_air_w_k * h_s / p.air_heat_capacity_j_k)

        t_mass_new = self._mass_after(h_s, t_mass, t_air_new, solar_in_w_m2)

        # Vapour: V dX/dt = E_rad + c (es - X Rv T) - F (X - X_out) - G_cond (X - X_sat(cover)).
        x_out = vapour_density_from_rh_kg_m3(t_out, outdoor.outside_rh_pct)
        # The cover sits between inside and outside temperature, closer to the outside.
        t_cover_c = t_out + 0.35 * (t_air - t_out)
        x_cover_sat = saturation_vapour_density_kg_m3(t_cover_c)
        g_cond_m3_s = p.condensation_conductance_m_s * p.cover_area_m2 * (1.0 - screen * p.screen_condensation_fraction) if self._vapour_kg_m3 > x_cover_sat else 0.0
        # c (es - X Rv T) splits into a source c es and a sink c Rv T X, solved implicitly.
        if below_saturation:
            vpd_source_kg_s = vpd_coeff_kg_s_per_pa * es_air_pa
            vpd_sink_m3_s = vpd_coeff_kg_s_per_pa * WATER_VAPOUR_GAS_CONSTANT_J_KG_K * t_air_k
        else:
            vpd_source_kg_s = vpd_sink_m3_s = 0.0
        source_kg_s = rad_transpiration_kg_s + vpd_source_kg_s + flow_m3_s * x_out + g_cond_m3_s * x_cover_sat
        sink_m3_s = flow_m3_s + g_cond_m3_s + vpd_sink_m3_s
        x_eq = source_kg_s / sink_m3_s
        x_new = x_eq + (self._vapour_kg_m3 - x_eq) * math.exp(-sink_m3_s * h_s / p.volume_m3)
        # Fog/condensation: air cannot hold more than saturation at its new temperature.
        x_new = min(max(x_new, 0.0), saturation_vapour_density_kg_m3(t_air_new))

        co2_new = self._co2_after(h_s, t_air, vent_rate_per_s)

        self._air_temp_c = t_air_new
        self._mass_temp_c = t_mass_new
        self._vapour_kg_m3 = x_new
        self._co2_ppm = max(co2_new, p.co2_compensation_ppm)
        self._heating_energy_j += heating_w * h_s
