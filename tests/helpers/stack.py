"""Settings on the real engines that ``stack/stack up`` starts, namespaced by a run id (the engines
keep data between runs, so each test module writes under its own names)."""

from __future__ import annotations

import uuid
from pathlib import Path

from app.config import Settings
from tests.helpers.engines import engine_url, ray_token_file, with_database

# Clients of the stack's Ray head (the Ray CLI, `serve deploy`, Airflow, drivers): it runs with token
# auth, the token in a file of the stack's run dir (see stack/env.sh). The Jobs API clients of the
# product send it themselves (app.orchestration.ray_jobs.ray_auth_headers reads RAY_AUTH_TOKEN_PATH).
RAY_CLIENT_ENV = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": ray_token_file() or "", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def stack_settings(data_dir: Path, name: str, *, partitions: int, sink_batch_records: int) -> tuple[str, Settings]:
    """A new run id and settings on Kafka, MongoDB, HDFS and MLflow whose topics, lake folder,
    database and sink group carry ``name`` and the run id (drop ``gh_<name>_<run>`` afterwards)."""
    run = uuid.uuid4().hex[:8]
    kafka, mongo, hdfs = engine_url("kafka"), engine_url("mongodb"), engine_url("webhdfs")
    sensors = f"greenhouse.sensors.{name}-{run}"
    settings = Settings(
        data_dir=data_dir,
        bus_url=kafka,
        lake_url=f"{hdfs.replace('webhdfs://', 'webhdfs://greenhouse@')}/gh-{name}/{run}",
        metadata_url=with_database(mongo, f"gh_{name}_{run}"),
        tracking_url=engine_url("mlflow"),
        topics={"sensors": sensors, "control": f"greenhouse.control.{name}-{run}", "deadletter": f"greenhouse.deadletter.{name}-{run}", "partitions": partitions},
        ingest={"topics": [sensors]},
        sink={"group_id": f"lake-sink-{name}-{run}", "max_batch_records": sink_batch_records},
        ray={"auth_token_file": ray_token_file()},
    )
    return run, settings
