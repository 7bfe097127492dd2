"""Fixtures shared by the orchestration tests: the k8s-tools binary, the KubeRay CRDs the manifests
target, and Airflow (its own venv, one migrated database per session, ``dag.test()`` of a DAG in
the DAG file)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from app.kuberay import manifests
from tests.helpers.engines import missing

REPO = Path(__file__).resolve().parents[2]
DAG_FILE = REPO / "jobs" / "dags" / "greenhouse_pipeline.py"
DAG_RUNNER = Path(__file__).with_name("airflow_dag_runner.py")
RunDag = Callable[..., dict]


@pytest.fixture(scope="module")
def k8s_tools() -> Path:
    """The k8s-tools binary, built by the project's script when missing (quick when built)."""
    try:
        done = subprocess.run([str(REPO / "stack" / "k8s-tools" / "build")], capture_output=True, text=True, timeout=900)
    except FileNotFoundError as exc:
        missing(f"stack/k8s-tools/build could not run: {exc}")
    if done.returncode != 0:
        missing(f"stack/k8s-tools/build failed (Go >= 1.24 and the Go module proxy are needed): {done.stderr[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def kuberay_crds() -> Path:
    """The CRDs of the KubeRay version the manifests target (``manifests.KUBERAY_VERSION``):
    ``$GH_KUBERAY_CRDS_DIR``, else the ones stack/kube/build caches, else those of the operator's Go
    module, downloaded from the module proxy (seconds: the same files stack/kube/build copies)."""
    crds = manifests.default_crds_dir()
    if (crds / "ray.io_rayjobs.yaml").is_file():
        return crds
    if os.environ.get(manifests.CRDS_DIR_ENV):
        missing(manifests.missing_crds_message(crds))
    return _module_crds() or crds


def _module_crds() -> Path | None:
    """``config/crd/bases`` of the operator's module (``go mod download``), or a skip saying what to run."""
    go = shutil.which("go") or "/usr/local/go/bin/go"
    module = f"{manifests.KUBERAY_MODULE}@{manifests.KUBERAY_VERSION}"
    with tempfile.TemporaryDirectory() as outside_any_module:
        try:
            done = subprocess.run([go, "mod", "download", "-json", module], capture_output=True, text=True, timeout=300, cwd=outside_any_module)
        except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
            missing(f"{manifests.missing_crds_message(manifests.default_crds_dir())} ({exc})")
            return None
    bases = Path(json.loads(done.stdout or "{}").get("Dir") or "/nonexistent") / "config" / "crd" / "bases"
    if done.returncode != 0 or not (bases / "ray.io_rayjobs.yaml").is_file():
        missing(f"{manifests.missing_crds_message(manifests.default_crds_dir())} (go mod download: {done.stderr[-1000:]})")
    return bases


@pytest.fixture(scope="session")
def airflow_python() -> Path:
    """The Airflow venv's python, created by the project's own script when missing."""
    done = subprocess.run([str(REPO / "stack" / "airflow-env")], capture_output=True, text=True, timeout=1500)
    if done.returncode != 0:
        missing(f"stack/airflow-env failed ({done.returncode}): {done.stderr[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1]) / "bin" / "python"


@pytest.fixture(scope="session")
def airflow_home(airflow_python: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A fresh AIRFLOW_HOME with a migrated sqlite database (one per session: both DAG tests use
    it); the environment to run Airflow in. DAGs are unpaused when first parsed, so an asset event
    queues a run of the DAGs scheduled on it (Airflow skips paused consumers)."""
    from tests.helpers.stack import RAY_CLIENT_ENV

    home = tmp_path_factory.mktemp("airflow-home")
    # The worker names the head's token the product's way (the DAG reads GH_RAY__AUTH_TOKEN_FILE);
    # Ray's own RAY_AUTH_TOKEN_PATH is left out, so a DAG that ignored the setting would get 401s.
    ray_env = {k: v for k, v in RAY_CLIENT_ENV.items() if k != "RAY_AUTH_TOKEN_PATH"}
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")},
        **ray_env,
        "GH_RAY__AUTH_TOKEN_FILE": RAY_CLIENT_ENV["RAY_AUTH_TOKEN_PATH"],
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAG_FILE.parent),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "PYTHONPATH": str(REPO),
        "GH_DAG_RETRIES": "0",
    }
    env.pop("VIRTUAL_ENV", None)
    migrated = subprocess.run([str(airflow_python.with_name("airflow")), "db", "migrate"], capture_output=True, text=True, env=env, timeout=300)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    return env


@pytest.fixture(scope="session")
def run_dag(airflow_python: Path, airflow_home: dict[str, str]) -> RunDag:
    """``run_dag(logical_date, conf, dag_attr="pipeline_dag")``: one ``dag.test()`` run of the DAG
    object ``dag_attr`` of the DAG file, in the Airflow venv (tests/orchestration/airflow_dag_runner.py);
    its JSON report (run id, state, task states, XComs, asset events, queued asset-triggered runs)."""

    def run(logical_date: datetime, conf: dict, dag_attr: str = "pipeline_dag") -> dict:
        command = [str(airflow_python), str(DAG_RUNNER), "--dag-file", str(DAG_FILE), "--dag-attr", dag_attr, "--logical-date", logical_date.isoformat(), "--conf", json.dumps(conf)]
        done = subprocess.run(command, capture_output=True, text=True, env=airflow_home, timeout=780, cwd=REPO)
        lines = [line for line in done.stdout.splitlines() if line.startswith('{"run_id"')]
        assert done.returncode == 0 and lines, f"dag.test failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-6000:]}"
        return json.loads(lines[-1])

    return run
