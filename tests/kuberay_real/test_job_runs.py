"""Job runs as RayJobs on the stack's real kube-apiserver and KubeRay operator: made by
``greenhouse kuberay submit`` and by the Airflow DAG's Kubernetes mode (``mode=kuberay``), accepted
by the operator and driven to ``Running`` (kwok reports the pods Running; no Ray runs, so the jobs
never end), then deleted.

The dev overlay's objects carry its namespace (``greenhouse-dev``); runs do not: both the CLI's
``--namespace`` and the DAG's ``kuberay_namespace`` put a run in the namespace they name (here the
test's own), and the only other objects a run needs there are the overlay's ServiceAccounts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from app.cli.main import app
from app.kuberay.client import KubeRayClient, KubeTarget
from app.kuberay.manifests import load_documents, rayjob_template
from app.kuberay.runner import KubeRayRunner
from app.orchestration.ray_jobs import deterministic_id
from app.orchestration.run_ids import lineage_env
from app.orchestration.runner import JobRequest
from tests.kuberay_real.conftest import Kube, in_namespace, wait_until

pytestmark = [pytest.mark.stack, pytest.mark.k8s, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
DAG_FILE = REPO / "jobs" / "dags" / "greenhouse_pipeline.py"
DAG_ID = "greenhouse_pipeline"  # jobs/dags/greenhouse_pipeline.py's (the test process has no Airflow)
RUN_ID = "manual__2026-06-01T00:00:00+00:00"
# What the `greenhouse` console script runs (pyproject.toml [project.scripts]).
GREENHOUSE = "import sys; from app.cli import main; sys.argv[0] = 'greenhouse'; sys.exit(main())"


class Interrupted(BaseException):  # noqa: N818 - like Airflow's task timeout: not an Exception
    """What an Airflow worker raises into a task it kills or times out."""


def with_service_accounts(client: KubeRayClient, manifests: Path) -> None:
    """The overlay's ServiceAccounts in the client's namespace: a run's pods name them."""
    accounts = [in_namespace(o, client.namespace) for o in load_documents(manifests.read_text()) if o["kind"] == "ServiceAccount"]
    assert accounts and {client.apply(sa) for sa in accounts} == {"created"}


def running(client: KubeRayClient, name: str) -> Any:
    status = client.rayjob_status(name)
    return status if status.deployment_status == "Running" else None


def greenhouse(*args: str, kube: Kube, k8s_tools: Path) -> subprocess.CompletedProcess[str]:
    """``greenhouse kuberay ...`` as a process of its own, on the stack's cluster."""
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    env.update(GH_K8S_TOOLS=str(k8s_tools), COLUMNS="500")  # rich wraps its lines at 80 columns otherwise
    command = [sys.executable, "-c", GREENHOUSE, "kuberay", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_greenhouse_kuberay_submit_makes_a_run_the_operator_drives_to_running(
    kube: Kube, namespace: str, kuberay_client: KubeRayClient, dev_manifests: Path, k8s_tools: Path, monkeypatch: pytest.MonkeyPatch
):
    client = kuberay_client
    with_service_accounts(client, dev_manifests)
    name = "greenhouse-promote-cli-1"
    common = ["--namespace", namespace, "--kubeconfig", kube.kubeconfig]
    submitted = greenhouse("submit", "promote", "--overlay", "dev", "--name", name, "--no-wait", *common, "--", "--min-improvement", "0.1", kube=kube, k8s_tools=k8s_tools)
    assert submitted.returncode == 0, submitted.stderr
    assert f"rayjob/{name} created: python -m jobs.promote --min-improvement 0.1" in submitted.stderr

    stored = client.get("RayJob", name)
    assert stored is not None and stored["metadata"]["namespace"] == namespace
    assert not stored["spec"].get("suspend") and stored["metadata"]["labels"]["greenhouse.io/run-of"] == "greenhouse-promote"
    template = rayjob_template(load_documents(dev_manifests.read_text()), "promote")
    head = stored["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] == template["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    assert head["image"].startswith("localhost:5001/greenhouse-mlops:")  # the dev overlay's image

    status = wait_until(f"RayJob {name} Running", lambda: running(client, name))
    assert client.get("RayCluster", status.ray_cluster_name) is not None, f"rayClusterName {status.ray_cluster_name} names no RayCluster"

    # the other commands in this process (each process of its own costs about two seconds)
    monkeypatch.setenv("GH_K8S_TOOLS", str(k8s_tools))
    cli = CliRunner()
    again = cli.invoke(app, ["kuberay", "submit", "promote", "--overlay", "dev", "--name", name, "--no-wait", *common])
    assert again.exit_code == 0 and f"rayjob/{name} already exists" in again.output, again.output
    shown = cli.invoke(app, ["kuberay", "status", "rayjob", name, *common])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["jobDeploymentStatus"] == "Running" and json.loads(shown.stdout)["rayClusterName"] == status.ray_cluster_name
    deleted = cli.invoke(app, ["kuberay", "delete", "rayjob", name, *common])
    assert deleted.exit_code == 0 and f"rayjob/{name} deleted" in deleted.stdout, deleted.output
    wait_until(f"RayJob {name} gone", lambda: client.get("RayJob", name) is None)


def test_greenhouse_kuberay_submit_reports_the_operators_refusal(kube: Kube, namespace: str, kuberay_client: KubeRayClient, dev_manifests: Path, k8s_tools: Path, tmp_path: Path):
    # A template the CRD schema accepts and the operator refuses: a TTL without shutdown.
    template = rayjob_template(load_documents(dev_manifests.read_text()), "sink")
    template["spec"]["shutdownAfterJobFinishes"] = False
    rendered = tmp_path / "bad-sink.yaml"
    rendered.write_text(yaml.safe_dump(template))
    common = ["--namespace", namespace, "--kubeconfig", kube.kubeconfig]
    done = greenhouse("submit", "sink", "--overlay", str(rendered), "--name", "greenhouse-sink-bad", "--timeout-s", "30", *common, kube=kube, k8s_tools=k8s_tools)
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"rayjob": "greenhouse-sink-bad", "deployment_status": "ValidationFailed", "job_status": "", "job_id": ""}
    assert "shutdownAfterJobFinishes set to false cannot have TTLSecondsAfterFinished" in done.stderr  # the status line it showed
    assert kuberay_client.rayjob_status("greenhouse-sink-bad").reason == "ValidationFailed"


def test_the_dags_kuberay_runner_submits_once_and_deletes_when_interrupted(kube: Kube, namespace: str, kuberay_client: KubeRayClient, dev_manifests: Path, monkeypatch: pytest.MonkeyPatch):
    # The DAG's own factory (jobs/dags/greenhouse_pipeline.py pick_runner, mode kuberay): the
    # cluster comes from $KUBECONFIG, the namespace from kuberay_namespace.
    monkeypatch.setenv("KUBECONFIG", kube.kubeconfig)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with_service_accounts(kuberay_client, dev_manifests)
    runner = KubeRayRunner.from_manifests(str(dev_manifests), KubeTarget(namespace=namespace), stop_on_interrupt=True)
    client = runner.client
    try:
        lineage = lineage_env(dag_id=DAG_ID, dag_run_id=RUN_ID, task_id="promote")
        request = JobRequest("promote", deterministic_id("promote", RUN_ID, DAG_ID), ("--min-improvement", "0.1"), env_vars=lineage)
        first = runner.submit(request)
        assert first.submitted and first.entrypoint == "python -m jobs.promote --min-improvement 0.1"
        assert not runner.submit(request).submitted  # a retried task attaches to its RayJob
        stored = client.get("RayJob", request.submission_id)
        assert stored is not None and stored["metadata"]["namespace"] == namespace
        assert yaml.safe_load(stored["spec"]["runtimeEnvYAML"])["env_vars"] == lineage

        # the worker kills the task once it runs: the RayJob goes with it
        seen: list[str] = []

        def on_status(description: str) -> None:
            seen.append(description)
            if description.startswith("Running"):
                assert runner.status(request.submission_id) == "PENDING"  # no job status without Ray
                raise Interrupted

        with pytest.raises(Interrupted):
            runner.wait(first, timeout_s=60, on_status=on_status)
        assert seen[-1] == "Running -" and any(s.startswith("Initializing") for s in seen), seen
        wait_until("the interrupted run's RayJob deleted", lambda: client.get("RayJob", request.submission_id) is None)
        assert runner.stop(request.submission_id) is False

        # a run that outlives timeout_s is deleted too; one stopped by on_kill likewise
        late = runner.submit(JobRequest("preprocess", deterministic_id("preprocess", RUN_ID, DAG_ID)))
        with pytest.raises(TimeoutError, match="still"):
            runner.wait(late, timeout_s=1.5)
        wait_until("the timed-out run's RayJob deleted", lambda: client.get("RayJob", late.submission_id) is None)
        killed = runner.submit(JobRequest("train", deterministic_id("train", RUN_ID, DAG_ID)))
        wait_until("the train run Running", lambda: running(client, killed.submission_id))
        assert runner.stop(killed.submission_id) is True
        wait_until("the stopped run's RayJob deleted", lambda: client.get("RayJob", killed.submission_id) is None)
    finally:
        client.close()


DAG_TASK = """
import importlib.util, json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
dag_file, params = sys.argv[1], json.loads(sys.argv[2])
spec = importlib.util.spec_from_file_location("dag_under_test", dag_file)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
task = module.pipeline_dag.get_task("promote")
try:
    task.execute({"params": params, "run_id": sys.argv[3]})
    print(json.dumps({"raised": None}))
except Exception as exc:
    print(json.dumps({"raised": type(exc).__name__, "message": str(exc)}))
"""


def test_the_dags_promote_task_in_airflow_runs_its_rayjob_until_timeout(kube: Kube, namespace: str, kuberay_client: KubeRayClient, dev_manifests: Path, airflow_python: Path, tmp_path: Path):
    # The DAG file's RayJobOperator.execute itself, in the Airflow venv (stack/airflow-env): its
    # pick_runner, JobRequest and wait; timeout_s (a Param of at least 30 in a real run) is short
    # here, so the task ends in TimeoutError and deletes its RayJob (stop_on_interrupt).
    with_service_accounts(kuberay_client, dev_manifests)
    params = {"mode": "kuberay", "kuberay_namespace": namespace, "kuberay_manifests": str(dev_manifests), "timeout_s": 3, "promote_via": "direct", "promote_args": "", "model_name": "", "job_env": {}}
    env = {k: v for k, v in os.environ.items() if k not in ("KUBERNETES_SERVICE_HOST", "VIRTUAL_ENV")}
    env.update(KUBECONFIG=kube.kubeconfig, AIRFLOW_HOME=str(tmp_path / "airflow"), PYTHONPATH=str(REPO))
    done = subprocess.run([str(airflow_python), "-c", DAG_TASK, str(DAG_FILE), json.dumps(params), RUN_ID], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    name = deterministic_id("promote", RUN_ID, DAG_ID)  # the task's submission id
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome == {"raised": "TimeoutError", "message": f"RayJob {name} still Running - after 3 s"}, done.stderr[-3000:]
    logged = done.stdout + done.stderr  # the task's log (Airflow's structlog writes to stdout)
    assert f"{name} submitted: python -m jobs.promote" in logged and f"{name}: Running -" in logged
    wait_until("the timed-out task's RayJob deleted", lambda: kuberay_client.get("RayJob", name) is None)
    events = kube.json("get", "-n", namespace, "events", "--field-selector", f"involvedObject.kind=RayJob,involvedObject.name={name}")["items"]
    assert {"CreatedRayCluster", "CreatedRayJobSubmitter"} <= {e["reason"] for e in events}
