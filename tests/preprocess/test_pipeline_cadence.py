"""The preprocess job follows the data: its grid step from the devices' reporting interval, its
horizons from that step, and a greenhouse that cannot have rows left out with the reason."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from app.lake import Lake
from app.metadata import FEATURE_SETS, open_metadata
from app.preprocess import PreprocessParams, load_feature_set, load_test_window, run_preprocess
from app.sim.presets import POLY_HOUSE_REPORTING, poly_house_fleet
from app.sim.reporting import iter_reports
from tests.helpers.drift_lake import write_readings

START = datetime(2026, 2, 3, tzinfo=UTC)
DAYS = 2.0


def poly_house_readings(profile=POLY_HOUSE_REPORTING, *, seed: int = 3) -> list[dict]:
    fleet = poly_house_fleet(2, START, seed=seed)
    return [r for step in iter_reports(fleet, profile, DAYS * 86_400) for r in step]


def test_five_minute_data_gets_a_five_minute_grid(settings, ray_local):
    write_readings(Lake.from_url(settings.lake_url), poly_house_readings())
    messages: list[str] = []
    info = run_preprocess(settings, PreprocessParams(horizons_min=(5, 15, 30, 60)), on_progress=messages.append)
    doc = open_metadata(settings.metadata_url).collection(FEATURE_SETS).find_one({"_id": info.feature_set_id})
    assert doc["params"]["step_s"] == 300 and doc["requested_params"]["step_s"] == "auto"
    assert doc["params"]["horizons_min"] == [5, 15, 30, 60]
    assert any("300 s grid" in m for m in messages)
    train, validation, _ = load_feature_set(settings, info.feature_set_id)
    test = load_test_window(settings, info.feature_set_id)
    assert min(len(train), len(validation), len(test)) > 0
    # about one row per 5 minutes per greenhouse (gaps and outages cost some)
    per_day = (len(train) + len(validation) + len(test)) / (2 * DAYS)
    assert 150 <= per_day <= 288, per_day
    assert (train["ts"].diff().dropna().dt.total_seconds().to_numpy() % 300 == 0).all()
    assert train["screen_pct"].eq(0).all()  # no screen: an actuator the house lacks reads 0 %


def test_fifteen_minute_data_drops_the_horizons_it_cannot_learn(settings, ray_local):
    write_readings(Lake.from_url(settings.lake_url), poly_house_readings(replace(POLY_HOUSE_REPORTING, cadence_s=900.0, phase_s=0.0, jitter_s=0.0)))
    info = run_preprocess(settings, PreprocessParams(horizons_min=(5, 15, 30, 60)))
    doc = open_metadata(settings.metadata_url).collection(FEATURE_SETS).find_one({"_id": info.feature_set_id})
    assert doc["params"]["step_s"] == 900 and doc["params"]["horizons_min"] == [15, 30, 60]
    assert info.rows_train > 0


def test_a_greenhouse_without_a_sun_sensor_is_left_out_with_the_reason(settings, ray_local):
    readings = poly_house_readings()
    for r in readings:
        if r["greenhouse_id"] == "gh-02":
            r["measurements"].pop("solar_w_m2", None)
    write_readings(Lake.from_url(settings.lake_url), readings)
    messages: list[str] = []
    info = run_preprocess(settings, PreprocessParams(), on_progress=messages.append)
    doc = open_metadata(settings.metadata_url).collection(FEATURE_SETS).find_one({"_id": info.feature_set_id})
    assert info.greenhouses == ["gh-01"]
    assert doc["left_out"] == {"gh-02": "never reports solar_w_m2"}
    assert any("leaving out greenhouse gh-02" in m for m in messages)


def test_a_fixed_step_is_kept_and_a_bad_one_refused():
    assert PreprocessParams(step_s=120).with_step(120).step_s == 120
    with pytest.raises(ValueError, match="auto"):
        PreprocessParams(step_s=5)
    with pytest.raises(ValueError, match="not chosen"):
        PreprocessParams().feature_params()
