"""Airflow 3 DAGs: ``greenhouse_pipeline`` (sink -> preprocess -> train or tune -> evaluate ->
promote) and ``greenhouse_drift_check`` (hourly: the drift job; on drift, the asset that schedules
the pipeline).

Airflow only orchestrates: every job step submits one Ray job and waits for it, either

- ``mode=jobs-api`` (default): through the Ray Jobs API of a running cluster (``ray_address``, e.g.
  the shared KubeRay RayCluster's ``http://greenhouse-head-svc.greenhouse:8265``, or a local
  ``ray start --head``) with ``JobSubmissionClient``. For a cluster with token auth
  (``RAY_AUTH_MODE=token``) the worker names the token: ``GH_RAY__AUTH_TOKEN_FILE`` (the product's
  setting), or Ray's own ``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH``; it is sent as
  ``Authorization: Bearer ...`` (a secret of the Airflow deployment, never a DAG parameter); or
- ``mode=kuberay``: by creating a RayJob from the job's template in the rendered ``kuberay/``
  overlay (``kuberay_manifests``: the output of ``kubectl kustomize kuberay/overlays/prod``), which
  brings up its own Ray cluster and deletes it afterwards.

Each job's id is deterministic: ``<task>-<run id>-<hash of task, run id, DAG id>``. A retried or
re-run task therefore re-attaches to the job it already started (or returns the result of the one
that finished) instead of running it twice; a retry after a FAILED job submits ``<id>-r1``. Job
logs stream into the task log; killing the task (or its timeout) stops the Ray job / deletes the
RayJob.

Runs: daily at 03:00 UTC, and whenever asset ``greenhouse_feature_drift`` gets an event: the
``greenhouse_drift_check`` DAG's task emits one when the drift job reports drift (the task declares
the asset as its outlet and is *skipped* otherwise: a skipped task emits no asset event), and a
drift check run outside Airflow posts one through the REST API (``POST /api/v2/assets/events``,
settings ``drift.airflow_url``). A promotion emits an event on ``greenhouse_champion_model``; with
``promote_via=rollout`` (the default) a challenger that passes the offline gate starts a canary
rollout instead of becoming champion at once (the first model, without a champion, is promoted
directly). Parameters (below) can be overridden per run (``conf``); their defaults come from
``GH_DAG_*`` variables of the Airflow environment.

Lineage: every Ray job gets the DAG id, run id and task id as ``GH_LINEAGE_AIRFLOW_*`` environment
variables (``app.orchestration.run_ids``); the jobs record them with what they write.

The step ``evaluate`` runs no Ray job: evaluation happens inside the train/tune job (validation
metrics against persistence) and the promote job (challenger against champion on one window);
``evaluate`` only gates promotion on the metric the train/tune job reported.

The jobs are the registry's (``app.orchestration.registry``); each task picks the run's job runner
(``app.orchestration.ray_jobs.RayJobsRunner`` or ``app.kuberay.runner.KubeRayRunner``) and calls it:
no submission logic lives here.

Environment: Airflow runs in its own venv (``stack/airflow-env``); the project must be importable
there (``PYTHONPATH=<checkout>`` or ``pip install --no-deps`` of the project): the tasks use
``app.orchestration`` and ``app.kuberay``, which need only ``ray``, ``kubernetes`` and ``pyyaml``.
"""

from __future__ import annotations

import json
import os
import shlex
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import Asset, AssetOrTimeSchedule, BaseOperator, CronTriggerTimetable, Param, TriggerRule, dag, task

from app.orchestration.asset_events import CHAMPION_ASSET_NAME, CHAMPION_ASSET_URI, DRIFT_ASSET_NAME, DRIFT_ASSET_URI

DAG_ID = "greenhouse_pipeline"
DRIFT_DAG_ID = "greenhouse_drift_check"
DRIFT_ASSET = Asset(name=DRIFT_ASSET_NAME, uri=DRIFT_ASSET_URI)
CHAMPION_ASSET = Asset(name=CHAMPION_ASSET_NAME, uri=CHAMPION_ASSET_URI)


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def pick_runner(params: dict[str, Any]) -> Any:
    """The job runner of the run's ``mode``: the Ray Jobs API (a retry re-runs a failed job once)
    or KubeRay RayJobs from the rendered overlay ``kuberay_manifests``."""
    if params.get("mode") == "kuberay":
        from app.kuberay.client import KubeTarget
        from app.kuberay.runner import KubeRayRunner

        if not params.get("kuberay_manifests"):
            raise ValueError("mode=kuberay needs kuberay_manifests: a file with `kubectl kustomize kuberay/overlays/<env>` output")
        target = KubeTarget(namespace=str(params["kuberay_namespace"]))
        return KubeRayRunner.from_manifests(str(params["kuberay_manifests"]), target, stop_on_interrupt=True)
    from app.orchestration.ray_jobs import RayJobsRunner, ray_auth_headers

    headers = ray_auth_headers(token_file=os.environ.get("GH_RAY__AUTH_TOKEN_FILE") or None)
    return RayJobsRunner(str(params["ray_address"]), working_dir=params.get("working_dir") or None, headers=headers, rerun_failed=True, poll_s=2.0)


def runner_params() -> dict[str, Param]:
    """The parameters both DAGs share: where and how their Ray jobs run."""
    return {
        "mode": Param(_env("GH_DAG_MODE", "jobs-api"), enum=["jobs-api", "kuberay"], description="submit through the Ray Jobs API or as KubeRay RayJobs"),
        "ray_address": Param(_env("GH_RAY_ADDRESS", _env("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:8265")), type="string", description="Ray Jobs API (mode jobs-api)"),
        "working_dir": Param(os.environ.get("GH_DAG_WORKING_DIR"), type=["null", "string"], description="ship this directory with each job (null: the cluster image has the code)"),
        "job_env": Param(json.loads(_env("GH_DAG_JOB_ENV", "{}")), type="object", description="extra environment of every job (GH_* settings)"),
        "kuberay_namespace": Param(_env("GH_DAG_KUBERAY_NAMESPACE", "greenhouse"), type="string"),
        "kuberay_manifests": Param(_env("GH_DAG_KUBERAY_MANIFESTS", ""), type="string", description="rendered overlay with the RayJob templates (mode kuberay)"),
    }


class RayJobOperator(BaseOperator):
    """Run the registered job ``job`` through the run's job runner and wait for it.

    Returns (XCom) ``{"submission_id", "status", "submitted", "summary"}``, where ``summary`` is the
    job's one-line JSON summary. Fails the task when the job does not succeed.
    """

    ui_color = "#cfe8ff"

    def __init__(self, *, job: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job = job
        self._running: tuple[Any, str] | None = None

    def job_args(self, params: dict[str, Any]) -> list[str]:
        """The job's arguments: the run's ``<job>_args``, ``--model-name``, and ``--rollout`` for
        promote unless ``promote_via`` is ``direct``."""
        from app.orchestration.registry import job_spec

        args = shlex.split(str(params.get(f"{self.job}_args") or ""))
        if job_spec(self.job).takes_model_name and params.get("model_name"):
            args += ["--model-name", str(params["model_name"])]
        if self.job == "promote" and params.get("promote_via", "rollout") == "rollout" and "--rollout" not in args:
            args.append("--rollout")
        return args

    def execute(self, context: Any) -> dict[str, Any]:
        from app.orchestration.ray_jobs import deterministic_id
        from app.orchestration.run_ids import lineage_env
        from app.orchestration.runner import JobRequest

        params = context["params"]
        if self.job == "sink" and not params.get("run_sink", True):
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException("run_sink is false: the lake is fed elsewhere")
        run_id = str(context["run_id"])
        env_vars = {str(k): str(v) for k, v in (params.get("job_env") or {}).items()}
        request = JobRequest(
            self.job,
            deterministic_id(self.task_id, run_id, self.dag_id),
            tuple(self.job_args(params)),
            env_vars={**env_vars, **lineage_env(dag_id=self.dag_id, dag_run_id=run_id, task_id=self.task_id)},
            metadata={"airflow_dag_id": self.dag_id, "airflow_run_id": run_id[:200], "airflow_task_id": self.task_id},
        )
        runner = pick_runner(params)
        submission = runner.submit(request)
        self._running = (runner, submission.submission_id)
        self.log.info("%s %s: %s", submission.submission_id, "submitted" if submission.submitted else "already existed", submission.entrypoint)
        result = runner.wait(submission, timeout_s=float(params["timeout_s"]), on_status=lambda s: self.log.info("%s: %s", submission.submission_id, s), on_logs=self._log_lines)
        self._running = None
        if not result.ok:
            why = result.detail.get("description") or result.status
            raise RuntimeError(f"job {result.submission_id} ended {why}; last lines:\n{result.tail(30)}")
        return result.as_dict()

    def _log_lines(self, text: str) -> None:
        for line in text.rstrip("\n").splitlines():
            self.log.info("[%s] %s", self.job, line)

    def on_kill(self) -> None:
        """Stop the Ray job (Jobs API) or delete the RayJob (KubeRay) this task is waiting for."""
        if self._running is not None:
            runner, sid = self._running
            self.log.info("stopping %s: %s", sid, runner.stop(sid))


@dag(
    dag_id=DAG_ID,
    description="Greenhouse learning pipeline: every step a Ray job (Jobs API or KubeRay RayJob).",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 3 * * *", timezone="UTC"), assets=DRIFT_ASSET),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["greenhouse", "ray"],
    default_args={"retries": int(_env("GH_DAG_RETRIES", "2")), "retry_delay": timedelta(minutes=1)},
    params={
        **runner_params(),
        "trainer": Param(_env("GH_DAG_TRAINER", "train"), enum=["train", "tune"], description="fixed-parameter training, or a hyperparameter search first"),
        "run_sink": Param(True, type="boolean", description="drain the sensor topic into the lake first"),
        "sink_args": Param("--idle-polls 3", type="string"),
        "preprocess_args": Param("--horizons 5,15,30,60", type="string"),
        "train_args": Param("", type="string"),
        "tune_args": Param("--num-samples 8", type="string"),
        "promote_args": Param("", type="string"),
        "promote_via": Param(_env("GH_DAG_PROMOTE_VIA", "rollout"), enum=["rollout", "direct"], description="a passing challenger starts a canary rollout, or becomes champion at once"),
        "model_name": Param("", type="string", description="registered model (empty: the jobs' settings, control.model_name)"),
        "gate_metric": Param("skill_air_temp_c_15min", type="string", description="metric of the train/tune summary that gates promotion"),
        "min_skill": Param(0.0, type="number", description="promote only when gate_metric exceeds this (0: beats persistence)"),
        "timeout_s": Param(int(_env("GH_DAG_TIMEOUT_S", "3600")), type="integer", minimum=30, description="per job; the job is stopped after it"),
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


class DriftCheckOperator(RayJobOperator):
    """The drift job (:class:`RayJobOperator`), then the verdict: a drifted report lets the task
    succeed, which emits its outlet (the drift asset, with the report's id in the event's extra);
    otherwise the task is skipped, and a skipped task emits no asset event."""

    def execute(self, context: Any) -> dict[str, Any]:
        result = super().execute(context)
        summary = result.get("summary") or {}
        if not summary.get("drifted"):
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException(f"no drift: {summary.get('reason', 'the drift job reported none')}")
        for asset in self.outlets:
            context["outlet_events"][asset].extra = {k: summary.get(k) for k in ("report_id", "feature_set_id", "reason", "drifted_features")}
        self.log.info("drift: %s", summary.get("reason"))
        return result


@dag(
    dag_id=DRIFT_DAG_ID,
    description="Hourly drift check (a Ray job); on drift, the asset event that schedules greenhouse_pipeline.",
    schedule=CronTriggerTimetable("17 * * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["greenhouse", "ray", "drift"],
    default_args={"retries": int(_env("GH_DAG_RETRIES", "2")), "retry_delay": timedelta(minutes=1)},
    params={
        **runner_params(),
        "drift_args": Param("", type="string", description="arguments of the drift job (e.g. --feature-set-id ID)"),
        "timeout_s": Param(int(_env("GH_DAG_DRIFT_TIMEOUT_S", "1200")), type="integer", minimum=30, description="the job is stopped after it"),
    },
    doc_md=__doc__,
)
def greenhouse_drift_check() -> None:
    DriftCheckOperator(task_id="drift", job="drift", outlets=[DRIFT_ASSET])


drift_dag = greenhouse_drift_check()
