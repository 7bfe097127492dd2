"""Drift: the PSI on its own, then the drift check on Ray Data against a feature set the preprocess
job built: readings shifted by +4 K (indoor and outdoor) and -15 RH points drift, the next day of
the same stationary climate does not, and a poor online forecast error alone is drift too."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from app.config import Settings
from app.lake import Lake
from app.metadata import DECISIONS, DRIFT_REPORTS, FEATURE_SETS, open_metadata
from app.preprocess import PreprocessParams, run_preprocess
from app.preprocess.drift import online_forecast_error, run_drift_check
from app.preprocess.pipeline import column_stats
from app.preprocess.psi import PSI_FLOOR, baseline_of, bin_counts, histogram_baseline, normal_baseline, psi
from tests.helpers.drift_lake import START, shifted, simulated_readings, write_readings

BASELINE_DAYS = 6  # the preprocess job's train split (its first 80 %) is the baseline


# -- the PSI --------------------------------------------------------------------------------------
def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    edges, fractions = histogram_baseline(rng.normal(20, 2, 50_000))
    assert len(edges) == 9 and fractions == pytest.approx([0.1] * 10, abs=1e-3)
    assert psi(fractions, bin_counts(rng.normal(20, 2, 5_000), edges)) < 0.02
    assert 0.1 < psi(fractions, bin_counts(rng.normal(20.8, 2, 5_000), edges)) < 0.25  # a slight shift
    assert psi(fractions, bin_counts(rng.normal(24, 2, 5_000), edges)) > 2.0


def test_bins_hold_ties_and_open_ends():
    values = np.array([0.0] * 70 + [5.0] * 10 + list(range(10, 30)), dtype=float)  # a mostly closed vent
    edges, fractions = histogram_baseline(values)
    assert edges[0] == 0.0 and len(edges) == len(set(edges)) < 9
    assert sum(fractions) == pytest.approx(1.0) and fractions[0] == 0.0 and fractions[1] == pytest.approx(0.7)
    np.testing.assert_array_equal(bin_counts([-1.0, 0.0, 4.99, 5.0, 1e9, np.nan, np.inf], [0.0, 5.0]), [1, 2, 2])
    assert psi(fractions, bin_counts(values, edges)) == pytest.approx(0.0)


def test_psi_edge_cases():
    assert np.isnan(psi([0.5, 0.5], [0, 0]))  # nothing to compare is not "no drift"
    with pytest.raises(ValueError, match="bins"):
        psi([0.5, 0.5], [1, 2, 3])
    one_bin_empty = psi([0.5, 0.5], [100, 0])
    assert one_bin_empty == pytest.approx((1 - 0.5) * np.log(1 / 0.5) + (PSI_FLOOR - 0.5) * np.log(PSI_FLOOR / 0.5))
    assert histogram_baseline([np.nan]) == ([], [])


def test_normal_fallback_from_percentiles_for_feature_sets_without_histograms():
    rng = np.random.default_rng(1)
    sample = pd.DataFrame({"x": rng.normal(10, 3, 20_000)})
    stats = column_stats(sample, ["x"])["x"]
    assert set(stats) >= {"bin_edges", "bin_fracs", "p01", "p50", "p99"} and sum(stats["bin_fracs"]) == pytest.approx(1.0)
    old = {k: v for k, v in stats.items() if not k.startswith("bin_")}
    edges, fractions = baseline_of(old)
    assert edges == normal_baseline(old)[0] and fractions == [0.1] * 10
    assert psi(fractions, bin_counts(rng.normal(10, 3, 5_000), edges)) < 0.05
    assert psi(fractions, bin_counts(rng.normal(14, 3, 5_000), edges)) > 1.0
    assert normal_baseline({"null_frac": 1.0}) is None
    assert normal_baseline({"p01": 2.0, "p50": 2.0, "p99": 2.0}) == ([2.0], [0.0, 1.0])
    assert baseline_of(stats) == (stats["bin_edges"], stats["bin_fracs"])


def test_online_error_counts_only_settled_non_shadow_errors_at_15_min(settings):
    store = open_metadata(settings.metadata_url)
    now = datetime(2026, 6, 1, 12, tzinfo=UTC)

    def decision(minutes_ago: float, *errors: tuple[int, float, bool]) -> dict:
        settled = [{"model": "m", "version": "1", "horizon_min": h, "error_c": e, "shadow": s} for h, e, s in errors]
        return {"decided_at": now - timedelta(minutes=minutes_ago), "model": {"name": "m", "version": "1"}, "settled_errors": settled}

    assert online_forecast_error(store, since=now - timedelta(days=1))["rmse_c"] is None
    for doc in (decision(5, (15, 1.0, False), (60, 9.0, False), (15, 9.0, True)), decision(10, (15, -3.0, False)), decision(60 * 25, (15, 9.0, False)), decision(1)):
        store.collection(DECISIONS).insert_one(doc)
    online = online_forecast_error(store, since=now - timedelta(days=1))
    assert online["errors"] == 2 and online["rmse_c"] == pytest.approx(np.sqrt((1 + 9) / 2))


# -- the drift check on Ray Data --------------------------------------------------------------------
@pytest.fixture(scope="module")
def lakes(ray_local, tmp_path_factory):
    """A feature set built by the preprocess job from the first days of a stationary simulated
    climate, and settings on two lakes holding the next day: as simulated, and shifted."""
    readings = simulated_readings(BASELINE_DAYS + 1)
    cut = (START.date() + timedelta(days=BASELINE_DAYS)).isoformat()
    base = Settings(data_dir=tmp_path_factory.mktemp("drift-base"))
    write_readings(Lake.from_url(base.lake_url), [r for r in readings if r["ts"][:10] < cut])
    info = run_preprocess(base, PreprocessParams(horizons_min=(15, 60)), run_ids={"airflow_dag_id": "test"})
    recent = [r for r in readings if r["ts"][:10] >= cut]
    out: dict[str, Any] = {"feature_set_id": info.feature_set_id, "base": base}
    for name, rows in (("same", recent), ("shifted", shifted(recent))):
        out[name] = Settings(data_dir=tmp_path_factory.mktemp(f"drift-{name}"), metadata_url=base.metadata_url)
        write_readings(Lake.from_url(out[name].lake_url), rows)
    return out


def test_feature_set_stores_histograms_and_lineage(lakes):
    doc = open_metadata(lakes["base"].metadata_url).collection(FEATURE_SETS).find_one({"_id": lakes["feature_set_id"]})
    assert doc["lineage"] == {"airflow_dag_id": "test"}
    for column in doc["feature_columns"]:
        stats = doc["stats"][column]
        assert len(stats["bin_fracs"]) == len(stats["bin_edges"]) + 1 and sum(stats["bin_fracs"]) == pytest.approx(1.0), column


def test_the_next_day_of_the_same_climate_has_not_drifted(lakes):
    report = run_drift_check(lakes["same"], run_ids={"ray_submission_id": "raysubmit_1"})
    assert report.feature_set_id == lakes["feature_set_id"]  # the newest by default
    assert not report.drifted and report.drifted_features == [], report.reason
    assert report.reason.startswith("no drift") and report.online == {**report.online, "rmse_c": None, "errors": 0}
    assert max(v for v in report.psi.values() if v is not None) < report.thresholds["psi_threshold"]
    assert report.window["rows"] > 2000 and report.window["start"] == "2026-03-16T00:00:00+00:00"
    assert "hour_sin" not in report.psi and "air_temp_c" in report.psi  # calendar features are not judged
    stored = open_metadata(lakes["same"].metadata_url).collection(DRIFT_REPORTS).find_one({"_id": report.report_id})
    assert stored["drifted"] is False and stored["lineage"] == {"ray_submission_id": "raysubmit_1"} and stored["psi"] == report.psi


def test_shifted_readings_drift(lakes):
    report = run_drift_check(lakes["shifted"], feature_set_id=lakes["feature_set_id"])
    assert report.drifted and {"air_temp_c", "rh_pct"} <= set(report.drifted_features), report.reason
    # the weather moved too: reported, not counted (settings.drift.count_weather_features is off)
    assert min(report.psi["outside_temp_c"], report.psi["outside_rh_pct"]) > 0.25 and "outside_temp_c" not in report.drifted_features
    assert report.features["air_temp_c"]["recent_mean"] == pytest.approx(report.features["air_temp_c"]["baseline_mean"] + 4, abs=1.5)
    assert report.reason.startswith(f"{len(report.drifted_features)} features over PSI 0.25")


def test_a_poor_online_forecast_error_alone_is_drift(lakes):
    settings = lakes["same"]
    now = datetime.now(UTC)
    decisions = open_metadata(settings.metadata_url).collection(DECISIONS)
    for i in range(12):
        decisions.insert_one({"decided_at": now - timedelta(minutes=i), "settled_errors": [{"horizon_min": 15, "error_c": 1.5, "shadow": False}]})
    report = run_drift_check(settings, now=now)
    assert report.drifted and report.drifted_features == [] and report.online["errors"] == 12
    assert report.online["rmse_c"] == pytest.approx(1.5) and "online 15-min forecast RMSE 1.50" in report.reason
    decisions.delete_many({})


def test_the_job_prints_the_verdict_and_records_lineage(lakes, monkeypatch, capsys):
    from app.entrypoints.drift import main

    settings = lakes["shifted"]
    monkeypatch.setenv("GH_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("GH_METADATA_URL", settings.metadata_url)
    monkeypatch.setenv("GH_LINEAGE_AIRFLOW_DAG_ID", "greenhouse_drift_check")
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"metadata": {"job_submission_id": "drift-abc"}}))
    assert main(["--feature-set-id", lakes["feature_set_id"]]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["job"] == "drift" and summary["ok"] and summary["drifted"] is True and "asset_event" not in summary
    stored = open_metadata(settings.metadata_url).collection(DRIFT_REPORTS).find_one({"_id": summary["report_id"]})
    assert stored["lineage"] == {"airflow_dag_id": "greenhouse_drift_check", "ray_submission_id": "drift-abc"}


def test_clear_errors_without_data(settings, ray_local):
    with pytest.raises(LookupError, match="no feature set recorded"):
        run_drift_check(settings)
    open_metadata(settings.metadata_url).collection(FEATURE_SETS).insert_one({"_id": "fs-1", "created_at": datetime.now(UTC), "params": {}, "feature_columns": ["air_temp_c"], "stats": {}})
    with pytest.raises(LookupError, match="no raw readings"):
        run_drift_check(settings)
    write_readings(Lake.from_url(settings.lake_url), simulated_readings(0.02))  # half an hour: no complete row
    with pytest.raises(LookupError, match="no per-column statistics"):
        run_drift_check(settings)
    stats = column_stats(pd.DataFrame({"air_temp_c": np.linspace(15, 25, 100)}), ["air_temp_c"])
    open_metadata(settings.metadata_url).collection(FEATURE_SETS).update_one({"_id": "fs-1"}, {"$set": {"stats": stats}})
    with pytest.raises(LookupError, match="no complete feature rows"):
        run_drift_check(settings, feature_set_id="fs-1")


def test_weather_features_are_reported_but_counted_only_when_asked():
    from app.preprocess.drift import _verdict, is_weather_feature

    assert is_weather_feature("outside_temp_c") and is_weather_feature("solar_w_m2_mean_15min") and not is_weather_feature("air_temp_c")
    psi = {"outside_temp_c": 3.0, "outside_rh_pct": 2.0, "solar_w_m2": 1.5, "air_temp_c": 0.05}
    online = {"rmse_c": None, "errors": 0}
    thresholds = {"psi_threshold": 0.25, "min_drifted_features": 2, "forecast_rmse_threshold_c": 1.0}
    over, drifted, reason = _verdict(psi, online, thresholds)
    assert (over, drifted) == ([], False) and "no drift" in reason
    over, drifted, _ = _verdict(psi, online, {**thresholds, "count_weather_features": True})
    assert drifted and over == ["outside_temp_c", "outside_rh_pct", "solar_w_m2"]
