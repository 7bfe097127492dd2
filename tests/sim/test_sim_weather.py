"""Outdoor weather from pvlib's bundled TMY3 year."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from app.sim.weather import WEATHER_COLUMNS, ConstantWeather, Tmy3Weather, WeatherSeries, load_tmy3_weather, tmy3_path, tmy3_row_count

UTC = timezone.utc
EST = timedelta(hours=-5)  # the TMY3 file's local standard time


@pytest.fixture(scope="module")
def tmy_frame():
    import pvlib

    data, _ = pvlib.iotools.read_tmy3(tmy3_path(), map_variables=True)
    return data


def _tmy_row(frame, month: int, day: int, hour: int):
    index = frame.index
    mask = (index.month == month) & (index.day == day) & (index.hour == hour)
    rows = frame[mask]
    assert len(rows) == 1
    return rows.iloc[0]


def test_tmy_file_has_a_full_hourly_year():
    assert tmy3_row_count() == 8760


def test_series_covers_window_inclusive_and_is_finite():
    series = load_tmy3_weather(datetime(2026, 6, 15, tzinfo=UTC), 2 * 86_400, 600)
    assert len(series) == 2 * 144 + 1
    assert series.end == datetime(2026, 6, 17, tzinfo=UTC)
    frame = series.to_frame()
    assert list(frame.columns) == list(WEATHER_COLUMNS)
    assert str(frame.index.tz) == "UTC"
    assert np.isfinite(frame.to_numpy()).all()
    assert frame["outside_rh_pct"].between(0, 100).all()
    assert (frame["wind_m_s"] >= 0).all()
    assert frame["solar_w_m2"].between(0, 1400).all()


def test_calendar_date_maps_onto_tmy_month_day_and_local_hour(tmy_frame):
    # 17:00 UTC is 12:00 local standard time in Greensboro (UTC-5); the TMY year is ignored.
    series = load_tmy3_weather(datetime(2026, 6, 15, 16, tzinfo=UTC), 3 * 3600, 60)
    noon = _tmy_row(tmy_frame, 6, 15, 12)
    one_pm = _tmy_row(tmy_frame, 6, 15, 13)
    at_noon = series.at(datetime(2026, 6, 15, 17, tzinfo=UTC))
    assert at_noon.outside_temp_c == pytest.approx(noon["temp_air"])
    assert at_noon.outside_rh_pct == pytest.approx(noon["relative_humidity"])
    assert at_noon.wind_m_s == pytest.approx(noon["wind_speed"])
    # Linear interpolation between the hourly observations.
    half_past = series.at(datetime(2026, 6, 15, 17, 30, tzinfo=UTC))
    assert half_past.outside_temp_c == pytest.approx((noon["temp_air"] + one_pm["temp_air"]) / 2)
    # Off-grid instants interpolate between grid points too.
    quarter = series.at(datetime(2026, 6, 15, 17, 15, 30, tzinfo=UTC))
    low, high = sorted((noon["temp_air"], one_pm["temp_air"]))
    assert low <= quarter.outside_temp_c <= high


def test_solar_follows_the_sun_and_the_hourly_totals(tmy_frame):
    day = load_tmy3_weather(datetime(2026, 6, 15, 5, tzinfo=UTC), 86_400, 60)  # 00:00 local
    frame = day.to_frame()
    night = frame[frame["sun_elevation_deg"] < 0]
    assert len(night) > 400 and (night["solar_w_m2"] == 0).all()
    assert frame["solar_w_m2"].max() > 500
    # Daily irradiation matches the file's hourly totals within 10 %.
    daily_wh_m2 = frame["solar_w_m2"].iloc[:-1].sum() * 60 / 3600
    index = tmy_frame.index
    file_wh_m2 = tmy_frame[(index.month == 6) & (index.day == 15)]["ghi"].sum()
    assert daily_wh_m2 == pytest.approx(file_wh_m2, rel=0.10)
    # Sun highest near local solar noon (~12:20 local standard time at 80° W).
    peak = frame["sun_elevation_deg"].idxmax()
    local_peak = (peak.to_pydatetime() + EST).time()
    assert 12 <= local_peak.hour <= 13


def test_year_end_wraps_and_leap_day_reuses_february_28(tmy_frame):
    wrap = load_tmy3_weather(datetime(2026, 12, 31, 20, tzinfo=UTC), 12 * 3600, 3600)
    assert len(wrap) == 13 and np.isfinite(wrap.outside_temp_c).all()
    dec31_late = wrap.at(datetime(2027, 1, 1, 4, tzinfo=UTC))  # 23:00 local on 31 December
    assert dec31_late.outside_temp_c == pytest.approx(_tmy_row(tmy_frame, 12, 31, 23)["temp_air"])
    # Across the wrap the provider keeps going: 2027-01-01 11:00 local is TMY 1 January 11:00.
    jan1_noonish = datetime(2027, 1, 1, 16, tzinfo=UTC)
    jan1 = Tmy3Weather(datetime(2026, 12, 31, 20, tzinfo=UTC)).at(jan1_noonish)
    assert jan1.outside_temp_c == pytest.approx(_tmy_row(tmy_frame, 1, 1, 11)["temp_air"])
    leap = load_tmy3_weather(datetime(2028, 2, 29, 17, tzinfo=UTC), 0, 60).at(datetime(2028, 2, 29, 17, tzinfo=UTC))
    assert leap.outside_temp_c == pytest.approx(_tmy_row(tmy_frame, 2, 28, 12)["temp_air"])
    march = load_tmy3_weather(datetime(2028, 3, 1, 17, tzinfo=UTC), 0, 60).at(datetime(2028, 3, 1, 17, tzinfo=UTC))
    assert march.outside_temp_c == pytest.approx(_tmy_row(tmy_frame, 3, 1, 12)["temp_air"])


def test_loading_is_deterministic_and_validates_inputs():
    start = datetime(2026, 3, 1, tzinfo=UTC)
    a = load_tmy3_weather(start, 86_400, 300)
    b = load_tmy3_weather(start, 86_400, 300)
    for name in WEATHER_COLUMNS:
        assert np.array_equal(getattr(a, name), getattr(b, name))
    with pytest.raises(ValueError):
        load_tmy3_weather(datetime(2026, 3, 1), 3600, 60)  # naive
    with pytest.raises(ValueError):
        load_tmy3_weather(start, 3600, 0)
    with pytest.raises(ValueError):
        a.at(start - timedelta(minutes=1))
    with pytest.raises(ValueError):
        a.at(a.end + timedelta(minutes=1))
    with pytest.raises(ValueError):
        a.outside_temp_c[0] = 99.0  # read-only arrays


def test_endless_provider_matches_the_window_loader_across_chunk_boundaries():
    start = datetime(2026, 4, 10, 3, tzinfo=UTC)
    provider = Tmy3Weather(start, grid_step_s=60.0, chunk_s=6 * 3600.0)
    reference = load_tmy3_weather(start, 30 * 3600, 60)
    for minutes in (0, 1, 359, 360, 361, 719, 720, 1500, 1799):
        when = start + timedelta(minutes=minutes)
        got, want = provider.at(when), reference.at(when)
        assert got.outside_temp_c == pytest.approx(want.outside_temp_c, abs=1e-9)
        assert got.solar_w_m2 == pytest.approx(want.solar_w_m2, abs=1e-6)
        assert got.sun_elevation_deg == pytest.approx(want.sun_elevation_deg, abs=1e-6)
    # Instants before start are fine as well.
    assert math.isfinite(provider.at(start - timedelta(hours=5)).outside_temp_c)


def test_constant_weather_is_constant():
    weather = ConstantWeather(outside_temp_c=-3.0, solar_w_m2=0.0)
    sample = weather.at(datetime(2026, 1, 1, tzinfo=UTC))
    assert sample is weather.at(datetime(2030, 7, 1, tzinfo=UTC))
    assert sample.outside_temp_c == -3.0 and not sample.is_day


def test_series_rejects_ragged_columns():
    with pytest.raises(ValueError):
        WeatherSeries(datetime(2026, 1, 1, tzinfo=UTC), 60.0, *[np.zeros(3)] * 4, np.zeros(2))


def test_importing_the_package_does_no_work():
    code = "import sys, app.sim; print('pvlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"
