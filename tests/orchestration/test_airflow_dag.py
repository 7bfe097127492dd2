"""The Airflow DAG for real: ``dag.test()`` in the Airflow venv (stack/airflow-env) runs the whole
pipeline as Ray jobs on the stack's Ray head, against Kafka, HDFS, FerretDB and MLflow; a second run
of the same DAG run submits nothing new.

Needs the engines of `stack/stack up` (outside CI it skips when one is down; under CI=true it fails)
and the Airflow venv (created here through stack/airflow-env when missing; quick when present).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from app.bus import OutgoingRecord, open_bus
from app.config import Settings
from app.lake import Lake
from app.metadata import FEATURE_SETS, open_metadata
from app.orchestration.ray_jobs import deterministic_id
from app.sim.fleet import FleetSimulator
from tests.helpers.engines import engine_url
from tests.helpers.stack import stack_settings

pytestmark = [pytest.mark.stack, pytest.mark.timeout(900)]
REPO = Path(__file__).resolve().parents[2]
DAG_ID = "greenhouse_pipeline"
# The training step: "train" by default; GH_TEST_DAG_TRAINER=tune runs a tiny Ray Tune search instead.
TRAINER = os.environ.get("GH_TEST_DAG_TRAINER", "train")
OTHER = {"train": "tune", "tune": "train"}[TRAINER]
JOB_TASKS = ("sink", "preprocess", TRAINER, "promote")


@pytest.fixture(scope="module")
def pipeline_stack(tmp_path_factory):
    """Settings on every real engine, namespaced by a run id, with twin readings on the Kafka topic."""
    ray_address = engine_url("ray")
    run, settings = stack_settings(tmp_path_factory.mktemp("dag"), "dag", partitions=2, sink_batch_records=2000)
    sensors = settings.topics.sensors
    # 2 greenhouses x 30 h of one-minute readings: enough for 60-min lags and targets, small enough
    # for 2 CPUs.
    start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=36)
    readings = [r for step in FleetSimulator(2, start, step_s=60, seed=11).iter_steps(30 * 3600) for r in step]
    bus = open_bus(settings.bus_url)
    bus.create_topic(sensors, settings.topics.partitions)
    for i in range(0, len(readings), 500):
        results = bus.produce(sensors, [OutgoingRecord(value=orjson.dumps(r), key=r["greenhouse_id"].encode()) for r in readings[i : i + 500]])
        assert all(res.ok for res in results)
    bus.close()
    env_vars = {
        "GH_BUS_URL": settings.bus_url,
        "GH_LAKE_URL": settings.lake_url,
        "GH_METADATA_URL": settings.metadata_url,
        "GH_TRACKING_URL": settings.tracking_url,
        "GH_TOPICS__SENSORS": sensors,
        "GH_TOPICS__CONTROL": settings.topics.control,
        "GH_TOPICS__DEADLETTER": settings.topics.deadletter,
        "GH_TOPICS__PARTITIONS": str(settings.topics.partitions),
        "GH_SINK__GROUP_ID": settings.sink.group_id,
        "GH_SINK__MAX_BATCH_RECORDS": str(settings.sink.max_batch_records),
    }
    yield {"run": run, "settings": settings, "ray": ray_address, "env_vars": env_vars, "readings": len(readings)}
    store = open_metadata(settings.metadata_url)
    store.client.drop_database(f"gh_dag_{run}")
    store.close()


def ray_jobs_by_id(address: str) -> dict[str, object]:
    from app.orchestration.ray_jobs import make_client, ray_auth_headers
    from tests.helpers.engines import ray_token_file

    return {j.submission_id: j for j in make_client(address, ray_auth_headers(token_file=ray_token_file())).list_jobs() if j.submission_id}


def test_dag_runs_the_pipeline_as_ray_jobs_and_a_rerun_submits_nothing(run_dag, pipeline_stack):
    from app.tracking import Tracking

    settings: Settings = pipeline_stack["settings"]
    model_name = f"gh-dag-{pipeline_stack['run']}"
    logical_date = datetime.now(timezone.utc).replace(microsecond=0)
    conf = {
        "mode": "jobs-api",
        "ray_address": pipeline_stack["ray"],
        "working_dir": str(REPO),
        "job_env": pipeline_stack["env_vars"],
        "trainer": TRAINER,
        "sink_args": "--idle-polls 3",
        "preprocess_args": "--horizons 15,60",
        "train_args": "--num-boost-round 40",
        "tune_args": "--num-samples 2 --max-rounds 40 --grace-rounds 10 --max-concurrent-trials 1",
        "model_name": model_name,
        "min_skill": -1000.0,  # the gate itself is exercised; any trained model passes it here
        "timeout_s": 600,
    }
    first = run_dag(logical_date, conf)
    assert first["state"] == "success", first
    tasks = first["tasks"]
    assert {t: tasks[t] for t in (*JOB_TASKS, "choose_trainer", "evaluate")} == {t: "success" for t in (*JOB_TASKS, "choose_trainer", "evaluate")}, tasks
    assert tasks[OTHER] == "skipped", tasks

    # exactly one Ray job per job task, with the deterministic id, and each one succeeded
    expected = {task: deterministic_id(task, first["run_id"], DAG_ID) for task in JOB_TASKS}
    jobs = ray_jobs_by_id(pipeline_stack["ray"])
    for task, sid in expected.items():
        assert sid in jobs, f"{task}: no Ray job {sid}"
        assert str(jobs[sid].status.value) == "SUCCEEDED", (task, jobs[sid].status)
        assert f"{sid}-r1" not in jobs
        assert first["xcom"][task]["submission_id"] == sid and first["xcom"][task]["submitted"] is True
    ours = {sid: j for sid, j in jobs.items() if any(sid.startswith(s) for s in expected.values())}
    assert len(ours) == len(JOB_TASKS)

    # the jobs record the DAG run and the Ray job that made what they wrote (lineage)
    feature_set_id = first["xcom"]["preprocess"]["summary"]["feature_set_id"]
    store = open_metadata(settings.metadata_url)
    lineage = store.collection(FEATURE_SETS).find_one({"_id": feature_set_id})["lineage"]
    assert lineage == {"airflow_dag_id": DAG_ID, "airflow_dag_run_id": first["run_id"], "airflow_task_id": "preprocess", "ray_submission_id": expected["preprocess"]}

    # the jobs did their work on the namespaced engines
    sink_summary = first["xcom"]["sink"]["summary"]
    assert sink_summary["rows_written"] == pipeline_stack["readings"]
    assert Lake.from_url(settings.lake_url).read_raw_sensors(columns=["device_id"]).num_rows == pipeline_stack["readings"]
    train_summary = first["xcom"][TRAINER]["summary"]
    assert train_summary["model_version"] == "1" and "skill_air_temp_c_15min" in train_summary["metrics"]
    assert first["xcom"]["promote"]["summary"]["promoted"] is True
    assert Tracking(settings.tracking_url).version_by_alias(model_name, "champion") == "1"

    # the same DAG run again: every task re-attaches to its finished job, nothing is submitted
    second = run_dag(logical_date, conf)
    assert second["run_id"] == first["run_id"] and second["state"] == "success", second
    after = ray_jobs_by_id(pipeline_stack["ray"])
    ours_after = {sid: j for sid, j in after.items() if any(sid.startswith(s) for s in expected.values())}
    assert set(ours_after) == set(ours)
    assert all(ours_after[sid].start_time == ours[sid].start_time for sid in ours)
    for task, sid in expected.items():
        assert second["xcom"][task]["submission_id"] == sid and second["xcom"][task]["submitted"] is False, second["xcom"][task]
