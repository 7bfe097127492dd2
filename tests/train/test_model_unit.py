"""The forecast model without Ray: plans, constraints, save/load, metrics against persistence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost

from app.contracts.vocabulary import plan_columns
from app.train.evaluate import evaluate
from app.train.model import ForecastModel, fill_plans, load_saved_model, monotone_constraints
from app.train.trainer import target_specs

FEATURES = ["air_temp_c", "rh_pct", "outside_temp_c", "vent_pct", "heat_pct", "screen_pct"]


def frame(n: int = 500, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({c: rng.uniform(0, 100 if c.endswith("pct") else 30, n) for c in FEATURES})
    df["greenhouse_id"] = "gh-01"
    df["ts"] = pd.date_range("2026-06-01", periods=n, freq="min", tz="UTC")
    df = fill_plans(df, [15])
    df["target_air_temp_c_15min"] = df["air_temp_c"] + 0.02 * df["plan_heat_pct_15min"] + 0.5 * df["plan_vent_x_dtemp_15min"]
    df["target_rh_pct_15min"] = df["rh_pct"] - 0.01 * df["plan_vent_pct_15min"]
    return df


def fit_local(df: pd.DataFrame) -> ForecastModel:
    boosters = {}
    for key, spec in target_specs(FEATURES, [15]).items():
        d = xgboost.DMatrix(df[spec["features"]], label=df[spec["label"]] - df[spec["base"]], feature_names=spec["features"])
        boosters[key] = xgboost.train({"max_depth": 3, "eta": 0.3, "monotone_constraints": spec["monotone"], "nthread": 1}, d, 60)
    return ForecastModel(boosters, FEATURES, [15], feature_set_id="fs-test")


def test_fill_plans_holds_current_settings_and_recomputes_the_vent_term():
    df = frame(3).drop(columns=plan_columns([15]))
    out = fill_plans(df, [15])
    assert (out["plan_heat_pct_15min"] == df["heat_pct"]).all()
    expected = out["plan_vent_pct_15min"] * (out["outside_temp_c"] - out["air_temp_c"]) / 100
    assert np.allclose(out["plan_vent_x_dtemp_15min"], expected)
    forced = fill_plans(df, [15], overrides={"heat_pct": 100})
    assert (forced["plan_heat_pct_15min"] == 100).all()


def test_constraints_only_on_temperature_and_in_the_physical_direction():
    feats = FEATURES + plan_columns([15])
    temp = dict(zip(feats, monotone_constraints("air_temp_c", feats, 15), strict=True))
    assert temp["plan_heat_pct_15min"] == 1 and temp["heat_pct"] == 1
    assert temp["plan_vent_x_dtemp_15min"] == 1 and temp["plan_vent_pct_15min"] == -1
    assert set(monotone_constraints("rh_pct", feats, 15)) == {0}


def test_save_load_roundtrip_predicts_the_same(tmp_path):
    df = frame()
    model = fit_local(df)
    again = ForecastModel.load(model.save(tmp_path / "m"))
    pd.testing.assert_frame_equal(model.predict(df), again.predict(df))
    assert again.feature_set_id == "fs-test" and again.horizons_min == [15]
    pd.testing.assert_frame_equal(load_saved_model(str(tmp_path / "m")).predict(df), model.predict(df))


def test_column_names_are_the_contract_with_stored_models():
    """Stored boosters read these names: the vocabulary must keep producing them."""
    model = fit_local(frame(50))
    assert plan_columns([15]) == ["plan_vent_pct_15min", "plan_heat_pct_15min", "plan_screen_pct_15min", "plan_vent_x_dtemp_15min"]
    assert model.input_columns() == FEATURES + plan_columns([15])
    assert model.output_keys() == ["air_temp_c_15min", "rh_pct_15min"]
    specs = target_specs(FEATURES, [15, 60])
    assert sorted(specs) == ["air_temp_c_15min", "air_temp_c_60min", "rh_pct_15min", "rh_pct_60min"]
    assert specs["rh_pct_60min"]["label"] == "target_rh_pct_60min" and specs["rh_pct_60min"]["base"] == "rh_pct"
    assert specs["air_temp_c_60min"]["features"][-4:] == ["plan_vent_pct_60min", "plan_heat_pct_60min", "plan_screen_pct_60min", "plan_vent_x_dtemp_60min"]


def test_evaluate_reports_skill_against_persistence():
    df = frame()
    metrics = evaluate(fit_local(df), df)
    assert metrics["persistence_rmse_air_temp_c_15min"] > metrics["rmse_air_temp_c_15min"]
    assert metrics["skill_air_temp_c_15min"] == pytest.approx(1 - metrics["rmse_air_temp_c_15min"] / metrics["persistence_rmse_air_temp_c_15min"])
    assert metrics["rows"] == len(df)


def test_monotone_physics_hold_for_every_row():
    df = frame(300)
    model = fit_local(df)
    rows = df.head(50)
    heats = [model.predict(fill_plans(rows.drop(columns=plan_columns([15])), [15], {"heat_pct": h}))["air_temp_c_15min"].to_numpy() for h in (0, 25, 50, 75, 100)]
    assert all((b >= a - 1e-9).all() for a, b in zip(heats, heats[1:], strict=False))
    cold = rows[rows["outside_temp_c"] < rows["air_temp_c"]]
    vents = [model.predict(fill_plans(cold.drop(columns=plan_columns([15])), [15], {"vent_pct": v}))["air_temp_c_15min"].to_numpy() for v in (0, 25, 50, 100)]
    assert len(cold) > 5 and all((b <= a + 1e-9).all() for a, b in zip(vents, vents[1:], strict=False))


def reference_predict(model: ForecastModel, frame: pd.DataFrame) -> pd.DataFrame:
    """The DataFrame/DMatrix prediction path the fast path replaced."""
    frame = fill_plans(frame, model.horizons_min)
    out = pd.DataFrame(index=frame.index)
    for variable in model.variables:
        for h in model.horizons_min:
            cols = model.features_for(variable, h)
            delta = model.boosters[f"{variable}_{h}min"].predict(xgboost.DMatrix(frame[cols].astype(np.float64), feature_names=cols))
            out[f"{variable}_{h}min"] = frame[variable].to_numpy(dtype=np.float64) + delta
    return out


def test_array_fast_path_gives_the_dmatrix_numbers():
    df = frame(400, seed=3)
    model = fit_local(df)
    expected = reference_predict(model, df)
    # predict (DataFrame in, DataFrame out) runs on the fast path, same index and columns
    got = model.predict(df.set_index(df.index + 7))
    assert list(got.columns) == model.output_keys() == list(expected.columns)
    assert (got.index == df.index + 7).all()
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=0, atol=1e-6)
    # the numpy path, columns in any order, plans given
    cols = model.input_columns()[::-1]
    arr = model.predict_arrays(df[cols].to_numpy(), cols)
    np.testing.assert_allclose(arr, expected.to_numpy(), rtol=0, atol=1e-6)
    # plans missing: the current settings are held (as fill_plans does); a stale vent term is ignored
    bare = df.drop(columns=plan_columns([15])[:3])
    np.testing.assert_allclose(model.predict(bare).to_numpy(), reference_predict(model, bare).to_numpy(), rtol=0, atol=1e-6)
    model.set_threads(1)
    np.testing.assert_allclose(model.predict_arrays(df[cols].to_numpy(), cols), expected.to_numpy(), rtol=0, atol=1e-6)
    assert model.predict_arrays(np.empty((0, len(cols))), cols).shape == (0, 2)
    with pytest.raises(KeyError):
        model.predict_arrays(df[["rh_pct"]].to_numpy(), ["rh_pct"])


def test_registered_model_loads_back_and_older_pickles_too(tmp_path):
    """Through tracking with train's loader; and a model logged before the loader travelled with
    the pyfunc (its pickle is a bare wrapper) loads through the named legacy loader."""
    from app.tracking import Tracking, load_forecast_model, log_forecast_model

    df = frame()
    model = fit_local(df)
    tracking = Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}")
    example = df[model.input_columns()].head(3).reset_index(drop=True)
    with tracking.run("unit", "log") as run_id:
        for load in (load_saved_model, None):  # None: what older versions pickled
            log_forecast_model(tracking.url, run_id, model.save(tmp_path / "m"), load=load, input_example=example, output_example=model.predict(example), registered_name="unit-forecaster")
    for version in ("1", "2"):
        loaded = load_forecast_model(tracking.url, f"models:/unit-forecaster/{version}")
        assert isinstance(loaded, ForecastModel)
        pd.testing.assert_frame_equal(loaded.predict(df), model.predict(df))
