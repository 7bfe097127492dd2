"""Drift to retraining, for real: ``dag.test()`` of ``greenhouse_drift_check`` in the Airflow venv runs
the drift job on the stack's Ray head (HDFS lake, FerretDB metadata). On unshifted readings the task
is skipped and Airflow records no asset event; on shifted ones it succeeds, Airflow records an event
of ``greenhouse_feature_drift`` and queues a run of ``greenhouse_pipeline``, which is scheduled on it.

Needs the engines of `stack/stack up` (outside CI it skips when one is down; under CI=true it fails)
and the Airflow venv (created through stack/airflow-env when missing; quick when present).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from app.config import Settings
from app.lake import Lake
from app.metadata import DRIFT_REPORTS, open_metadata
from app.preprocess import PreprocessParams
from tests.helpers.drift_lake import START, record_baseline, shifted, simulated_readings, write_readings
from tests.helpers.engines import engine_url
from tests.helpers.stack import stack_settings

pytestmark = [pytest.mark.stack, pytest.mark.timeout(900)]
REPO = Path(__file__).resolve().parents[2]
BASELINE_DAYS = 6


@pytest.fixture(scope="module")
def drift_stack(tmp_path_factory):
    """A baseline feature set (the first days of a stationary simulated climate) in a namespaced
    metadata database, and two HDFS lakes holding the next day: as simulated, and shifted."""
    run, settings = stack_settings(tmp_path_factory.mktemp("drift"), "drift", partitions=1, sink_batch_records=1000)
    readings = simulated_readings(BASELINE_DAYS + 1)
    cut = (START.date() + timedelta(days=BASELINE_DAYS)).isoformat()
    base = Settings(data_dir=tmp_path_factory.mktemp("drift-base"), metadata_url=settings.metadata_url)
    write_readings(Lake.from_url(base.lake_url), [r for r in readings if r["ts"][:10] < cut])
    record_baseline(base, f"fs-drift-{run}", PreprocessParams(horizons_min=(15, 60)))
    recent = [r for r in readings if r["ts"][:10] >= cut]
    lakes = {"same": f"{settings.lake_url}/same", "shifted": f"{settings.lake_url}/shifted"}
    write_readings(Lake.from_url(lakes["same"]), recent)
    write_readings(Lake.from_url(lakes["shifted"]), shifted(recent))
    yield {"run": run, "settings": settings, "lakes": lakes, "ray": engine_url("ray")}
    store = open_metadata(settings.metadata_url)
    store.client.drop_database(f"gh_drift_{run}")
    store.close()


def conf_for(stack: dict, lake: str) -> dict:
    env = {"GH_LAKE_URL": stack["lakes"][lake], "GH_METADATA_URL": stack["settings"].metadata_url}
    return {"mode": "jobs-api", "ray_address": stack["ray"], "working_dir": str(REPO), "job_env": env, "timeout_s": 600}


def test_drift_check_emits_the_asset_only_on_drift_and_queues_the_pipeline(run_dag, drift_stack):
    logical_date = datetime.now(timezone.utc).replace(microsecond=0)
    calm = run_dag(logical_date, conf_for(drift_stack, "same"), dag_attr="drift_dag")
    assert calm["state"] == "success" and calm["tasks"] == {"drift": "skipped"}, calm
    assert calm["asset_events"] == [] and not [q for q in calm["queued"] if q["asset"] == "greenhouse_feature_drift"], calm

    drifted = run_dag(logical_date + timedelta(seconds=1), conf_for(drift_stack, "shifted"), dag_attr="drift_dag")
    assert drifted["state"] == "success" and drifted["tasks"] == {"drift": "success"}, drifted
    summary = drifted["xcom"]["drift"]["summary"]
    assert summary["drifted"] is True and {"air_temp_c", "rh_pct"} <= set(summary["drifted_features"]), summary
    [event] = drifted["asset_events"]
    assert event["asset"] == "greenhouse_feature_drift" and event["source_task_id"] == "drift"
    assert event["extra"]["report_id"] == summary["report_id"]
    assert {"asset": "greenhouse_feature_drift", "target_dag_id": "greenhouse_pipeline"} in drifted["queued"]

    # both checks left their report, with the DAG run and the Ray job that made it
    reports = {r["_id"]: r for r in open_metadata(drift_stack["settings"].metadata_url).collection(DRIFT_REPORTS).find()}
    assert len(reports) == 2 and reports[summary["report_id"]]["drifted"] is True
    calm_report = next(r for r in reports.values() if r["_id"] != summary["report_id"])
    assert calm_report["drifted"] is False and calm_report["lineage"]["airflow_dag_run_id"] == calm["run_id"]
    lineage = reports[summary["report_id"]]["lineage"]
    assert lineage["airflow_dag_id"] == "greenhouse_drift_check" and lineage["airflow_task_id"] == "drift"
    assert lineage["ray_submission_id"] == drifted["xcom"]["drift"]["submission_id"]
