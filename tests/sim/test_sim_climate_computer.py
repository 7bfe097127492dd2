"""The local rule-based climate computer: rules, monotonicity, excitation, purity."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from app.sim.climate_computer import ClimateComputer, ClimateComputerConfig
from app.sim.weather import OutdoorWeather

UTC = timezone.utc
TS = datetime(2026, 3, 1, 12, tzinfo=UTC)
RULES_ONLY = ClimateComputerConfig(excitation=False)
NIGHT_COLD = OutdoorWeather(outside_temp_c=2.0, outside_rh_pct=80.0, solar_w_m2=0.0, wind_m_s=2.0, sun_elevation_deg=-20.0)
DAY_MILD = OutdoorWeather(outside_temp_c=15.0, outside_rh_pct=60.0, solar_w_m2=400.0, wind_m_s=2.0, sun_elevation_deg=40.0)
DAY_BRIGHT = DAY_MILD._replace(solar_w_m2=900.0, outside_temp_c=28.0)


def test_heats_when_cold_with_day_and_night_setpoints():
    cc = ClimateComputer(RULES_ONLY)
    assert cc.decide(TS, 12.0, 70.0, NIGHT_COLD).heat_pct == 100.0
    assert cc.decide(TS, 17.0, 70.0, NIGHT_COLD).heat_pct == 0.0  # night setpoint 16 + band/2
    assert cc.decide(TS, 16.0, 70.0, NIGHT_COLD).heat_pct == pytest.approx(50.0)
    assert cc.decide(TS, 18.0, 70.0, DAY_MILD).heat_pct == pytest.approx(50.0)  # day setpoint 18
    assert cc.decide(TS, 25.0, 70.0, DAY_MILD).heat_pct == 0.0


def test_vents_when_hot_or_humid():
    cc = ClimateComputer(RULES_ONLY)
    assert cc.decide(TS, 22.0, 70.0, DAY_MILD).vent_pct == 0.0
    assert cc.decide(TS, 26.0, 70.0, DAY_MILD).vent_pct == pytest.approx(50.0)
    assert cc.decide(TS, 30.0, 70.0, DAY_MILD).vent_pct == 100.0
    humid = cc.decide(TS, 20.0, 97.0, DAY_MILD)
    assert humid.vent_pct == pytest.approx(30.0)  # capped humidity opening
    assert cc.decide(TS, 20.0, 90.0, DAY_MILD).vent_pct == pytest.approx(15.0)


def test_screen_closes_on_cold_nights_and_shades_bright_days():
    cc = ClimateComputer(RULES_ONLY)
    assert cc.decide(TS, 16.0, 70.0, NIGHT_COLD).screen_pct == 100.0
    warm_night = NIGHT_COLD._replace(outside_temp_c=20.0)
    assert cc.decide(TS, 20.0, 70.0, warm_night).screen_pct == 0.0
    dawn = NIGHT_COLD._replace(sun_elevation_deg=3.0, solar_w_m2=20.0)
    assert cc.decide(TS, 16.0, 70.0, dawn).screen_pct == 100.0  # keep the energy screen until light
    assert cc.decide(TS, 20.0, 70.0, DAY_MILD).screen_pct == 0.0
    assert cc.decide(TS, 27.0, 60.0, DAY_BRIGHT).screen_pct == 60.0


@pytest.mark.parametrize("outdoor", [NIGHT_COLD, DAY_MILD, DAY_BRIGHT])
def test_warmer_air_never_means_more_heat_or_less_ventilation(outdoor):
    cc = ClimateComputer(RULES_ONLY)
    previous = None
    for tenth_c in range(0, 400, 5):
        sp = cc.decide(TS, tenth_c / 10.0, 75.0, outdoor)
        if previous is not None:
            assert sp.heat_pct <= previous.heat_pct
            assert sp.vent_pct >= previous.vent_pct
        previous = sp


def _decisions(cc: ClimateComputer, times: list[datetime]) -> list[tuple[float, float, float]]:
    return [tuple(cc.decide(ts, 20.0, 75.0, DAY_MILD).model_dump().values()) for ts in times]


def test_excitation_perturbs_some_windows_within_amplitude():
    config = ClimateComputerConfig()
    base = ClimateComputer(RULES_ONLY).decide(TS, 20.0, 75.0, DAY_MILD)
    windows = [TS + timedelta(seconds=i * config.excitation_window_s) for i in range(300)]
    excited = _decisions(ClimateComputer(config, seed=3), windows)
    perturbed = [d for d in excited if d != tuple(base.model_dump().values())]
    assert 0.3 * len(windows) < len(perturbed) < 0.95 * len(windows)
    for vent, heat, screen in excited:
        assert 0.0 <= vent <= 100.0 and 0.0 <= heat <= 100.0 and 0.0 <= screen <= 100.0
        assert screen <= base.screen_pct + config.excitation_amplitude_pct
    # Each actuator is perturbed on its own sometimes (identifiable effects).
    assert len({d[0] for d in excited}) > 10 and len({d[1] for d in excited}) > 10 and len({d[2] for d in excited}) > 10


def test_excitation_is_constant_within_a_window_and_pure():
    config = ClimateComputerConfig(excitation_probability=1.0)
    times = [TS + timedelta(minutes=m) for m in range(0, 240, 7)]
    forward = _decisions(ClimateComputer(config, seed=11), times)
    backward = _decisions(ClimateComputer(config, seed=11), list(reversed(times)))
    assert forward == list(reversed(backward))
    cc = ClimateComputer(config, seed=11)
    window = [cc.decide(TS + timedelta(seconds=s), 20.0, 75.0, DAY_MILD) for s in range(0, 1200, 60)]
    assert len(set(window)) == 1
    assert _decisions(ClimateComputer(config, seed=12), times) != forward


def test_no_excitation_when_the_crop_is_at_risk():
    config = ClimateComputerConfig(excitation_probability=1.0)
    rules = ClimateComputer(RULES_ONLY)
    excited = ClimateComputer(config, seed=1)
    for minutes in range(0, 600, 20):
        ts = TS + timedelta(minutes=minutes)
        assert excited.decide(ts, 8.0, 75.0, NIGHT_COLD) == rules.decide(ts, 8.0, 75.0, NIGHT_COLD)
        assert excited.decide(ts, 36.0, 75.0, DAY_BRIGHT) == rules.decide(ts, 36.0, 75.0, DAY_BRIGHT)


def test_config_is_validated():
    with pytest.raises(ValueError):
        ClimateComputerConfig(heat_band_c=0)
    with pytest.raises(ValueError):
        ClimateComputerConfig(excitation_probability=1.5)
