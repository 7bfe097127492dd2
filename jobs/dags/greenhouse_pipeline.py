"""Airflow 3 DAG ``greenhouse_pipeline``: sink -> preprocess -> train or tune -> evaluate -> promote.

Airflow only orchestrates: every job step submits one Ray job and waits for it, either

- ``mode=jobs-api`` (default): through the Ray Jobs API of a running cluster (``ray_address``, e.g.
  the shared KubeRay RayCluster's ``http://greenhouse-head-svc.greenhouse:8265``, or a local
  ``ray start --head``) with ``JobSubmissionClient``; ``Authorization: Bearer $RAY_AUTH_TOKEN`` is
  sent when the worker has that variable (clusters with token auth); or
- ``mode=kuberay``: by creating a RayJob from the job's template in the rendered ``kuberay/``
  overlay (``kuberay_manifests``: the output of ``kubectl kustomize kuberay/overlays/prod``), which
  brings up its own Ray cluster and deletes it afterwards.

Each job's id is deterministic: ``<task>-<run id>-<hash of task, run id, DAG id>``. A retried or
re-run task therefore re-attaches to the job it already started (or returns the result of the one
that finished) instead of running it twice; a retry after a FAILED job submits ``<id>-r1``. Job
logs stream into the task log; killing the task (or its timeout) stops the Ray job / deletes the
RayJob.

Runs: daily at 03:00 UTC, and whenever asset ``greenhouse_feature_drift`` gets an event (the drift
check posts one through the Airflow REST API, ``POST /api/v2/assets/events``). A promotion emits
an event on ``greenhouse_champion_model``. Parameters (below) can be overridden per run (``conf``);
their defaults come from ``GH_DAG_*`` variables of the Airflow environment.

The step ``evaluate`` runs no Ray job: evaluation happens inside the train/tune job (validation
metrics against persistence) and the promote job (challenger against champion on one window);
``evaluate`` only gates promotion on the metric the train/tune job reported.

Environment: Airflow runs in its own venv (``stack/airflow-env``); the project must be importable
there (``PYTHONPATH=<checkout>`` or ``pip install --no-deps`` of the project): the tasks use
``app.orchestration.ray_jobs`` and ``app.kuberay``, which need only ``ray`` and ``kubernetes``.
"""

from __future__ import annotations

import json
import os
import shlex
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    BaseOperator,
    CronTriggerTimetable,
    Param,
    TriggerRule,
    dag,
    task,
)

DAG_ID = "greenhouse_pipeline"
DRIFT_ASSET = Asset(name="greenhouse_feature_drift", uri="greenhouse://drift/features")
CHAMPION_ASSET = Asset(name="greenhouse_champion_model", uri="greenhouse://models/champion")
JOBS_WITH_MODEL = ("train", "tune", "promote")


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


class RayJobOperator(BaseOperator):
    """Submit ``python -m jobs.<job> <args>`` as a Ray job (Jobs API or KubeRay RayJob) and wait.

    Returns (XCom) ``{"submission_id", "status", "submitted", "summary"}``, where ``summary`` is the
    job's one-line JSON summary. Fails the task when the job does not succeed.
    """

    ui_color = "#cfe8ff"

    def __init__(self, *, job: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job = job
        self._running: tuple[str, str, dict[str, Any]] | None = None

    def _job_args(self, params: dict[str, Any]) -> list[str]:
        args = shlex.split(str(params.get(f"{self.job}_args") or ""))
        if self.job in JOBS_WITH_MODEL and params.get("model_name"):
            args += ["--model-name", str(params["model_name"])]
        return args

    def execute(self, context: Any) -> dict[str, Any]:
        from app.orchestration.ray_jobs import deterministic_id

        params = context["params"]
        if self.job == "sink" and not params.get("run_sink", True):
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException("run_sink is false: the lake is fed elsewhere")
        run_id = str(context["run_id"])
        submission_id = deterministic_id(self.task_id, run_id, self.dag_id)
        args = self._job_args(params)
        env_vars = {str(k): str(v) for k, v in (params.get("job_env") or {}).items()}
        if params.get("mode") == "kuberay":
            return self._run_rayjob(params, submission_id, args, env_vars)
        return self._run_jobs_api(params, submission_id, args, env_vars, run_id)

    def _run_jobs_api(self, params: dict[str, Any], sid: str, args: list[str], env_vars: dict[str, str], run_id: str) -> dict[str, Any]:
        from app.orchestration.ray_jobs import job_runtime_env, ray_auth_headers, submit_and_wait

        address = str(params["ray_address"])
        headers = ray_auth_headers()
        entrypoint = " ".join(["python", "-m", f"jobs.{self.job}", *(shlex.quote(a) for a in args)])
        runtime_env = job_runtime_env(params.get("working_dir") or None, env_vars)
        self._running = ("jobs-api", sid, {"address": address, "headers": headers})
        self.log.info("Ray job %s on %s: %s", sid, address, entrypoint)
        seen: list[str] = []

        def on_status(status: str) -> None:
            if not seen or seen[-1] != status:
                seen.append(status)
                self.log.info("%s: %s", sid, status)

        def on_logs(text: str) -> None:
            for line in text.rstrip("\n").splitlines():
                self.log.info("[%s] %s", self.job, line)

        result = submit_and_wait(
            address, entrypoint, submission_id=sid, runtime_env=runtime_env, headers=headers,
            timeout_s=float(params["timeout_s"]), poll_s=2.0, on_status=on_status, on_logs=on_logs,
            rerun_failed=True, metadata={"airflow_dag_id": self.dag_id, "airflow_run_id": run_id[:200], "airflow_task_id": self.task_id},
        )
        self._running = None
        self.log.info("%s %s (%s)", result.submission_id, result.status, "submitted" if result.submitted else "already existed")
        if not result.ok:
            raise RuntimeError(f"Ray job {result.submission_id} {result.status}; last lines:\n" + "\n".join(result.logs.splitlines()[-30:]))
        return {"submission_id": result.submission_id, "status": result.status, "submitted": result.submitted, "summary": result.summary}

    def _run_rayjob(self, params: dict[str, Any], sid: str, args: list[str], env_vars: dict[str, str]) -> dict[str, Any]:
        from pathlib import Path

        from app.kuberay.client import KubeRayClient, KubeTarget
        from app.kuberay.manifests import load_documents, rayjob_run, rayjob_template

        manifests = str(params.get("kuberay_manifests") or "")
        if not manifests:
            raise ValueError("mode=kuberay needs kuberay_manifests: a file with `kubectl kustomize kuberay/overlays/<env>` output")
        namespace = str(params["kuberay_namespace"])
        template = rayjob_template(load_documents(Path(manifests).read_text()), self.job)
        run = rayjob_run(template, sid, extra_args=args, env_vars=env_vars, namespace=namespace)
        client = KubeRayClient.connect(KubeTarget(namespace=namespace))
        self._running = ("kuberay", sid, {"namespace": namespace})
        created = client.create(run)
        self.log.info("RayJob %s/%s %s: %s", namespace, sid, "created" if created.created else "already existed", run["spec"]["entrypoint"])
        status = client.wait_rayjob(sid, timeout_s=float(params["timeout_s"]), on_status=lambda s: self.log.info("%s: %s", sid, s.describe()))
        self._running = None
        logs = self._rayjob_logs(status)
        from app.orchestration.ray_jobs import last_json_line

        if not status.succeeded:
            raise RuntimeError(f"RayJob {sid} ended {status.describe()}\n" + "\n".join(logs.splitlines()[-30:]))
        return {"submission_id": sid, "status": status.job_status, "submitted": created.created, "summary": last_json_line(logs)}

    def _rayjob_logs(self, status: Any) -> str:
        """The job's log from its cluster's dashboard, when this worker can reach it (best effort:
        the cluster may already be gone; `kubectl logs job/<name>` has the submitter's copy)."""
        if not (status.dashboard_url and status.job_id):
            return ""
        try:
            from ray.job_submission import JobSubmissionClient

            from app.orchestration.ray_jobs import ray_auth_headers

            url = status.dashboard_url if "://" in status.dashboard_url else f"http://{status.dashboard_url}"
            logs = JobSubmissionClient(url, headers=ray_auth_headers()).get_job_logs(status.job_id)
        except Exception as exc:  # noqa: BLE001 - logs are a convenience, the status is what counts
            self.log.info("job logs not available from %s (%s)", status.dashboard_url, exc)
            return ""
        for line in logs.splitlines():
            self.log.info("[%s] %s", self.job, line)
        return logs

    def on_kill(self) -> None:
        """Stop the Ray job (Jobs API) or delete the RayJob (KubeRay) this task is waiting for."""
        if self._running is None:
            return
        mode, sid, where = self._running
        try:
            if mode == "jobs-api":
                from app.orchestration.ray_jobs import stop_job

                stop_job(where["address"], sid, headers=where["headers"])
            else:
                from app.kuberay.client import KubeRayClient, KubeTarget

                KubeRayClient.connect(KubeTarget(namespace=where["namespace"])).delete("RayJob", sid)
            self.log.info("stopped %s (%s)", sid, mode)
        except Exception as exc:  # noqa: BLE001 - on_kill must not raise
            self.log.warning("could not stop %s: %s", sid, exc)


@dag(
    dag_id=DAG_ID,
    description="Greenhouse learning pipeline: every step a Ray job (Jobs API or KubeRay RayJob).",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 3 * * *", timezone="UTC"), assets=DRIFT_ASSET),
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["greenhouse", "ray"],
    default_args={"retries": int(_env("GH_DAG_RETRIES", "2")), "retry_delay": timedelta(minutes=1)},
    params={
        "mode": Param(_env("GH_DAG_MODE", "jobs-api"), enum=["jobs-api", "kuberay"], description="submit through the Ray Jobs API or as KubeRay RayJobs"),
        "ray_address": Param(_env("GH_RAY_ADDRESS", _env("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:8265")), type="string", description="Ray Jobs API (mode jobs-api)"),
        "working_dir": Param(os.environ.get("GH_DAG_WORKING_DIR"), type=["null", "string"], description="ship this directory with each job (null: the cluster image has the code)"),
        "job_env": Param(json.loads(_env("GH_DAG_JOB_ENV", "{}")), type="object", description="extra environment of every job (GH_* settings)"),
        "trainer": Param(_env("GH_DAG_TRAINER", "train"), enum=["train", "tune"], description="fixed-parameter training, or a hyperparameter search first"),
        "run_sink": Param(True, type="boolean", description="drain the sensor topic into the lake first"),
        "sink_args": Param("--idle-polls 3", type="string"),
        "preprocess_args": Param("--horizons 5,15,30,60", type="string"),
        "train_args": Param("", type="string"),
        "tune_args": Param("--num-samples 8", type="string"),
        "promote_args": Param("", type="string"),
        "model_name": Param("greenhouse-forecaster", type="string"),
        "gate_metric": Param("skill_air_temp_c_15min", type="string", description="metric of the train/tune summary that gates promotion"),
        "min_skill": Param(0.0, type="number", description="promote only when gate_metric exceeds this (0: beats persistence)"),
        "timeout_s": Param(int(_env("GH_DAG_TIMEOUT_S", "3600")), type="integer", minimum=30, description="per job; the job is stopped after it"),
        "kuberay_namespace": Param(_env("GH_DAG_KUBERAY_NAMESPACE", "greenhouse"), type="string"),
        "kuberay_manifests": Param(_env("GH_DAG_KUBERAY_MANIFESTS", ""), type="string", description="rendered overlay with the RayJob templates (mode kuberay)"),
    },
    doc_md=__doc__,
)
def greenhouse_pipeline() -> None:
    sink = RayJobOperator(task_id="sink", job="sink")
    preprocess = RayJobOperator(task_id="preprocess", job="preprocess", trigger_rule=TriggerRule.NONE_FAILED)
    train = RayJobOperator(task_id="train", job="train")
    tune = RayJobOperator(task_id="tune", job="tune")
    promote = RayJobOperator(task_id="promote", job="promote", outlets=[CHAMPION_ASSET])

    @task.branch
    def choose_trainer(params: dict[str, Any] | None = None) -> str:
        """``train`` or ``tune``, as the run's ``trainer`` parameter says."""
        return str((params or {}).get("trainer", "train"))

    @task.short_circuit(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    def evaluate(params: dict[str, Any] | None = None, ti: Any = None) -> bool:
        """Gate: promote only when the new model's reported metric beats ``min_skill``."""
        params = params or {}
        results = [r for r in (ti.xcom_pull(task_ids="train"), ti.xcom_pull(task_ids="tune")) if r]
        if not results:
            raise RuntimeError("neither train nor tune reported a result")
        summary = results[0].get("summary") or {}
        metric = str(params.get("gate_metric", "skill_air_temp_c_15min"))
        value = (summary.get("metrics") or {}).get(metric)
        threshold = float(params.get("min_skill", 0.0))
        print(f"model version {summary.get('model_version')}: {metric} = {value} (gate > {threshold})")
        return value is not None and float(value) > threshold

    branch = choose_trainer()
    sink >> preprocess >> branch >> [train, tune]
    [train, tune] >> evaluate() >> promote


pipeline_dag = greenhouse_pipeline()
