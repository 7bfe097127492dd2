"""The Kubernetes control plane of ``stack/stack up k8s``: etcd, kube-apiserver v1.37.2,
kube-controller-manager and the KubeRay operator v1.5.0 with its CRDs, on 127.0.0.1, no kubelet.

Where it is: ``GH_TEST_KUBECONFIG`` (the admin kubeconfig, a client certificate of group
system:masters) and ``GH_TEST_KUBECTL`` (the kubectl built with it), which ``stack/with-stack``
exports, else what ``stack/stack env --tests`` prints. When the apiserver does not answer the tests
skip, and fail under ``CI=true`` (``make test`` starts the control plane with ``STACK_K8S=1``).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.engines import missing, stack_setting

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "stack" / "kube" / "build"
START_HINT = "start it with `stack/stack up k8s` (the first start builds it: about 7 min)"


@dataclass(frozen=True)
class Kube:
    """kubectl against the stack's cluster with its admin kubeconfig."""

    kubectl: str
    kubeconfig: str

    def run(self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([self.kubectl, "--kubeconfig", self.kubeconfig, *args], input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json").stdout)


def build_paths() -> dict[str, str]:
    """``stack/kube/build --print``: where the binaries, CRDs and versions of the build are."""
    done = subprocess.run(["bash", str(BUILD_SCRIPT), "--print"], capture_output=True, text=True, timeout=30, check=True)
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


@pytest.fixture(scope="session")
def kube() -> Kube:
    kubeconfig = stack_setting("GH_TEST_KUBECONFIG")
    kubectl = stack_setting("GH_TEST_KUBECTL")
    if not kubeconfig or not Path(kubeconfig).is_file():
        missing(f"no kubeconfig of the stack's Kubernetes control plane ({kubeconfig or 'GH_TEST_KUBECONFIG unset'}); {START_HINT}")
    if not kubectl or not os.access(kubectl, os.X_OK):
        missing(f"kubectl of the stack's build not found ({kubectl or 'GH_TEST_KUBECTL unset'}); {START_HINT}")
    assert kubeconfig and kubectl
    cluster = Kube(kubectl=kubectl, kubeconfig=kubeconfig)
    try:
        ready = cluster.run("get", "--raw", "/readyz", check=False, timeout=20)
    except subprocess.TimeoutExpired:
        ready = None
    if ready is None or ready.returncode != 0:
        reason = "timed out" if ready is None else ready.stderr.strip()[:300]
        missing(f"the stack's kube-apiserver does not answer ({reason}); {START_HINT}")
    return cluster


@pytest.fixture
def namespace(kube: Kube):
    """A namespace of its own per test, deleted afterwards (the namespace controller empties it)."""
    name = f"gh-smoke-{uuid.uuid4().hex[:8]}"
    kube.run("create", "namespace", name)
    # pods need the namespace's default ServiceAccount, which the controller-manager makes a moment
    # later; the operator would otherwise back off and retry (seconds, growing)
    deadline = time.monotonic() + 30
    while kube.run("get", "-n", name, "serviceaccount", "default", check=False).returncode != 0:
        assert time.monotonic() < deadline, f"no default ServiceAccount in {name} after 30 s (is the controller-manager up?)"
        time.sleep(0.2)
    yield name
    kube.run("delete", "namespace", name, "--wait=false", check=False)


# --- the project's KubeRay client on this cluster (test_client_real.py, test_job_runs.py) ---------


@pytest.fixture(scope="session")
def dev_manifests(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``kubectl kustomize kuberay/overlays/dev`` in a file: what the DAG's ``kuberay_manifests`` names."""
    overlay = Path(__file__).resolve().parents[2] / "kuberay" / "overlays" / "dev"
    path = tmp_path_factory.mktemp("kuberay") / "dev.yaml"
    path.write_text(kube.run("kustomize", str(overlay)).stdout)
    return path


@pytest.fixture
def kuberay_client(kube: Kube, namespace: str):
    """The project's :class:`KubeRayClient` on the test's namespace, with the admin kubeconfig."""
    from app.kuberay.client import KubeRayClient, KubeTarget

    with KubeRayClient.connect(KubeTarget(namespace=namespace, kubeconfig=kube.kubeconfig)) as client:
        yield client


def in_namespace(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    """A copy of an overlay's object moved to ``namespace`` (the overlay names its own)."""
    moved = json.loads(json.dumps(obj))
    moved.setdefault("metadata", {})["namespace"] = namespace
    return moved


def wait_until(what: str, probe: Any, timeout: float = 30.0, interval: float = 0.2) -> Any:
    """``probe()``'s first truthy answer; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not there after {timeout:.0f} s")
        time.sleep(interval)


@pytest.fixture(scope="session")
def k8s_tools() -> Path:
    """The k8s-tools binary (``greenhouse kuberay ... --overlay dev`` renders with it), built by the
    project's script when missing (quick when built)."""
    build = Path(__file__).resolve().parents[2] / "stack" / "k8s-tools" / "build"
    done = subprocess.run([str(build)], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        missing(f"stack/k8s-tools/build failed (Go >= 1.24 and the Go module proxy are needed): {done.stderr[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def airflow_python() -> Path:
    """The python of the Airflow venv that runs jobs/dags/ (stack/airflow-env: a no-op when made)."""
    done = subprocess.run([str(Path(__file__).resolve().parents[2] / "stack" / "airflow-env")], capture_output=True, text=True, timeout=1500)
    if done.returncode != 0:
        missing(f"stack/airflow-env failed ({done.returncode}): {done.stderr[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1]) / "bin" / "python"
