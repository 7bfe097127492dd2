"""The simulated fleet: wire contract, determinism, control override and expiry, energy, speed."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from app.contracts.command import Setpoints
from app.sim.climate_computer import ClimateComputerConfig
from app.sim.fleet import FleetSimulator, SensorNoise
from app.sim.twin import GreenhouseParams

UTC = timezone.utc
WINTER = datetime(2026, 1, 10, tzinfo=UTC)
SUMMER = datetime(2026, 7, 10, tzinfo=UTC)
WEEK_S = 7 * 86_400

# Plausible ranges for a heated glasshouse in Greensboro, NC (tighter than the contract bounds).
PLAUSIBLE = {
    "air_temp_c": (-10.0, 50.0),
    "rh_pct": (0.0, 100.0),
    "co2_ppm": (100.0, 2000.0),
    "par_umol_m2_s": (0.0, 2500.0),
    "outside_temp_c": (-25.0, 45.0),
    "outside_rh_pct": (0.0, 100.0),
    "solar_w_m2": (0.0, 1400.0),
    "wind_m_s": (0.0, 40.0),
    "vent_pct": (0.0, 100.0),
    "heat_pct": (0.0, 100.0),
    "screen_pct": (0.0, 100.0),
}
DEVICE_FIELDS = {
    "climate": {"air_temp_c", "rh_pct", "co2_ppm", "par_umol_m2_s"},
    "weather": {"outside_temp_c", "outside_rh_pct", "solar_w_m2", "wind_m_s"},
    "actuators": {"vent_pct", "heat_pct", "screen_pct"},
}


def _collect(fleet: FleetSimulator, duration_s: float) -> list[dict]:
    return [reading for step in fleet.iter_steps(duration_s) for reading in step]


@pytest.fixture(scope="module")
def winter_week():
    """Two greenhouses, seven simulated days at 60 s steps (also the speed check)."""
    FleetSimulator(1, WINTER).step()  # warm the weather-file cache so only simulation is timed
    began_wall, began_cpu = time.perf_counter(), time.process_time()
    fleet = FleetSimulator(2, WINTER, step_s=60.0, seed=0)
    readings = _collect(fleet, WEEK_S)
    wall_s, cpu_s = time.perf_counter() - began_wall, time.process_time() - began_cpu
    print(f"\n[sim speed] 2 greenhouses x 7 days at 60 s steps: {wall_s:.2f} s wall, {cpu_s:.2f} s CPU ({WEEK_S / wall_s:,.0f}x faster than real time, {len(readings)} readings)")
    return fleet, readings


@pytest.fixture(scope="module")
def summer_days():
    fleet = FleetSimulator(2, SUMMER, step_s=60.0, seed=0)
    return fleet, _collect(fleet, 2 * 86_400)


def test_week_emits_three_contract_readings_per_greenhouse_per_step(winter_week):
    fleet, readings = winter_week
    steps = WEEK_S // 60
    assert len(readings) == steps * 2 * 3
    assert fleet.greenhouse_ids == ("gh-01", "gh-02")
    assert fleet.now == WINTER + timedelta(days=7)
    assert Counter(r["device_id"] for r in readings) == {f"{gh}-{dev}": steps for gh in fleet.greenhouse_ids for dev in DEVICE_FIELDS}
    first = readings[0]
    assert first["ts"] == "2026-01-10T00:01:00Z" and readings[-1]["ts"] == "2026-01-17T00:00:00Z"
    for reading in readings[::997]:
        assert set(reading) == {"schema_version", "greenhouse_id", "device_id", "ts", "measurements"}
        assert reading["schema_version"] == 1
        assert reading["device_id"].startswith(reading["greenhouse_id"] + "-")
        device = reading["device_id"].rsplit("-", 1)[1]
        assert set(reading["measurements"]) == DEVICE_FIELDS[device]
        datetime.strptime(reading["ts"], "%Y-%m-%dT%H:%M:%SZ")
        assert json.loads(json.dumps(reading)) == reading


@pytest.mark.parametrize("run", ["winter_week", "summer_days"])
def test_values_stay_physical(run, request):
    fleet, readings = request.getfixturevalue(run)
    for reading in readings:
        for name, value in reading["measurements"].items():
            low, high = PLAUSIBLE[name]
            assert low <= value <= high, (reading["device_id"], reading["ts"], name, value)
            assert value == round(value, 2)
    for gh in fleet.greenhouse_ids:
        state = fleet.state(gh)
        assert -10 < state.air_temp_c < 50 and 0 <= state.rh_pct <= 100


def test_local_climate_computer_keeps_a_winter_greenhouse_warm(winter_week):
    _, readings = winter_week
    temps = [r["measurements"]["air_temp_c"] for r in readings if r["device_id"] == "gh-01-climate"]
    outside = [r["measurements"]["outside_temp_c"] for r in readings if r["device_id"] == "gh-01-weather"]
    assert min(outside) < -5.0
    assert sum(temps) / len(temps) > 15.0
    assert sorted(temps)[len(temps) // 100] > 10.0  # 1st percentile: cold dips only briefly


def test_readings_validate_against_the_contract(winter_week):
    contracts = pytest.importorskip("app.contracts")
    _, readings = winter_week
    now = datetime(2030, 1, 1, tzinfo=UTC)
    for reading in readings[::499]:
        contracts.validate_reading(reading, now=now)


def test_heating_energy_is_counted_consistently(winter_week):
    fleet, readings = winter_week
    for gh in fleet.greenhouse_ids:
        heat_pct = [r["measurements"]["heat_pct"] for r in readings if r["device_id"] == f"{gh}-actuators"]
        # Integrate the reported valve positions; the twin integrates the exact lagged position.
        estimate_kwh = sum(heat_pct) / 100 * fleet.params(gh).heating_capacity_w * 60 / 3.6e6
        assert fleet.heating_energy_kwh(gh) > 1000
        assert fleet.heating_energy_kwh(gh) == pytest.approx(estimate_kwh, rel=0.02)


def test_greenhouses_differ_slightly(winter_week):
    fleet, _ = winter_week
    a, b = fleet.params("gh-01"), fleet.params("gh-02")
    base = GreenhouseParams()
    assert a != b
    for params in (a, b):
        assert 0.75 < params.floor_area_m2 / base.floor_area_m2 < 1.3
        assert 0.6 < params.cover_transmissivity <= 0.95
    assert fleet.state("gh-01").air_temp_c != fleet.state("gh-02").air_temp_c


def test_same_seed_same_readings_and_fleet_size_does_not_matter():
    day = 86_400 / 4
    a = _collect(FleetSimulator(2, WINTER, seed=5), day)
    b = _collect(FleetSimulator(2, WINTER, seed=5), day)
    c = _collect(FleetSimulator(2, WINTER, seed=6), day)
    assert a == b
    assert a != c
    alone = _collect(FleetSimulator(1, WINTER, seed=5), day)
    assert alone == [r for r in a if r["greenhouse_id"] == "gh-01"]


def test_external_setpoints_override_the_climate_computer_and_expire():
    fleet = FleetSimulator(1, WINTER, seed=0, climate_config=ClimateComputerConfig(excitation=False))
    _collect(fleet, 3600)  # a cold night: the local computer heats
    assert fleet.commanded("gh-01")[1] == "local"
    assert fleet.state("gh-01").heat_pct > 20

    off = Setpoints.clamped(vent_pct=0, heat_pct=0, screen_pct=0)
    fleet.apply_setpoints("gh-01", off, valid_until=fleet.now + timedelta(minutes=45))
    _collect(fleet, 30 * 60)
    assert fleet.commanded("gh-01") == (off, "external")
    assert fleet.state("gh-01").heat_pct < 1.0 and fleet.state("gh-01").screen_pct < 1.0

    _collect(fleet, 30 * 60)  # the override expired after 45 minutes
    setpoints, source = fleet.commanded("gh-01")
    assert source == "local" and setpoints.heat_pct > 50
    assert fleet.state("gh-01").heat_pct > 50

    fleet.apply_setpoints("gh-01", Setpoints.clamped(vent_pct=55))  # no expiry
    _collect(fleet, 2 * 3600)
    assert fleet.commanded("gh-01")[1] == "external"
    assert fleet.state("gh-01").vent_pct == pytest.approx(55, abs=0.5)
    fleet.clear_setpoints("gh-01")
    fleet.step()
    assert fleet.commanded("gh-01")[1] == "local"


def test_already_expired_setpoints_are_ignored():
    fleet = FleetSimulator(1, WINTER, seed=0)
    fleet.apply_setpoints("gh-01", Setpoints.clamped(vent_pct=100), valid_until=WINTER)
    fleet.step()
    assert fleet.commanded("gh-01")[1] == "local"


def test_bad_arguments_are_rejected():
    fleet = FleetSimulator(1, WINTER)
    with pytest.raises(KeyError):
        fleet.apply_setpoints("gh-99", Setpoints.clamped())
    with pytest.raises(ValueError):
        fleet.apply_setpoints("gh-01", Setpoints.clamped(), valid_until=datetime(2026, 1, 10))
    with pytest.raises(ValueError):
        FleetSimulator(0, WINTER)
    with pytest.raises(ValueError):
        FleetSimulator(1, datetime(2026, 1, 10))


def test_noise_free_sensors_report_the_true_state():
    fleet = FleetSimulator(1, SUMMER, step_s=300, sensor_noise=SensorNoise.none())
    readings = fleet.step()
    climate = next(r for r in readings if r["device_id"] == "gh-01-climate")["measurements"]
    state = fleet.state("gh-01")
    assert climate["air_temp_c"] == round(state.air_temp_c, 2)
    assert climate["rh_pct"] == round(state.rh_pct, 2)
    assert readings[0]["ts"] == "2026-07-10T00:05:00Z"
