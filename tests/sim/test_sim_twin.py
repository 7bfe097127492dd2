"""Physics of one greenhouse twin: directions of actuator effects, stability, determinism."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from app.contracts.command import Setpoints
from app.sim.twin import ClimateState, GreenhouseParams, GreenhouseTwin, default_initial_state
from app.sim.weather import ConstantWeather, Tmy3Weather, WeatherProvider

UTC = timezone.utc
START = datetime(2026, 1, 10, 6, tzinfo=UTC)
DEFAULT = GreenhouseParams()
QUIET = replace(DEFAULT, disturbance_w_m2=0.0)


def _state(air_temp_c: float, rh_pct: float = 70.0, **overrides: float) -> ClimateState:
    """A resting greenhouse (outside CO2, dark, actuators at rest) at ``air_temp_c``."""
    base = default_initial_state(START, ConstantWeather().at(START))
    return replace(base, air_temp_c=air_temp_c, rh_pct=rh_pct, mass_temp_c=air_temp_c, **overrides)


def _run(
    weather: WeatherProvider,
    setpoints: Setpoints,
    duration_s: float,
    *,
    start: datetime = START,
    initial: ClimateState | None = None,
    params: GreenhouseParams = DEFAULT,
    seed: int = 0,
    dt_s: float = 60.0,
) -> GreenhouseTwin:
    twin = GreenhouseTwin(params, weather, seed, start=start, initial_state=initial)
    for _ in range(round(duration_s / dt_s)):
        twin.step(dt_s, setpoints)
    return twin


def _assert_physical(state: ClimateState) -> None:
    assert -40 < state.air_temp_c < 70
    assert 0.0 <= state.rh_pct <= 100.0
    assert 0.0 < state.co2_ppm < 5000
    assert state.par_umol_m2_s >= 0
    for pct in (state.vent_pct, state.heat_pct, state.screen_pct):
        assert 0.0 <= pct <= 100.0


def test_setpoints_are_clamped_and_validated():
    sp = Setpoints.clamped(vent_pct=150, heat_pct=-5, screen_pct=42.5)
    assert sp.model_dump() == {"vent_pct": 100.0, "heat_pct": 0.0, "screen_pct": 42.5}
    with pytest.raises(ValueError):
        Setpoints.clamped(vent_pct=math.nan)
    with pytest.raises(ValueError):
        Setpoints.clamped(heat_pct=math.inf)


def test_params_are_validated():
    with pytest.raises(ValueError):
        GreenhouseParams(cover_transmissivity=1.5)
    with pytest.raises(ValueError):
        GreenhouseParams(volume_m3=0)
    with pytest.raises(ValueError):
        GreenhouseParams(heating_capacity_w=-1)


def test_full_heating_warms_the_greenhouse_and_is_metered():
    cold_night = ConstantWeather(outside_temp_c=0.0, outside_rh_pct=80.0, solar_w_m2=0.0, wind_m_s=3.0)
    initial = _state(15.0)
    hot = _run(cold_night, Setpoints.clamped(heat_pct=100), 2 * 3600, initial=initial)
    cold = _run(cold_night, Setpoints.clamped(heat_pct=0), 2 * 3600, initial=initial)
    assert hot.state.air_temp_c > cold.state.air_temp_c + 5.0
    assert hot.state.air_temp_c > initial.air_temp_c > cold.state.air_temp_c
    # 200 kW for 2 h, minus what the 5-minute heating lag withholds at the start.
    assert hot.heating_energy_kwh == pytest.approx(200 * 2 - 200 * 300 / 3600, rel=0.02)
    assert cold.heating_energy_kwh == 0.0


@pytest.mark.parametrize(("outside_temp_c", "inside_temp_c"), [(5.0, 20.0), (32.0, 20.0)], ids=["outside-colder", "outside-warmer"])
def test_open_vents_move_indoor_temperature_toward_outside(outside_temp_c, inside_temp_c):
    weather = ConstantWeather(outside_temp_c=outside_temp_c, outside_rh_pct=50.0, solar_w_m2=0.0, wind_m_s=3.0)
    initial = _state(inside_temp_c)
    vented = _run(weather, Setpoints.clamped(vent_pct=100), 1800, initial=initial, params=QUIET)
    closed = _run(weather, Setpoints.clamped(vent_pct=0), 1800, initial=initial, params=QUIET)
    gap_vented = abs(vented.state.air_temp_c - outside_temp_c)
    gap_closed = abs(closed.state.air_temp_c - outside_temp_c)
    assert gap_vented < gap_closed - 2.0
    assert gap_vented < abs(inside_temp_c - outside_temp_c) / 2


def test_open_vents_cool_a_sunny_greenhouse_toward_real_outdoor_air():
    start = datetime(2026, 7, 12, 16, tzinfo=UTC)  # 11:00 local, real TMY3 July weather
    weather = Tmy3Weather(start)
    outside_c = weather.at(start + timedelta(hours=1)).outside_temp_c
    initial = _state(outside_c + 2.0)
    vented = _run(weather, Setpoints.clamped(vent_pct=100), 3600, start=start, initial=initial)
    closed = _run(weather, Setpoints.clamped(vent_pct=0), 3600, start=start, initial=initial)
    assert closed.state.air_temp_c > vented.state.air_temp_c + 3.0
    assert abs(vented.state.air_temp_c - outside_c) < abs(closed.state.air_temp_c - outside_c)


def test_open_vents_cool_toward_a_real_winter_night():
    weather = Tmy3Weather(START)  # 01:00 local on 10 January
    initial = _state(18.0)
    vented = _run(weather, Setpoints.clamped(vent_pct=100), 1800, initial=initial)
    closed = _run(weather, Setpoints.clamped(vent_pct=0), 1800, initial=initial)
    outside_c = weather.at(START + timedelta(minutes=30)).outside_temp_c
    assert outside_c < 5
    assert outside_c < vented.state.air_temp_c < closed.state.air_temp_c - 3.0


def test_screen_cuts_solar_gain_at_noon():
    start = datetime(2026, 6, 15, 16, 30, tzinfo=UTC)  # 11:30 local, real TMY3 June weather
    weather = Tmy3Weather(start)
    initial = _state(26.0)
    screened = _run(weather, Setpoints.clamped(vent_pct=20, screen_pct=100), 3600, start=start, initial=initial)
    open_ = _run(weather, Setpoints.clamped(vent_pct=20, screen_pct=0), 3600, start=start, initial=initial)
    assert open_.state.par_umol_m2_s > 500
    expected_ratio = 1 - GreenhouseParams().screen_shading_fraction
    assert screened.state.par_umol_m2_s == pytest.approx(open_.state.par_umol_m2_s * expected_ratio, rel=0.02)
    assert screened.state.air_temp_c < open_.state.air_temp_c - 1.0


def test_screen_saves_heat_on_a_cold_night():
    night = ConstantWeather(outside_temp_c=-5.0, outside_rh_pct=80.0, solar_w_m2=0.0, wind_m_s=3.0)
    initial = _state(16.0)
    screened = _run(night, Setpoints.clamped(heat_pct=50, screen_pct=100), 3 * 3600, initial=initial)
    open_ = _run(night, Setpoints.clamped(heat_pct=50, screen_pct=0), 3 * 3600, initial=initial)
    assert screened.state.air_temp_c > open_.state.air_temp_c + 2.0


def test_actuators_follow_setpoints_with_a_lag():
    twin = GreenhouseTwin(GreenhouseParams(), ConstantWeather(), start=START, initial_state=_state(18.0))
    first = twin.step(60, Setpoints.clamped(vent_pct=100, heat_pct=100, screen_pct=100))
    for pct in (first.vent_pct, first.heat_pct, first.screen_pct):
        assert 5.0 < pct < 60.0
    assert first.vent_pct > first.screen_pct > first.heat_pct  # 2, 3 and 5 minute time constants
    for _ in range(40):
        state = twin.step(60, Setpoints.clamped(vent_pct=100, heat_pct=100, screen_pct=100))
    assert min(state.vent_pct, state.heat_pct, state.screen_pct) > 99.0
    assert state.ts == START + timedelta(minutes=41)


def test_transpiration_and_light_raise_humidity_and_draw_down_co2():
    sunny = ConstantWeather(outside_temp_c=15.0, outside_rh_pct=50.0, solar_w_m2=600.0, wind_m_s=1.0, sun_elevation_deg=40.0)
    twin = _run(sunny, Setpoints.clamped(), 3600, initial=_state(20.0, rh_pct=50.0))
    assert twin.state.rh_pct > 80.0
    assert twin.state.co2_ppm < 380.0
    dark = ConstantWeather(outside_temp_c=15.0, outside_rh_pct=50.0, solar_w_m2=0.0, wind_m_s=1.0)
    night = _run(dark, Setpoints.clamped(heat_pct=30), 3600, initial=_state(20.0, rh_pct=50.0))
    assert night.state.co2_ppm > 420.0  # respiration


def test_condensation_caps_humidity_at_saturation():
    fog = ConstantWeather(outside_temp_c=2.0, outside_rh_pct=100.0, solar_w_m2=300.0, wind_m_s=0.0, sun_elevation_deg=20.0)
    twin = _run(fog, Setpoints.clamped(heat_pct=40), 4 * 3600, initial=_state(15.0, rh_pct=99.0))
    assert twin.state.rh_pct <= 100.0
    _assert_physical(twin.state)


@pytest.mark.parametrize(
    ("weather", "setpoints"),
    [
        (ConstantWeather(-20.0, 90.0, 0.0, 10.0, -30.0), Setpoints.clamped(vent_pct=100)),
        (ConstantWeather(-20.0, 90.0, 0.0, 10.0, -30.0), Setpoints.clamped(heat_pct=100, screen_pct=100)),
        (ConstantWeather(40.0, 20.0, 1000.0, 0.0, 70.0), Setpoints.clamped()),
        (ConstantWeather(38.0, 30.0, 1000.0, 8.0, 70.0), Setpoints.clamped(vent_pct=100)),
    ],
    ids=["arctic-vented", "arctic-heated", "desert-closed", "desert-vented"],
)
def test_extreme_constant_weather_stays_physical(weather, setpoints):
    twin = GreenhouseTwin(GreenhouseParams(), weather, start=START)
    for _ in range(24 * 60):
        _assert_physical(twin.step(60, setpoints))
    if weather.outside_temp_c < 0:
        assert twin.state.air_temp_c >= weather.outside_temp_c  # the floor never sinks below outside


def test_large_steps_are_stable_and_agree_with_small_ones():
    windy = ConstantWeather(outside_temp_c=0.0, outside_rh_pct=60.0, solar_w_m2=0.0, wind_m_s=10.0)
    initial = _state(25.0)
    sp = Setpoints.clamped(vent_pct=100)
    # A whole hour in one sub-step (explicit Euler would blow up): no overshoot past outside.
    coarse = GreenhouseTwin(QUIET, windy, start=START, initial_state=initial, max_substep_s=3600)
    state = coarse.step(3600, sp)
    assert 0.0 <= state.air_temp_c <= 25.0
    _assert_physical(state)
    fine = _run(windy, sp, 3600, initial=initial, params=QUIET, dt_s=10)
    default = _run(windy, sp, 3600, initial=initial, params=QUIET, dt_s=600)
    assert default.state.air_temp_c == pytest.approx(fine.state.air_temp_c, abs=0.1)
    assert default.state.rh_pct == pytest.approx(fine.state.rh_pct, abs=0.5)


def test_same_seed_same_trajectory_other_seed_differs():
    weather = Tmy3Weather(START)
    sp = Setpoints.clamped(vent_pct=10, heat_pct=40, screen_pct=50)
    a = _run(weather, sp, 6 * 3600, seed=7)
    b = _run(weather, sp, 6 * 3600, seed=7)
    c = _run(weather, sp, 6 * 3600, seed=8)
    assert a.state == b.state
    assert a.state.air_temp_c != c.state.air_temp_c


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        GreenhouseTwin(GreenhouseParams(), ConstantWeather(), start=datetime(2026, 1, 1))
    twin = GreenhouseTwin(GreenhouseParams(), ConstantWeather(), start=START)
    with pytest.raises(ValueError):
        twin.step(0, Setpoints.clamped())
    with pytest.raises(ValueError):
        twin.step(math.nan, Setpoints.clamped())
