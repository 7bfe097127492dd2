"""A twin's readings become the feature row serving would build; a short trial counts what it says."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from app.contracts.command import ModelRef
from app.contracts.vocabulary import forecast_key, interval_key, plan_column
from app.control.core import ControlPolicy, ModelForecaster
from app.preprocess.features import FeatureParams, greenhouse_features, latest_feature_row
from app.season.forecaster import model_feature_params, model_forecaster
from app.season.trial import TrialController, run_trial
from app.season.twins import evaluation_twins
from app.season.window import ReadingLog
from app.sim.fleet import FleetSimulator

START = datetime(2026, 1, 15, 5, tzinfo=timezone.utc)
PARAMS = FeatureParams(horizons_min=(5, 15))


def test_the_log_keeps_its_window_and_builds_the_row_training_builds():
    fleet = FleetSimulator(2, START, seed=3)
    recent, everything = ReadingLog("gh-01", keep_min=70), ReadingLog("gh-01", keep_min=None)
    for _ in range(100):
        readings = fleet.step()
        recent.add(readings, fleet.now)
        everything.add(readings, fleet.now)
    assert len(everything) == 300 and len(recent) == 3 * 71  # three devices, only gh-01; 70 minutes and the newest
    frame = everything.frame()
    assert set(frame["greenhouse_id"]) == {"gh-01"} and frame["ts"].iloc[-1] == pd.Timestamp(fleet.now)
    assert recent.latest_features(PARAMS) is not None and ReadingLog("gh-01").latest_features(PARAMS) is None
    row = latest_feature_row(everything.raw(), PARAMS)
    want = greenhouse_features(frame, PARAMS, training=False).iloc[-1]
    assert row is not None and row["ts"] == want["ts"].to_pydatetime()
    assert all(math.isclose(row[c], want[c], rel_tol=1e-9, abs_tol=1e-9) for c in ("air_temp_c", "air_temp_c_diff_15min", "solar_w_m2_mean_15min", "heat_pct_change_15min"))


@dataclass
class Toy:
    """A model-shaped toy (what :func:`model_forecaster` reads of a ForecastModel): heat warms."""

    horizons_min: list[int] = field(default_factory=lambda: [5, 15])
    feature_columns: list[str] = field(default_factory=lambda: ["air_temp_c", "outside_temp_c"])
    feature_params: dict = field(default_factory=lambda: {"horizons_min": [5, 15], "step_s": 60})

    def output_keys(self):
        return [forecast_key(v, h) for v in ("air_temp_c", "rh_pct") for h in self.horizons_min]

    def interval_keys(self):
        return [interval_key("air_temp_c", h, s) for h in self.horizons_min for s in ("low", "high")]

    def predict_arrays(self, X, columns, intervals=False):
        col = {c: X[:, i] for i, c in enumerate(columns)}
        temps = [col["air_temp_c"] + 0.04 * col[plan_column("heat_pct", h)] - 0.02 * h * (col["air_temp_c"] - col["outside_temp_c"]) / 10 for h in self.horizons_min]
        out = [*temps, *(np.full(len(X), 70.0) for _ in self.horizons_min)]
        if intervals:
            out += [e for t in temps for e in (t - 0.3, t + 0.3)]
        return np.column_stack(out)


def test_the_forecaster_answers_the_asked_horizons_in_its_own_key_order():
    forecaster = model_forecaster(Toy(), ModelRef(name="toy", version="1"))  # type: ignore[arg-type]
    assert forecaster.output_keys[-1] == "air_temp_c_15min_high" and len(forecaster.output_keys) == 8
    X = np.array([[18.0, 0.0, 50.0], [18.0, 0.0, 0.0]])
    cols = ["air_temp_c", "outside_temp_c", plan_column("heat_pct", 15)]
    out = forecaster.predict(X, cols, [15])
    assert out.shape == (2, 4)  # air_temp_c_15min, rh_pct_15min, its low and high edges
    assert out[0, 0] - out[0, 2] == pytest.approx(0.3) and out[0, 3] - out[0, 0] == pytest.approx(0.3) and out[0, 1] == 70.0
    plain = model_forecaster(Toy(), ModelRef(name="toy", version="1"), intervals=False)  # type: ignore[arg-type]
    assert plain.output_keys == tuple(Toy().output_keys()) and plain.predict(X, cols, [15]).shape == (2, 2)
    assert model_feature_params(Toy()).horizons_min == (5, 15)  # type: ignore[arg-type]


def test_a_short_trial_counts_the_climate_the_energy_and_the_travel_of_each_controller():
    twin = evaluation_twins(1)[0]
    policy = ControlPolicy()
    thermo = run_trial(twin, START, 0.125, TrialController("thermostat", policy), window="winter", warmup_h=1.0, keep_series=True)
    f = thermo.figures
    assert (thermo.twin_id, thermo.window, thermo.controller) == ("ev-01", "winter", "thermostat")
    assert math.isclose(f.in_band_pct + f.below_band_pct + f.above_band_pct, 100.0, abs_tol=0.05) and f.days == 0.125
    assert f.heating_kwh > 0 and f.mpc_share_pct == 0.0 and f.heat_travel_pct_per_day >= 0
    assert len(thermo.series["ts"]) == 180 / 5 and thermo.series["ts"][0] == START + timedelta(minutes=5)
    forecaster: ModelForecaster = model_forecaster(Toy(), ModelRef(name="toy", version="1"))  # type: ignore[arg-type]
    mpc = run_trial(twin, START, 0.125, TrialController("MPC", policy, forecaster, PARAMS), window="winter", warmup_h=2.5)
    assert mpc.figures.mpc_share_pct == 100.0 and mpc.figures.heating_kwh > 0 and mpc.series == {}
    again = run_trial(twin, START, 0.125, TrialController("thermostat", policy), window="winter", warmup_h=1.0)
    assert again.figures == f  # seeded: the same twin, weather and noise give the same figures
