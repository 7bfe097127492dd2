"""The feature engine follows the data: the grid step chosen from the reporting cadence, and rows
at any cadence from 1 to 15 minutes with jitter, lost readings, an outage, absent sensors and no
screen; exact targets, no look-ahead, serving's window, and a clear error for a missing sensor."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from app.config import ControlSettings
from app.contracts.reading import MEASUREMENT_NAMES, validate_reading
from app.contracts.vocabulary import target_column
from app.control.online import OnlineWindow
from app.preprocess.cadence import ALLOWED_STEPS_S, choose_step_s, device_intervals_s, reporting_interval_s, usable_horizons
from app.preprocess.engine import missing_sensors
from app.preprocess.features import FeatureParams, MissingSensorError, RawColumns, feature_columns, feature_table, greenhouse_features
from app.preprocess.spec import OPTIONAL_SENSORS, required_columns
from app.sim.fleet import format_ts
from app.sim.presets import POLY_HOUSE_REPORTING, poly_house_fleet, raw_readings_frame
from app.sim.reporting import ReportingProfile

START = datetime(2026, 4, 10, tzinfo=timezone.utc)
DAY_S = 86_400.0
DEVICES = {
    "climate": ("air_temp_c", "rh_pct", "co2_ppm", "par_umol_m2_s"),
    "weather": ("outside_temp_c", "outside_rh_pct", "solar_w_m2", "wind_m_s"),
    "actuators": ("vent_pct", "heat_pct", "screen_pct"),
}
ABSENT = frozenset({"par_umol_m2_s", "outside_rh_pct", "wind_m_s", "screen_pct"})  # no PAR, outside RH, wind or screen
HORIZONS_MIN = (5, 15, 30, 60)


def true_value(name: str, t_s: float) -> float:
    """Smooth, noise-free climate ``t_s`` seconds after START (days and faster swings)."""
    day, hour = 2 * math.pi * t_s / DAY_S, 2 * math.pi * t_s / 3600
    values = {
        "air_temp_c": 20 + 4 * math.sin(day) + 0.3 * math.sin(hour / 3),
        "rh_pct": 70 - 10 * math.sin(day) + 2 * math.cos(hour / 2),
        "co2_ppm": 500 + 80 * math.cos(day),
        "par_umol_m2_s": max(0.0, 900 * math.sin(day)),
        "outside_temp_c": 8 + 6 * math.sin(day - 0.5),
        "outside_rh_pct": 80 - 15 * math.sin(day),
        "solar_w_m2": max(0.0, 700 * math.sin(day)),
        "wind_m_s": 3 + math.sin(hour / 5),
        "vent_pct": 30 + 25 * math.sin(hour / 4),
        "heat_pct": 50 + 40 * math.cos(day),
        "screen_pct": 40 + 40 * math.sin(hour / 6),
    }
    return round(values[name], 6)


def site_readings(cadence_s: float, days: float, phase_s: float = 0.0) -> list[dict]:
    """Every device's reading at each nominal time, in the wire shape (as a fleet would send them
    if it stepped at the cadence), valued at that time."""
    readings = []
    for k in range(int(days * DAY_S // cadence_s)):
        t_s = phase_s + k * cadence_s
        ts = format_ts(START + timedelta(seconds=t_s))
        for kind, names in DEVICES.items():
            readings.append({"greenhouse_id": "gh-01", "device_id": f"gh-01-{kind}", "ts": ts, "measurements": {n: true_value(n, t_s) for n in names}})
    return readings


def frame_of(readings: list[dict]) -> pd.DataFrame:
    rows = [{"greenhouse_id": r["greenhouse_id"], "device_id": r["device_id"], "ts": r["ts"], **r["measurements"]} for r in readings]
    frame = pd.DataFrame(rows, columns=["greenhouse_id", "device_id", "ts", *MEASUREMENT_NAMES])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601")
    return frame.astype({n: "float64" for n in MEASUREMENT_NAMES})


def real_site(cadence_s: float, *, days: float = 2.0, absent: frozenset[str] = ABSENT, phase_s: float = 60.0, seed: int = 0) -> pd.DataFrame:
    """A site as real ones report: jitter, 10 % lost readings, a 2-hour outage, absent equipment."""
    outage = (START + timedelta(hours=20), START + timedelta(hours=22))
    profile = ReportingProfile(cadence_s=cadence_s, phase_s=phase_s, jitter_s=min(20.0, cadence_s / 4), drop_share=0.1, outages=(outage,), absent=absent, seed=seed)
    return frame_of(profile.apply(site_readings(cadence_s, days, phase_s)))


def params_for(raw: pd.DataFrame, horizons_min: tuple[int, ...] = HORIZONS_MIN) -> FeatureParams:
    """What the pipeline does: measure the cadence, choose the step, keep the learnable horizons."""
    step_s = choose_step_s([reporting_interval_s(RawColumns.from_frame(raw))])
    return FeatureParams(step_s=step_s, horizons_min=usable_horizons(horizons_min, step_s))


# ---------------------------------------------------------------- choosing the step


@pytest.mark.parametrize("cadence_s", [60.0, 300.0, 900.0])
def test_the_reporting_interval_is_the_cadence_despite_jitter_gaps_outages_and_repeats(cadence_s):
    raw = real_site(cadence_s)
    raw = pd.concat([raw, raw.iloc[::7]], ignore_index=True)  # resent readings: same device and time
    interval_s = reporting_interval_s(RawColumns.from_frame(raw))
    assert abs(interval_s - cadence_s) <= min(20.0, cadence_s / 4)
    assert choose_step_s([interval_s]) == cadence_s
    assert len(device_intervals_s(RawColumns.from_frame(raw))) == len(DEVICES)


def test_the_step_is_the_smallest_allowed_one_the_longest_interval_fits_with_jitter():
    assert ALLOWED_STEPS_S == tuple(sorted(ALLOWED_STEPS_S)) and all(3600 % s == 0 for s in ALLOWED_STEPS_S)
    assert choose_step_s([10.0]) == 60  # faster than a minute: averaged per minute
    assert choose_step_s([66.0]) == 60 and choose_step_s([66.5]) == 120  # 10 % of jitter allowed
    assert choose_step_s([305.0, 330.0]) == 300
    assert choose_step_s([240.0]) == 300
    assert choose_step_s([60.0, 61.0, 900.0]) == 900  # one step for the fleet: the slowest greenhouse decides
    assert choose_step_s(iter([600.0])) == 600
    assert choose_step_s([990.0]) == 900


@pytest.mark.parametrize("intervals_s", [[], [float("nan")], [0.0], [-60.0], [1000.0]])
def test_no_step_without_a_usable_interval(intervals_s):
    with pytest.raises(ValueError, match="interval|coarser"):
        choose_step_s(intervals_s)


def test_no_interval_without_two_distinct_readings_of_a_device():
    empty = RawColumns(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros((0, len(MEASUREMENT_NAMES))))
    once = RawColumns(np.array([0, 0, 60_000_000]), np.array([0, 0, 1]), np.full((3, len(MEASUREMENT_NAMES)), 1.0))  # device 0 twice at one time, device 1 once
    for raw in (empty, once):
        with pytest.raises(ValueError, match="no device with two distinct timestamps"):
            reporting_interval_s(raw)


def test_only_horizons_of_whole_steps_can_be_learned():
    assert usable_horizons(HORIZONS_MIN, 60) == HORIZONS_MIN
    assert usable_horizons(HORIZONS_MIN, 300) == HORIZONS_MIN
    assert usable_horizons(HORIZONS_MIN, 600) == (30, 60)
    assert usable_horizons([60, 15, 5, 30], 900) == (60, 15, 30)  # the caller's order
    assert usable_horizons((2, 4, 6), 120) == (2, 4, 6)
    with pytest.raises(ValueError, match="no forecast horizon in \\[5, 10\\] min is a whole number of 900 s steps"):
        usable_horizons((5, 10), 900)
    with pytest.raises(ValueError, match="positive whole number"):
        usable_horizons(HORIZONS_MIN, 0)


# ---------------------------------------------------------------- rows at any cadence


@pytest.mark.parametrize("cadence_s", [60.0, 300.0, 900.0])
def test_any_cadence_with_jitter_gaps_an_outage_and_absent_equipment_gives_complete_rows(cadence_s):
    raw = real_site(cadence_s)
    params = params_for(raw)
    assert params.step_s == cadence_s
    out = greenhouse_features(raw, params)
    grid_steps = 2 * DAY_S / cadence_s
    # lost: the first hour (lags), the last hour (targets), the outage, ~1 % of steps in runs of lost readings too long to fill
    assert len(out) >= 0.7 * grid_steps
    needed = list(required_columns(params, labels=True))
    assert not out[needed].isna().any().any()
    assert (out["screen_pct"] == 0).all() and (out[f"screen_pct_change_{15}min"] == 0).all()  # no screen: closed
    assert out[["par_umol_m2_s", "outside_rh_pct", "wind_m_s"]].isna().all().all()  # never reported: left empty
    in_outage = (out["ts"] > START + timedelta(hours=20, minutes=30)) & (out["ts"] < START + timedelta(hours=22))
    assert not in_outage.any()
    equipped = greenhouse_features(real_site(cadence_s, absent=frozenset()), params)
    assert out["ts"].tolist() == equipped["ts"].tolist()  # absent optional sensors and the screen drop no row


@pytest.mark.parametrize("cadence_s", [60.0, 300.0, 900.0])
def test_targets_and_lags_are_the_values_that_many_minutes_away(cadence_s):
    phase_s = 0.0 if cadence_s == 60 else 120.0
    raw = frame_of(site_readings(cadence_s, 1.0, phase_s))
    params = params_for(raw)
    out = greenhouse_features(raw, params).set_index("ts")
    assert len(out) > 0 and params.horizons_min == usable_horizons(HORIZONS_MIN, int(cadence_s))
    reading_s = (out.index - pd.Timestamp(START)).total_seconds().to_numpy() + phase_s  # each row's own reading
    for h in params.horizons_min:
        want = [true_value("air_temp_c", t + h * 60) for t in reading_s]
        np.testing.assert_allclose(out[target_column("air_temp_c", h)], want, rtol=0, atol=1e-9)
        later = out.index + pd.Timedelta(minutes=h)
        present = later.isin(out.index)
        np.testing.assert_array_equal(out.loc[present, target_column("rh_pct", h)], out.loc[later[present], "rh_pct"])
    lag_s = max(cadence_s, 15 * 60)  # a lag shorter than a step is one step
    want = [true_value("air_temp_c", t) - true_value("air_temp_c", t - lag_s) for t in reading_s]
    np.testing.assert_allclose(out["air_temp_c_diff_15min"], want, rtol=0, atol=1e-9)
    assert out["air_temp_c_std_15min"].notna().all()  # two steps at least, even on a 15-minute grid


@pytest.mark.parametrize("cadence_s", [300.0, 900.0])
@pytest.mark.parametrize("phase_s", [0.0, 120.0])
def test_no_feature_uses_a_reading_after_its_step(cadence_s, phase_s):
    """Change every reading from a cut on (climate, weather and actuators alike): the features of
    every row before the cut stay the same. The cut follows a step that has every device's
    reading, so no gap before it is filled from after it."""
    raw = real_site(cadence_s, phase_s=phase_s, seed=3)
    params = params_for(raw)
    step = pd.Timedelta(seconds=params.step_s)
    first = raw["ts"].min().floor(step)
    steps = (raw["ts"] - first) // step
    complete = steps.groupby(steps).size().index[raw.groupby(steps)["device_id"].nunique() == len(DEVICES)]
    base = greenhouse_features(raw, params, training=False)
    for k in complete[[len(complete) // 4, len(complete) // 2, -20]]:
        cut = first + (k + 1) * step
        later = raw["ts"] >= cut
        changed = raw.copy()
        changed.loc[later, ["air_temp_c", "outside_temp_c"]] += 3.0
        changed.loc[later, ["rh_pct", "solar_w_m2", "vent_pct"]] *= 0.8
        again = greenhouse_features(changed, params, training=False)
        before, after = base[base["ts"] < cut], again[again["ts"] < cut]
        assert len(before) > 10
        pd.testing.assert_frame_equal(after[["ts", *feature_columns()]], before[["ts", *feature_columns()]])
        assert not again[again["ts"] >= cut][feature_columns()].equals(base[base["ts"] >= cut][feature_columns()])


def test_the_poly_house_preset_reports_every_5_minutes_and_has_rows():
    raw = raw_readings_frame(poly_house_fleet(1, START, seed=1), POLY_HOUSE_REPORTING, 2 * DAY_S)
    params = params_for(raw)
    assert params.step_s == 300
    out = greenhouse_features(raw, params)
    assert len(out) >= 0.7 * 2 * DAY_S / 300
    assert not out[list(required_columns(params, labels=True))].isna().any().any()


# ---------------------------------------------------------------- serving's window


@pytest.mark.parametrize("window_min", [ControlSettings().window_min, next(m.ge for m in ControlSettings.model_fields["window_min"].metadata if hasattr(m, "ge"))])
@pytest.mark.parametrize("cadence_s", [300.0, 900.0])
def test_servings_window_gives_the_newest_row_at_coarse_cadences(window_min, cadence_s):
    """The online window serving keeps (the default and the smallest allowed) holds enough steps
    for the 60-minute lags and windows: its newest row is training's newest row."""
    readings = ReportingProfile(cadence_s=cadence_s, phase_s=60.0, jitter_s=20.0, seed=1).apply(site_readings(cadence_s, 0.5, 60.0))
    window = OnlineWindow(window_min)
    window.add(validate_reading(r, max_future_skew_s=1e9) for r in readings)
    params = params_for(frame_of(readings))
    got = window.features("gh-01", params)
    whole = greenhouse_features(frame_of(readings), params, training=False)
    assert got is not None and got["ts"] == whole["ts"].iloc[-1].to_pydatetime()
    for c in feature_columns():
        assert np.isclose(got[c], whole[c].iloc[-1], rtol=1e-9, atol=1e-9, equal_nan=True), c


# ---------------------------------------------------------------- missing equipment


def test_a_greenhouse_that_never_reports_solar_is_a_clear_error_not_an_empty_table():
    raw = real_site(300.0, absent=ABSENT | {"solar_w_m2"})
    params = params_for(raw)
    assert missing_sensors(RawColumns.from_frame(raw), params) == ("solar_w_m2",)
    with pytest.raises(MissingSensorError, match="'gh-01' never reports solar_w_m2") as caught:
        feature_table(pa.Table.from_pandas(raw, preserve_index=False), "gh-01", params)
    assert caught.value.sensors == ("solar_w_m2",) and isinstance(caught.value, ValueError)
    assert greenhouse_features(raw, params).empty  # the pandas door keeps its empty frame
    assert set(OPTIONAL_SENSORS) - {"solar_w_m2"} >= ABSENT - {"screen_pct"}  # the others are truly optional
    assert missing_sensors(RawColumns.from_frame(real_site(300.0)), params) == ()


def test_an_absent_actuator_reads_closed_but_a_reported_one_keeps_its_gaps():
    raw = real_site(300.0, absent=frozenset())
    params = params_for(raw)
    actuators = raw["device_id"] == "gh-01-actuators"
    hours = (raw["ts"] - pd.Timestamp(START)) / pd.Timedelta(hours=1)
    gappy = raw.copy()
    gappy.loc[actuators & (hours >= 30) & (hours < 32), "screen_pct"] = np.nan  # the screen unreported for two hours
    out = greenhouse_features(gappy, params).set_index("ts")
    unreported = (out.index >= START + timedelta(hours=30, minutes=30)) & (out.index <= START + timedelta(hours=31, minutes=30))
    assert not unreported.any()  # a gap, not 0 %
    assert (out["screen_pct"] > 0).mean() > 0.9
    silent = raw.copy()
    silent.loc[actuators, ["vent_pct", "heat_pct", "screen_pct"]] = np.nan  # the actuator device silent: nothing is 0 %
    assert greenhouse_features(silent, params).empty
    assert missing_sensors(RawColumns.from_frame(silent), params) == ("vent_pct", "heat_pct", "screen_pct")
