"""The greenhouse's own rule-based climate computer, used while no external command is in force.

Rules of a typical horticultural climate computer, with proportional bands:

- heating toward a day or night heating setpoint (band centred on the setpoint);
- ventilation above a vent setpoint, and a limited humidity vent above a maximum RH;
- the screen closed at night when it is cold outside (energy saving) and partly closed at very high
  radiation (shading).

On top of the rules, *seeded random excitation*: in each excitation window the computer may shift
its temperature setpoints and add offsets to individual actuators. Logged data from a purely
rule-driven greenhouse has actuators almost collinear with weather; independent perturbations make
the effect of each actuator identifiable when models are trained on the data later.

:meth:`ClimateComputer.decide` is a pure function of its arguments, the configuration and the seed:
the perturbation of a window is derived from ``(seed, window index)`` only, so the result does not
depend on how often or in which order it is called.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime

from app.contracts.command import Setpoints
from app.sim.weather import OutdoorWeather


@dataclass(frozen=True)
class ClimateComputerConfig:
    """Setpoints, bands and excitation of the local climate computer."""

    heat_setpoint_day_c: float = 18.0
    heat_setpoint_night_c: float = 16.0
    heat_band_c: float = 2.0
    """Heating goes from 0 % at setpoint + band/2 to 100 % at setpoint - band/2."""
    vent_setpoint_c: float = 24.0
    vent_band_c: float = 4.0
    """Vents go from 0 % at the vent setpoint to 100 % at setpoint + band."""
    rh_max_pct: float = 85.0
    rh_band_pct: float = 10.0
    rh_vent_max_pct: float = 30.0
    """Largest opening the humidity rule asks for (at ``rh_max_pct + rh_band_pct``)."""
    screen_night_below_outside_c: float = 15.0
    screen_night_pct: float = 100.0
    screen_open_above_solar_w_m2: float = 50.0
    """The energy screen stays closed (when cold) until outdoor radiation passes this level; opening
    it right at sunrise would dump the warm air into a still-cold cover."""
    shade_above_solar_w_m2: float = 750.0
    shade_pct: float = 60.0
    excitation: bool = True
    excitation_window_s: float = 1_200.0
    excitation_probability: float = 0.3
    """Chance, per window and per perturbed quantity, that it is perturbed."""
    excitation_amplitude_pct: float = 30.0
    """Largest actuator offset (uniform in ±amplitude)."""
    excitation_setpoint_amplitude_c: float = 1.5
    """Largest shift of the heating and vent setpoints (uniform in ±amplitude)."""
    excitation_min_air_temp_c: float = 12.0
    excitation_max_air_temp_c: float = 32.0
    """Outside this measured air temperature range the crop is at risk: no excitation."""

    def __post_init__(self) -> None:
        for name in ("heat_band_c", "vent_band_c", "rh_band_pct", "excitation_window_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if not 0.0 <= self.excitation_probability <= 1.0:
            raise ValueError("excitation_probability must be within 0..1")
        if self.excitation_amplitude_pct < 0 or self.excitation_setpoint_amplitude_c < 0:
            raise ValueError("excitation amplitudes must be non-negative")


@dataclass(frozen=True, slots=True)
class _Excitation:
    heat_setpoint_offset_c: float = 0.0
    vent_setpoint_offset_c: float = 0.0
    vent_offset_pct: float = 0.0
    heat_offset_pct: float = 0.0
    screen_offset_pct: float = 0.0


_NO_EXCITATION = _Excitation()


def _ramp_pct(error: float, band: float) -> float:
    """0 % at ``error <= 0``, 100 % at ``error >= band``, linear between."""
    return min(max(error / band, 0.0), 1.0) * 100.0


class ClimateComputer:
    """Decides actuator setpoints from indoor readings and the outdoor weather station."""

    def __init__(self, config: ClimateComputerConfig | None = None, seed: int | str = 0) -> None:
        self.config = config or ClimateComputerConfig()
        self.seed = seed
        # Memo of the last window's perturbation (a cache, not state: it is recomputable).
        self._cached_window: int | None = None
        self._cached_excitation = _NO_EXCITATION

    def excitation_window(self, ts: datetime) -> int:
        """Index of the excitation window containing ``ts``."""
        return math.floor(ts.timestamp() / self.config.excitation_window_s)

    def _excitation(self, ts: datetime) -> _Excitation:
        cfg = self.config
        if not cfg.excitation or cfg.excitation_probability == 0.0:
            return _NO_EXCITATION
        window = self.excitation_window(ts)
        if window != self._cached_window:
            rng = random.Random(f"climate-computer-excitation:{self.seed}:{window}")

            def draw(amplitude: float) -> float:
                # Always consume both draws so that each quantity has its own fixed stream slot.
                active = rng.random() < cfg.excitation_probability
                offset = rng.uniform(-amplitude, amplitude)
                return offset if active else 0.0

            self._cached_excitation = _Excitation(
                heat_setpoint_offset_c=draw(cfg.excitation_setpoint_amplitude_c),
                vent_setpoint_offset_c=draw(cfg.excitation_setpoint_amplitude_c),
                vent_offset_pct=draw(cfg.excitation_amplitude_pct),
                heat_offset_pct=draw(cfg.excitation_amplitude_pct),
                screen_offset_pct=draw(cfg.excitation_amplitude_pct),
            )
            self._cached_window = window
        return self._cached_excitation

    def decide(self, ts: datetime, air_temp_c: float, rh_pct: float, outdoor: OutdoorWeather) -> Setpoints:
        """Actuator setpoints for ``ts`` given the indoor air temperature and humidity and outdoor
        conditions (as measured by the greenhouse's own sensors)."""
        cfg = self.config
        exc = self._excitation(ts)
        if not cfg.excitation_min_air_temp_c <= air_temp_c <= cfg.excitation_max_air_temp_c:
            exc = _NO_EXCITATION
        is_day = outdoor.sun_elevation_deg > 0.0

        heat_setpoint_c = (cfg.heat_setpoint_day_c if is_day else cfg.heat_setpoint_night_c) + exc.heat_setpoint_offset_c
        heat_pct = _ramp_pct(heat_setpoint_c + cfg.heat_band_c / 2.0 - air_temp_c, cfg.heat_band_c)

        vent_setpoint_c = cfg.vent_setpoint_c + exc.vent_setpoint_offset_c
        # Never ventilate for temperature below the heating setpoint (the two would fight).
        vent_setpoint_c = max(vent_setpoint_c, heat_setpoint_c + cfg.heat_band_c / 2.0)
        vent_temp_pct = _ramp_pct(air_temp_c - vent_setpoint_c, cfg.vent_band_c)
        vent_rh_pct = _ramp_pct(rh_pct - cfg.rh_max_pct, cfg.rh_band_pct) * cfg.rh_vent_max_pct / 100.0
        vent_pct = max(vent_temp_pct, vent_rh_pct)

        is_dark = not is_day or outdoor.solar_w_m2 < cfg.screen_open_above_solar_w_m2
        if is_dark and outdoor.outside_temp_c < cfg.screen_night_below_outside_c:
            screen_pct = cfg.screen_night_pct
        elif is_day and outdoor.solar_w_m2 > cfg.shade_above_solar_w_m2:
            screen_pct = cfg.shade_pct
        else:
            screen_pct = 0.0

        # Setpoints clamps the perturbed values back into 0..100.
        return Setpoints.clamped(vent_pct=vent_pct + exc.vent_offset_pct, heat_pct=heat_pct + exc.heat_offset_pct, screen_pct=screen_pct + exc.screen_offset_pct)
