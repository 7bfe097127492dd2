"""Lineage ids from a job's environment, and the Airflow asset event a drift check posts."""

from __future__ import annotations

import json
import urllib.request

import pytest

from app.orchestration.asset_events import DRIFT_ASSET_NAME, DRIFT_ASSET_URI, asset_event_request, asset_lookup_request, post_asset_event
from app.orchestration.run_ids import RAY_JOB_CONFIG_ENV, lineage_env, run_ids_from_env, submission_id_env
from app.orchestration.runner import JobRequest


def test_run_ids_from_the_dag_and_from_ray():
    env = {**lineage_env(dag_id="greenhouse_pipeline", dag_run_id="manual__2026-06-01T00:00:00+00:00", task_id="preprocess"), "PATH": "/bin"}
    env[RAY_JOB_CONFIG_ENV] = json.dumps({"runtime_env": {}, "metadata": {"job_submission_id": "preprocess-manual-1a2b3c4d", "job_name": "x"}})
    env.update(submission_id_env("ignored-when-ray-says"))
    assert run_ids_from_env(env) == {
        "airflow_dag_id": "greenhouse_pipeline",
        "airflow_dag_run_id": "manual__2026-06-01T00:00:00+00:00",
        "airflow_task_id": "preprocess",
        "ray_submission_id": "preprocess-manual-1a2b3c4d",
    }


def test_the_runners_id_is_the_fallback_and_nothing_is_invented():
    assert run_ids_from_env({}) == {}
    assert run_ids_from_env({RAY_JOB_CONFIG_ENV: "not json", **submission_id_env("sub-1")}) == {"ray_submission_id": "sub-1"}
    assert run_ids_from_env({RAY_JOB_CONFIG_ENV: json.dumps({"metadata": {}}), "GH_LINEAGE_AIRFLOW_TASK_ID": ""}) == {}
    request = JobRequest("train", "train-1", env_vars={"GH_BUS_URL": "kafka://k"})
    assert request.job_env() == {"GH_BUS_URL": "kafka://k", "GH_LINEAGE_RAY_SUBMISSION_ID": "train-1"}
    assert request.job_env("train-1-r1")["GH_LINEAGE_RAY_SUBMISSION_ID"] == "train-1-r1"


def test_asset_event_requests_follow_the_airflow_3_api():
    lookup = asset_lookup_request("http://airflow:8080/", DRIFT_ASSET_URI, token="t0k")
    assert lookup.get_method() == "GET" and lookup.full_url == "http://airflow:8080/api/v2/assets?uri_pattern=greenhouse%3A%2F%2Fdrift%2Ffeatures&limit=100"
    assert lookup.get_header("Authorization") == "Bearer t0k"
    event = asset_event_request("http://airflow:8080/api/v2", 7, {"report_id": "drift-1"})
    assert event.get_method() == "POST" and event.full_url == "http://airflow:8080/api/v2/assets/events"
    assert json.loads(event.data) == {"asset_id": 7, "extra": {"report_id": "drift-1"}}  # type: ignore[arg-type]
    assert event.get_header("Content-type") == "application/json" and event.get_header("Authorization") is None


def test_post_asset_event_finds_the_asset_id_by_name_and_uri():
    sent: list[urllib.request.Request] = []
    assets = {"assets": [{"id": 3, "name": "other", "uri": DRIFT_ASSET_URI}, {"id": 7, "name": DRIFT_ASSET_NAME, "uri": DRIFT_ASSET_URI}], "total_entries": 2}

    def send(request: urllib.request.Request) -> dict:
        sent.append(request)
        return assets if request.get_method() == "GET" else {"id": 99, "asset_id": 7}

    assert post_asset_event("http://airflow:8080", extra={"report_id": "drift-1"}, send=send) == {"id": 99, "asset_id": 7}
    assert [r.get_method() for r in sent] == ["GET", "POST"] and json.loads(sent[1].data)["asset_id"] == 7  # type: ignore[arg-type]
    with pytest.raises(LookupError, match="no asset"):
        post_asset_event("http://airflow:8080", send=lambda request: {"assets": []})
    with pytest.raises(ValueError, match="no Airflow URL"):
        post_asset_event("", send=send)
