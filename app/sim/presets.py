"""A second, different greenhouse for tests and benchmarks: a small poly house and how it reports.

The fleet's default (:class:`~app.sim.twin.GreenhouseParams`) is a ~1000 m² Venlo glasshouse with
pipe heating, roof vents and a screen, whose devices report every minute with every sensor. Code
that only ever sees that greenhouse can quietly depend on it. :data:`POLY_HOUSE` is unlike it in
every way that matters to the features and the models:

- a ~400 m² double-layer polyethylene tunnel: smaller, a better-insulating but darker cover;
- forced-air unit heaters: much less capacity, but fast (no pipe water to warm);
- roll-up side vents: weaker and slower ventilation, a tighter house;
- lighter thermal mass (no heating pipes, bare soil) and no screen at all;
- a hobby-grade climate computer (:data:`POLY_HOUSE_CLIMATE`): other setpoints, no screen rule;
- a logger that reports every 5 minutes, with some jitter and lost readings, without PAR, wind or
  outside humidity sensors and without a screen actuator (:data:`POLY_HOUSE_REPORTING`).

:func:`poly_house_fleet` builds a fleet of such houses; :func:`raw_readings_frame` turns any fleet
and profile into the raw-readings table the feature engine reads.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from app.contracts.reading import MEASUREMENT_NAMES
from app.sim.climate_computer import ClimateComputerConfig
from app.sim.fleet import FleetSimulator
from app.sim.reporting import ReportingProfile, iter_reports
from app.sim.twin import GreenhouseParams
from app.sim.weather import WeatherProvider

if TYPE_CHECKING:
    import pandas as pd

POLY_HOUSE = GreenhouseParams(
    floor_area_m2=400.0,
    volume_m3=1_300.0,  # ~3.2 m mean height under the arches
    cover_area_m2=640.0,
    cover_u_w_m2_k=4.0,  # two inflated film layers insulate better than single glass (6.0)
    cover_transmissivity=0.60,  # ... and let less light through (glass: 0.70)
    screen_shading_fraction=0.0,  # no screen: the screen actuator moves nothing
    screen_insulation_fraction=0.0,
    screen_condensation_fraction=0.0,
    heating_capacity_w=75_000.0,  # ~190 W/m² of floor, a third of the glasshouse's 200 kW
    max_vent_air_changes_per_h=18.0,  # roll-up side walls (roof vents: 40)
    leakage_air_changes_per_h=0.3,
    structure_heat_capacity_j_k=2.5e6,
    thermal_mass_j_k=2.0e7,  # bare soil, no pipe water (the glasshouse: 1.2e8)
    mass_air_conductance_w_k=3_000.0,
    ground_conductance_w_k=800.0,
    condensation_conductance_m_s=3.5e-3,  # film drips more readily than glass
    photosynthesis_max_umol_m2_s=18.0,  # a lighter leafy crop
    vent_time_constant_s=300.0,  # roll-up motors are slow
    heat_time_constant_s=90.0,  # hot air, no pipes to warm
    disturbance_w_m2=5.0,  # doors open more often in a small house
)
"""A ~400 m² double-poly house with unit heaters, side vents and no screen (module docstring)."""

POLY_HOUSE_CLIMATE = ClimateComputerConfig(
    heat_setpoint_day_c=20.0,
    heat_setpoint_night_c=14.0,
    heat_band_c=1.5,
    vent_setpoint_c=27.0,
    vent_band_c=3.0,
    rh_max_pct=90.0,
    rh_band_pct=8.0,
    rh_vent_max_pct=20.0,
    screen_night_pct=0.0,  # no screen to close
    shade_pct=0.0,
    excitation_window_s=1_800.0,
)
"""The poly house's climate computer: warmer days, colder nights, later venting, no screen."""

POLY_HOUSE_REPORTING = ReportingProfile(
    cadence_s=300.0,
    phase_s=120.0,  # the logger samples at :02, :07, ...: off the clock's quarter hours
    jitter_s=20.0,
    drop_share=0.05,
    daily_outage_share=0.2,
    daily_outage_s=45 * 60.0,
    absent=frozenset({"par_umol_m2_s", "wind_m_s", "outside_rh_pct", "screen_pct"}),
    seed=400,
)
"""How the poly house reports: every 5 minutes ± 20 s, 5 % of readings lost, a 45-minute outage
on one day in five, no PAR, wind or outside humidity sensor, no screen actuator."""


def poly_house_fleet(n_greenhouses: int, start: datetime, seed: int = 0, *, weather: WeatherProvider | None = None, vary_greenhouses: bool = False) -> FleetSimulator:
    """A fleet of :data:`POLY_HOUSE` greenhouses run by :data:`POLY_HOUSE_CLIMATE`, stepping every
    minute (report them through :data:`POLY_HOUSE_REPORTING`); identical houses unless
    ``vary_greenhouses``."""
    return FleetSimulator(n_greenhouses, start, step_s=60.0, seed=seed, weather=weather, base_params=POLY_HOUSE, vary_greenhouses=vary_greenhouses, climate_config=POLY_HOUSE_CLIMATE)


def raw_readings_frame(fleet: FleetSimulator, profile: ReportingProfile, duration_s: float) -> pd.DataFrame:
    """Step ``fleet`` for ``duration_s`` and return what ``profile`` sends as the raw-readings table
    the feature engine reads: ``greenhouse_id``, ``device_id``, ``ts`` (UTC) and one column per
    measurement name (NaN where a reading does not have it), in the order sent."""
    import pandas as pd

    rows = [{"greenhouse_id": r["greenhouse_id"], "device_id": r["device_id"], "ts": r["ts"], **r["measurements"]} for readings in iter_reports(fleet, profile, duration_s) for r in readings]
    frame = pd.DataFrame(rows, columns=["greenhouse_id", "device_id", "ts", *MEASUREMENT_NAMES])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601")
    return frame.astype({name: "float64" for name in MEASUREMENT_NAMES})
