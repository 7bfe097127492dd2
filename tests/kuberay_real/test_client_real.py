"""The project's KubeRay client (app/kuberay/client.py) against the stack's real kube-apiserver and
KubeRay operator: what tests/orchestration/test_kuberay_client.py checks on the fake API (create
with 409 idempotency, watch, delete, apply), here in a namespace of each test's own.

Runs are made from the dev overlay's RayJob templates (``kubectl kustomize kuberay/overlays/dev``)
and moved to the test's namespace, with the overlay's ServiceAccounts, which their pods need. No
kubelet runs: kwok reports the pods Running, so the operator takes a RayJob to ``Running`` and no
further (no Ray answers on the head's dashboard, so the job never reports an end).
"""

from __future__ import annotations

import copy
import functools
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.kuberay.client import KubeRayClient, KubeRayError, RayJobStatus
from app.kuberay.manifests import load_documents, rayjob_run, rayjob_template
from app.kuberay.runner import job_state
from tests.kuberay_real.conftest import Kube, in_namespace, wait_until

pytestmark = [pytest.mark.stack, pytest.mark.k8s, pytest.mark.timeout(180)]

RUN_OF = "greenhouse.io/run-of"


class ReachedRunning(Exception):
    """Raised from ``on_status`` to stop waiting once the operator reports the job Running."""


def overlay_objects(manifests: Path, namespace: str, *kinds: str) -> list[dict[str, Any]]:
    """The rendered overlay's objects of ``kinds`` (all but its Namespace when none), in ``namespace``."""
    objects = [o for o in load_documents(manifests.read_text()) if o["kind"] != "Namespace" and (not kinds or o["kind"] in kinds)]
    return [in_namespace(o, namespace) for o in objects]


def run_of(manifests: Path, job: str, name: str, namespace: str, **options: Any) -> dict[str, Any]:
    return rayjob_run(rayjob_template(load_documents(manifests.read_text()), job), name, namespace=namespace, **options)


def pods_running(kube: Kube, namespace: str, cluster: str) -> list[dict[str, Any]] | None:
    items = kube.json("get", "-n", namespace, "pods", "-l", f"ray.io/cluster={cluster}")["items"]
    return items if items and all(p.get("status", {}).get("phase") == "Running" for p in items) else None


def test_create_watch_to_running_then_delete(kube: Kube, namespace: str, kuberay_client: KubeRayClient, dev_manifests: Path, monkeypatch: pytest.MonkeyPatch):
    client = kuberay_client
    name = "greenhouse-promote-run-1"
    run = run_of(dev_manifests, "promote", name, namespace, extra_args=["--min-improvement", "0.1"], env_vars={"GH_LAKE_URL": "webhdfs://nn:9870/x"})
    created = client.create(run)
    assert created.created and created.object["metadata"]["uid"]
    stored = client.get("RayJob", name)
    assert stored is not None and stored["metadata"]["uid"] == created.object["metadata"]["uid"]
    assert not stored["spec"].get("suspend") and stored["spec"]["entrypoint"] == "python -m jobs.promote --min-improvement 0.1"
    assert yaml.safe_load(stored["spec"]["runtimeEnvYAML"]) == {"env_vars": {"GH_LAKE_URL": "webhdfs://nn:9870/x"}}
    assert stored["metadata"]["labels"][RUN_OF] == "greenhouse-promote" and stored["metadata"]["labels"]["greenhouse.io/job"] == "promote"

    # Every status after the first read must come from the watch: count the reads and the watches.
    reads: list[str] = []
    watches: list[dict[str, Any]] = []
    real_get, real_list = client.get, client.custom.list_namespaced_custom_object

    def counted_get(kind: str, obj_name: str, **kwargs: Any) -> dict[str, Any] | None:
        reads.append(f"{kind}/{obj_name}")
        return real_get(kind, obj_name, **kwargs)

    @functools.wraps(real_list)  # the watch finds the return type and watch argument in the docstring
    def counted_list(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("watch"):
            watches.append(kwargs)
        return real_list(*args, **kwargs)

    monkeypatch.setattr(client, "get", counted_get)
    monkeypatch.setattr(client.custom, "list_namespaced_custom_object", counted_list)

    # The pods need the overlay's ServiceAccount: without it the operator keeps the job
    # Initializing (it cannot make the head pod). It appears once the wait has seen that state.
    seen: list[str] = []

    def on_status(status: RayJobStatus) -> None:
        seen.append(status.deployment_status)
        if status.deployment_status == "Initializing" and seen.count("Initializing") == 1:
            assert [client.apply(sa) for sa in overlay_objects(dev_manifests, namespace, "ServiceAccount")] == ["created", "created"]
        if status.deployment_status == "Running":
            raise ReachedRunning(status.describe())

    with pytest.raises(ReachedRunning, match="^Running"):
        client.wait_rayjob(name, timeout_s=60, poll_s=0.1, on_status=on_status)
    assert seen[-1] == "Running" and "Initializing" in seen and seen.index("Initializing") < seen.index("Running")
    assert reads == [f"RayJob/{name}"]  # one read; the rest came as watch events
    assert watches and watches[0]["field_selector"] == f"metadata.name={name}" and watches[0]["resource_version"]
    monkeypatch.undo()

    status = client.rayjob_status(name)
    assert status.deployment_status == "Running" and not status.terminal and job_state(status) == "PENDING"
    assert status.dashboard_url.endswith(f".{namespace}.svc.cluster.local:8265")
    cluster = client.get("RayCluster", status.ray_cluster_name)
    assert cluster is not None, f"rayClusterName {status.ray_cluster_name} names no RayCluster"
    assert any(o["kind"] == "RayJob" and o["uid"] == created.object["metadata"]["uid"] for o in cluster["metadata"]["ownerReferences"])
    wait_until("the RayJob's cluster pods Running on kwok's node", lambda: pods_running(kube, namespace, status.ray_cluster_name))

    # Running is as far as it gets without Ray: a short wait times out, saying where it stands.
    with pytest.raises(TimeoutError, match=f"RayJob {name} still Running"):
        client.wait_rayjob(name, timeout_s=1.5, poll_s=0.1)

    assert client.delete("RayJob", name) is True
    # the operator's finalizer (ray.io/rayjob-finalizer) goes first, then the object
    wait_until("the RayJob gone", lambda: client.get("RayJob", name) is None)
    assert client.delete("RayJob", name) is False  # 404: already gone
    wait_until("its RayCluster gone with it", lambda: client.get("RayCluster", status.ray_cluster_name) is None)
    with pytest.raises(KubeRayError, match="not found"):
        client.wait_rayjob(name, timeout_s=1)


def test_create_conflict_is_idempotent(namespace: str, kuberay_client: KubeRayClient, dev_manifests: Path):
    client = kuberay_client
    run = run_of(dev_manifests, "train", "greenhouse-train-run-7", namespace)
    first = client.create(run)
    again = client.create(copy.deepcopy(run))  # 409 AlreadyExists: the existing RayJob
    assert first.created and not again.created
    assert again.object["metadata"]["uid"] == first.object["metadata"]["uid"]
    # apply of an existing RayJob never changes it (a run is immutable)
    changed = copy.deepcopy(run)
    changed["spec"]["entrypoint"] += " --num-boost-round 99"
    assert client.apply(changed) == "unchanged"
    stored = client.get("RayJob", "greenhouse-train-run-7")
    assert stored is not None and stored["spec"]["entrypoint"] == run["spec"]["entrypoint"]
    assert [o["metadata"]["name"] for o in client.list("RayJob", label_selector=f"{RUN_OF}=greenhouse-train")] == ["greenhouse-train-run-7"]


def test_invalid_rayjob_is_refused_with_the_operators_reason(kube: Kube, namespace: str, kuberay_client: KubeRayClient, dev_manifests: Path):
    # The CRD schema accepts it; the operator's own validation refuses it.
    client = kuberay_client
    bad = run_of(dev_manifests, "sink", "greenhouse-sink-bad", namespace)
    bad["spec"].update(suspend=True, shutdownAfterJobFinishes=False)
    assert client.create(bad).created
    status = client.wait_rayjob("greenhouse-sink-bad", timeout_s=30, poll_s=0.1)
    reason = "a RayJob with shutdownAfterJobFinishes set to false is not allowed to be suspended"
    assert status.terminal and not status.succeeded and status.deployment_status == "ValidationFailed"
    assert status.reason == "ValidationFailed" and reason in status.message and reason in status.describe()
    assert job_state(status) == "FAILED" and not status.ray_cluster_name

    def warning() -> list[dict[str, Any]]:
        events = kube.json("get", "-n", namespace, "events", "--field-selector", "involvedObject.name=greenhouse-sink-bad")["items"]
        return [e for e in events if e["type"] == "Warning" and e["reason"] == "InvalidRayJobSpec"]

    assert reason in wait_until("the operator's InvalidRayJobSpec event", warning)[0]["message"]
    assert kube.json("get", "-n", namespace, "rayclusters")["items"] == []


def test_apply_rayservice_replaces_its_spec_for_a_new_serve_config(namespace: str, kuberay_client: KubeRayClient, dev_manifests: Path):
    client = kuberay_client
    for sa in overlay_objects(dev_manifests, namespace, "ServiceAccount"):
        client.apply(sa)
    (service,) = overlay_objects(dev_manifests, namespace, "RayService")
    name = service["metadata"]["name"]
    assert client.apply(copy.deepcopy(service)) == "created"
    # the operator works on it meanwhile (status, its RayCluster): the spec is still ours
    wait_until("the operator's first status", lambda: (client.get("RayService", name) or {}).get("status"))
    assert client.apply(copy.deepcopy(service)) == "unchanged"
    service["spec"]["serveConfigV2"] = "applications:\n- name: ingest\n  import_path: app.serve.ingest:build_app\n"
    assert client.apply(copy.deepcopy(service)) == "configured"
    stored = client.get("RayService", name)
    assert stored is not None and stored["spec"]["serveConfigV2"].startswith("applications:\n- name: ingest") and stored["metadata"]["generation"] == 2
    assert client.apply(copy.deepcopy(service)) == "unchanged"
    assert not client.rayservice_ready(name)  # no Serve answers behind kwok's pods
    assert not client.rayservice_ready("no-such-service")
    assert [o["metadata"]["name"] for o in client.list("RayService")] == [name]


def test_core_objects_apply_created_unchanged_configured(kube: Kube, namespace: str, kuberay_client: KubeRayClient, dev_manifests: Path):
    client = kuberay_client
    core = overlay_objects(dev_manifests, namespace, "ConfigMap", "Secret", "ServiceAccount", "Service", "Deployment", "NetworkPolicy")
    assert {o["kind"] for o in core} == {"ConfigMap", "Secret", "ServiceAccount", "Service", "Deployment", "NetworkPolicy"}
    assert [client.apply(copy.deepcopy(o)) for o in core] == ["created"] * len(core)
    # the server's defaults (a Deployment's strategy, a Service's cluster IP, a Secret's stringData
    # stored as data) are no change
    assert [client.apply(copy.deepcopy(o)) for o in core] == ["unchanged"] * len(core)

    by_kind = {o["kind"]: o for o in core}
    cm, deployment, service = by_kind["ConfigMap"], by_kind["Deployment"], by_kind["Service"]
    cm["data"]["GH_CONTROL__DRY_RUN"] = "false"
    assert client.apply(copy.deepcopy(cm)) == "configured"
    assert (client.get("ConfigMap", cm["metadata"]["name"]) or {})["data"]["GH_CONTROL__DRY_RUN"] == "false"
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = "localhost:5001/greenhouse-mlops:0.2.0-ray2.60.0-py311"
    assert client.apply(copy.deepcopy(deployment)) == "configured"
    stored = client.get("Deployment", deployment["metadata"]["name"]) or {}
    assert stored["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":0.2.0-ray2.60.0-py311") and stored["metadata"]["generation"] == 2
    # what a controller adds to the metadata (the Deployment's revision) is kept and no change
    kube.run("annotate", "-n", namespace, "deployment", deployment["metadata"]["name"], "deployment.kubernetes.io/revision=2")
    assert client.apply(copy.deepcopy(deployment)) == "unchanged"
    cluster_ip = (client.get("Service", service["metadata"]["name"]) or {})["spec"]["clusterIP"]
    service["metadata"].setdefault("labels", {})["greenhouse.io/tier"] = "monitor"
    assert client.apply(copy.deepcopy(service)) == "configured"
    stored = client.get("Service", service["metadata"]["name"]) or {}
    assert stored["metadata"]["labels"]["greenhouse.io/tier"] == "monitor" and stored["spec"]["clusterIP"] == cluster_ip
    assert [client.apply(copy.deepcopy(o)) for o in (cm, deployment, service)] == ["unchanged"] * 3
    assert client.delete("Deployment", deployment["metadata"]["name"]) and client.get("Deployment", deployment["metadata"]["name"]) is None

    # a Namespace (cluster-scoped): the test's own is there; another one is created
    assert client.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}) == "unchanged"
    other = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"{namespace}-{uuid.uuid4().hex[:4]}", "labels": {"app.kubernetes.io/part-of": "greenhouse-mlops"}}}
    try:
        assert client.apply(copy.deepcopy(other)) == "created"
        assert client.apply(copy.deepcopy(other)) == "unchanged"
        other["metadata"]["labels"]["greenhouse.io/env"] = "test"
        assert client.apply(copy.deepcopy(other)) == "configured"
        labels = (client.get("Namespace", other["metadata"]["name"]) or {})["metadata"]["labels"]
        assert labels["greenhouse.io/env"] == "test" and labels["kubernetes.io/metadata.name"] == other["metadata"]["name"]
    finally:
        kube.run("delete", "namespace", other["metadata"]["name"], "--wait=false", check=False)
    with pytest.raises(KubeRayError, match="kubectl"):
        client.apply({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "x"}})


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_rendered_object_applies_then_is_unchanged(overlay: str, kube: Kube, namespace: str, kuberay_client: KubeRayClient, tmp_path: Path):
    # `greenhouse kuberay apply` twice: the second time nothing changes, whatever the server and the
    # operator added meanwhile (defaults, statuses, the RayService's cluster).
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(kube.run("kustomize", str(Path(__file__).resolve().parents[2] / "kuberay" / "overlays" / overlay)).stdout)
    objects = overlay_objects(rendered, namespace)
    assert [kuberay_client.apply(copy.deepcopy(o)) for o in objects] == ["created"] * len(objects)
    wait_until("the operator's status of the RayService", lambda: (kuberay_client.get("RayService", "greenhouse-serve") or {}).get("status"))
    again = {f"{o['kind']}/{o['metadata']['name']}": kuberay_client.apply(copy.deepcopy(o)) for o in objects}
    assert {k: v for k, v in again.items() if v != "unchanged"} == {}
