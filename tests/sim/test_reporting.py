"""Reporting profiles (what a real site sends of the fleet's readings) and the poly house preset."""

from __future__ import annotations

import copy
import dataclasses
from collections import Counter
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from app.contracts.reading import MEASUREMENT_NAMES, validate_reading
from app.sim.climate_computer import ClimateComputerConfig
from app.sim.fleet import FleetSimulator
from app.sim.presets import POLY_HOUSE, POLY_HOUSE_CLIMATE, POLY_HOUSE_REPORTING, poly_house_fleet, raw_readings_frame
from app.sim.reporting import ReportingProfile, iter_reports
from app.sim.twin import GreenhouseParams
from app.sim.weather import ConstantWeather

START = datetime(2026, 3, 2, tzinfo=timezone.utc)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def fleet_steps() -> list[list[dict]]:
    """Two days of a two-greenhouse fleet, every minute (the same list for every test)."""
    fleet = FleetSimulator(2, START, step_s=60.0, seed=5, weather=ConstantWeather())
    return list(fleet.iter_steps(2 * 86_400))


def sent(profile: ReportingProfile, steps: list[list[dict]]) -> list[dict]:
    return [r for step in steps for r in profile.apply(step)]


def seconds(ts: str) -> float:
    return (datetime.fromisoformat(ts) - EPOCH).total_seconds()


def test_the_default_profile_sends_every_reading_unchanged(fleet_steps):
    readings = [r for step in fleet_steps for r in step]
    assert sent(ReportingProfile(), fleet_steps) == readings


def test_each_device_reports_once_per_cadence_near_its_nominal_time(fleet_steps):
    profile = ReportingProfile(cadence_s=300.0, phase_s=120.0, jitter_s=25.0, seed=1)
    out = sent(profile, fleet_steps)
    per_device = Counter(r["device_id"] for r in out)
    assert set(per_device.values()) == {2 * 86_400 // 300} and len(per_device) == 6
    times_s = np.array([seconds(r["ts"]) for r in out])
    offsets_s = times_s - (np.round((times_s - 120.0) / 300.0) * 300.0 + 120.0)  # from the nearest nominal time
    assert np.abs(offsets_s).max() <= 25.0  # within the jitter
    assert offsets_s.min() < -20 and offsets_s.max() > 20 and abs(offsets_s.mean()) < 2  # spread both ways
    for r in out:  # still valid readings
        validate_reading(r, max_future_skew_s=1e9)


def test_a_share_of_reports_is_dropped_and_outages_are_silent(fleet_steps):
    outage = (START + timedelta(hours=10), START + timedelta(hours=12))
    profile = ReportingProfile(drop_share=0.1, outages=(outage,), seed=2)
    out = sent(profile, fleet_steps)
    total = sum(len(step) for step in fleet_steps)
    in_outage = sum(len(step) for step in fleet_steps if outage[0] <= datetime.fromisoformat(step[0]["ts"]) < outage[1])
    dropped_share = 1 - len(out) / (total - in_outage)
    assert abs(dropped_share - 0.1) < 0.015  # ~17k readings: the binomial spread is ~0.002
    assert not any(outage[0] <= datetime.fromisoformat(r["ts"]) < outage[1] for r in out)


def test_daily_outages_are_seeded_per_site_and_day(fleet_steps):
    profile = ReportingProfile(daily_outage_share=0.9, daily_outage_s=3 * 3600.0, seed=4)
    out = sent(profile, fleet_steps)
    for gh in ("gh-01", "gh-02"):
        times = np.array(sorted({seconds(r["ts"]) for r in out if r["greenhouse_id"] == gh}))
        longest_gap_s = np.diff(times).max()
        assert longest_gap_s >= 3 * 3600  # at least one of the two days (and its overnight carry) had its outage
    sent_ts = {gh: {r["ts"] for r in out if r["greenhouse_id"] == gh} for gh in ("gh-01", "gh-02")}
    assert sent_ts["gh-01"] != sent_ts["gh-02"]  # each site its own outages


def test_absent_measurements_are_removed_and_an_empty_reading_is_not_sent(fleet_steps):
    absent = frozenset({"par_umol_m2_s", "wind_m_s", "outside_rh_pct", "vent_pct", "heat_pct", "screen_pct"})
    out = sent(ReportingProfile(absent=absent), fleet_steps)
    assert all(absent.isdisjoint(r["measurements"]) for r in out)
    assert not any(r["device_id"].endswith("actuators") for r in out)  # it had nothing left to send
    assert {"air_temp_c", "rh_pct", "co2_ppm"} <= set(out[0]["measurements"])


def test_a_profile_is_pure_whatever_the_batches_order_and_fleet(fleet_steps):
    profile = ReportingProfile(cadence_s=180.0, jitter_s=30.0, drop_share=0.2, daily_outage_share=0.5, daily_outage_s=3600.0, absent=frozenset({"co2_ppm"}), seed=9)
    readings = [r for step in fleet_steps for r in step]
    before = copy.deepcopy(readings)
    whole = profile.apply(readings)
    assert readings == before  # the fleet's readings are not changed
    one_by_one = [out for r in reversed(readings) if (out := profile.sent(r)) is not None][::-1]
    assert one_by_one == whole
    alone = FleetSimulator(1, START, step_s=60.0, seed=5, weather=ConstantWeather())  # gh-01 without gh-02
    by_itself = [r for step in alone.iter_steps(2 * 86_400) for r in profile.apply(step)]
    assert by_itself == [r for r in whole if r["greenhouse_id"] == "gh-01"]
    assert profile.apply(readings) == whole and dataclasses.replace(profile, seed=10).apply(readings) != whole


@pytest.mark.parametrize(
    "bad",
    [
        {"cadence_s": 0.0},
        {"jitter_s": 30.0},  # half the default 60 s cadence
        {"drop_share": 1.0},
        {"daily_outage_share": -0.1},
        {"daily_outage_s": 2 * 86_400.0},
        {"absent": frozenset({"leaf_wetness"})},
        {"outages": ((datetime(2026, 1, 1), datetime(2026, 1, 2)),)},
    ],
)
def test_impossible_profiles_are_refused(bad):
    with pytest.raises(ValueError):
        ReportingProfile(**bad)


def test_the_fleet_step_must_divide_the_cadence_and_phase():
    fleet = FleetSimulator(1, START, step_s=60.0, seed=0, weather=ConstantWeather())
    for profile in (ReportingProfile(cadence_s=90.0), ReportingProfile(cadence_s=300.0, phase_s=30.0)):
        with pytest.raises(ValueError, match="whole number of steps"):
            next(iter_reports(fleet, profile, 600))


def test_the_poly_house_is_a_different_greenhouse_from_the_default():
    glass, poly = GreenhouseParams(), POLY_HOUSE
    assert poly.floor_area_m2 <= 0.5 * glass.floor_area_m2 and poly.volume_m3 < glass.volume_m3
    assert poly.cover_u_w_m2_k != glass.cover_u_w_m2_k and poly.cover_transmissivity != glass.cover_transmissivity
    assert poly.heating_capacity_w <= 0.5 * glass.heating_capacity_w
    assert poly.max_vent_air_changes_per_h <= 0.5 * glass.max_vent_air_changes_per_h
    assert poly.thermal_mass_j_k <= 0.5 * glass.thermal_mass_j_k
    assert poly.screen_shading_fraction == poly.screen_insulation_fraction == 0  # no screen
    default_climate = ClimateComputerConfig()
    assert (POLY_HOUSE_CLIMATE.heat_setpoint_day_c, POLY_HOUSE_CLIMATE.heat_setpoint_night_c, POLY_HOUSE_CLIMATE.vent_setpoint_c) != (
        default_climate.heat_setpoint_day_c,
        default_climate.heat_setpoint_night_c,
        default_climate.vent_setpoint_c,
    )
    assert POLY_HOUSE_CLIMATE.screen_night_pct == POLY_HOUSE_CLIMATE.shade_pct == 0
    assert POLY_HOUSE_REPORTING.cadence_s == 300 and 0 < POLY_HOUSE_REPORTING.jitter_s and 0 < POLY_HOUSE_REPORTING.drop_share
    assert {"par_umol_m2_s", "wind_m_s", "outside_rh_pct"} <= POLY_HOUSE_REPORTING.absent


def test_the_poly_house_behaves_differently_under_the_same_cold_night():
    """Same weather, same start: the small, light, weakly heated house runs colder."""
    cold = ConstantWeather(outside_temp_c=-8.0, solar_w_m2=0.0, sun_elevation_deg=-20.0)
    glass = FleetSimulator(1, START, seed=0, weather=cold, vary_greenhouses=False)
    poly = poly_house_fleet(1, START, seed=0, weather=cold)
    for _ in glass.iter_steps(6 * 3600):
        pass
    for _ in poly.iter_steps(6 * 3600):
        pass
    assert poly.params("gh-01") == POLY_HOUSE
    assert poly.state("gh-01").air_temp_c < glass.state("gh-01").air_temp_c - 1.0


def test_the_raw_readings_frame_is_what_the_feature_engine_reads():
    frame = raw_readings_frame(poly_house_fleet(1, START, seed=3, weather=ConstantWeather()), POLY_HOUSE_REPORTING, 6 * 3600)
    assert list(frame.columns) == ["greenhouse_id", "device_id", "ts", *MEASUREMENT_NAMES]
    assert str(frame["ts"].dtype).startswith("datetime64") and str(frame["ts"].dt.tz) == "UTC"
    assert (frame[list(MEASUREMENT_NAMES)].dtypes == "float64").all()
    assert frame[sorted(POLY_HOUSE_REPORTING.absent)].isna().all().all()
    per_device = frame.groupby("device_id").size()
    assert len(per_device) == 3 and (per_device <= 6 * 3600 / 300).all() and (per_device >= 0.7 * 6 * 3600 / 300).all()
    gaps_s = frame.sort_values("ts").groupby("device_id")["ts"].diff().dt.total_seconds().dropna()
    assert pd.Series(gaps_s).median() == pytest.approx(300, abs=POLY_HOUSE_REPORTING.jitter_s)
