"""Which orchestrator run started this job: the ids a job records as the lineage of what it writes.

The DAG passes its ids to every Ray job as environment variables (:func:`lineage_env`):

- ``GH_LINEAGE_AIRFLOW_DAG_ID``: the Airflow DAG (``greenhouse_pipeline``);
- ``GH_LINEAGE_AIRFLOW_DAG_RUN_ID``: the DAG run (``manual__2026-...``, ``scheduled__...``);
- ``GH_LINEAGE_AIRFLOW_TASK_ID``: the task that submitted the job (``preprocess``);

and the job finds its Ray job submission id itself: Ray 2.x has no public API for it
(ray-project/ray#28089), but its job supervisor hands every driver its job config as JSON in
``RAY_JOB_CONFIG_JSON_ENV_VAR``, whose ``metadata.job_submission_id`` is the submission id (Ray
2.60, ``dashboard/modules/job/job_supervisor.py``). This covers every way a job is submitted (the
Jobs API, ``ray job submit``, a KubeRay RayJob's submitter). When it is absent (a Ray version that
moved it, a job run by hand), ``GH_LINEAGE_RAY_SUBMISSION_ID`` is used, which the product's runners
set to the id they submit under.

Only the standard library is imported here: Airflow imports this module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

AIRFLOW_DAG_ID_ENV = "GH_LINEAGE_AIRFLOW_DAG_ID"
AIRFLOW_DAG_RUN_ID_ENV = "GH_LINEAGE_AIRFLOW_DAG_RUN_ID"
AIRFLOW_TASK_ID_ENV = "GH_LINEAGE_AIRFLOW_TASK_ID"
RAY_SUBMISSION_ID_ENV = "GH_LINEAGE_RAY_SUBMISSION_ID"
RAY_JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
"""Set by Ray's job supervisor in the driver's environment (runtime_env and metadata as JSON)."""
RAY_SUBMISSION_ID_KEY = "job_submission_id"
"""The key of the submission id in that metadata (``JOB_ID_METADATA_KEY`` in Ray)."""

_AIRFLOW = {"airflow_dag_id": AIRFLOW_DAG_ID_ENV, "airflow_dag_run_id": AIRFLOW_DAG_RUN_ID_ENV, "airflow_task_id": AIRFLOW_TASK_ID_ENV}


def lineage_env(*, dag_id: str, dag_run_id: str, task_id: str) -> dict[str, str]:
    """The environment variables a DAG task gives the Ray job it submits."""
    return {AIRFLOW_DAG_ID_ENV: dag_id, AIRFLOW_DAG_RUN_ID_ENV: dag_run_id, AIRFLOW_TASK_ID_ENV: task_id}


def submission_id_env(submission_id: str) -> dict[str, str]:
    """The environment variable a runner gives a job it submits as ``submission_id``."""
    return {RAY_SUBMISSION_ID_ENV: submission_id}


def ray_submission_id(environ: Mapping[str, str]) -> str | None:
    """This Ray job's submission id: Ray's own job config, else ``GH_LINEAGE_RAY_SUBMISSION_ID``;
    None outside a submitted job."""
    raw = environ.get(RAY_JOB_CONFIG_ENV)
    if raw:
        try:
            metadata = json.loads(raw).get("metadata") or {}
        except (ValueError, AttributeError):
            metadata = {}
        found = metadata.get(RAY_SUBMISSION_ID_KEY) if isinstance(metadata, dict) else None
        if isinstance(found, str) and found:
            return found
    return environ.get(RAY_SUBMISSION_ID_ENV) or None


def run_ids_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The lineage ids found in ``environ`` (a job's ``os.environ``): any of ``airflow_dag_id``,
    ``airflow_dag_run_id``, ``airflow_task_id`` and ``ray_submission_id``; absent ones are left out."""
    ids = {key: environ[name] for key, name in _AIRFLOW.items() if environ.get(name)}
    submission_id = ray_submission_id(environ)
    if submission_id:
        ids["ray_submission_id"] = submission_id
    return ids
