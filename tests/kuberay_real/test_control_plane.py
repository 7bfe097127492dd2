"""Smoke test of the stack's Kubernetes control plane (``stack/stack up k8s``): the apiserver is
v1.37.2, the KubeRay v1.5.0 CRDs are established, the operator turns a RayCluster into a head
Service and head and worker Pods, and the CRD's schema makes the apiserver refuse a bad one.

No kubelet runs: kube-scheduler binds the Pods to kwok's fake node, and kwok reports them Running
(no container runs, no image is pulled), so the RayCluster's state becomes ``ready``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.kuberay_real.conftest import Kube, build_paths, wait_until

pytestmark = [pytest.mark.stack, pytest.mark.k8s, pytest.mark.timeout(300)]

CRDS = ("rayclusters.ray.io", "rayjobs.ray.io", "rayservices.ray.io")
IMAGE = "rayproject/ray:2.52.0"  # never pulled: kwok plays the kubelet


def raycluster(name: str, worker_replicas: object = 1) -> dict:
    def pod(container: str) -> dict:
        resources = {"cpu": "500m", "memory": "1Gi"}
        return {"spec": {"containers": [{"name": container, "image": IMAGE, "resources": {"requests": resources, "limits": resources}}]}}

    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": name},
        "spec": {
            "headGroupSpec": {"rayStartParams": {}, "template": pod("ray-head")},
            "workerGroupSpecs": [{"groupName": "workers", "replicas": worker_replicas, "minReplicas": 1, "maxReplicas": 1, "rayStartParams": {}, "template": pod("ray-worker")}],
        },
    }


def test_apiserver_is_v1_37_2(kube: Kube):
    versions = json.loads(kube.run("version", "-o", "json").stdout)
    assert versions["serverVersion"]["gitVersion"] == "v1.37.2"
    assert versions["clientVersion"]["gitVersion"] == "v1.37.2"


def test_kuberay_v1_5_0_crds_are_established(kube: Kube):
    paths = build_paths()
    assert paths["KUBERAY_VERSION"] == "v1.5.0"
    for name in CRDS:
        crd = kube.json("get", "crd", name)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True", (name, conditions)
        assert conditions.get("NamesAccepted") == "True", (name, conditions)
        # the schema the apiserver serves is the one of the operator's module version (v1.5.0)
        text = Path(paths["KUBERAY_CRDS"], f"ray.io_{name.split('.')[0]}.yaml").read_text()
        shipped = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # 0.9-1.3 MB each
        assert [v["name"] for v in crd["spec"]["versions"]] == [v["name"] for v in shipped["spec"]["versions"]]
        served = {v["name"]: v["schema"] for v in crd["spec"]["versions"]}
        assert served == {v["name"]: v["schema"] for v in shipped["spec"]["versions"]}, name


def test_operator_makes_head_service_and_pods(kube: Kube, namespace: str):
    kube.run("apply", "-n", namespace, "-f", "-", stdin=json.dumps(raycluster("smoke")))
    uid = kube.json("get", "-n", namespace, "raycluster", "smoke")["metadata"]["uid"]
    selector = "ray.io/cluster=smoke"

    def head_service():
        items = kube.json("get", "-n", namespace, "services", "-l", f"{selector},ray.io/node-type=head")["items"]
        return items[0] if items else None

    def pods(phase: str | None = None):
        items = kube.json("get", "-n", namespace, "pods", "-l", selector)["items"]
        types = sorted(p["metadata"]["labels"].get("ray.io/node-type") for p in items)
        phases = {p.get("status", {}).get("phase") for p in items}
        return items if types == ["head", "worker"] and (phase is None or phases == {phase}) else None

    def cluster_ready():
        return kube.json("get", "-n", namespace, "raycluster", "smoke").get("status", {}).get("state") == "ready"

    service = wait_until("the RayCluster's head Service", head_service, timeout=60.0)
    created = wait_until("the head and worker Pods", pods, timeout=60.0)
    assert {p["name"] for p in service["spec"]["ports"]} >= {"gcs-server", "dashboard", "client"}
    for obj in [service, *created]:
        owners = obj["metadata"].get("ownerReferences", [])
        assert any(o["kind"] == "RayCluster" and o["uid"] == uid for o in owners), obj["metadata"]["name"]
    assert {p["spec"]["containers"][0]["image"] for p in created} == {IMAGE}
    running = wait_until("the Pods Running on kwok's fake node", lambda: pods("Running"), timeout=60.0)
    assert {p["spec"]["nodeName"] for p in running} == {"kwok-node-0"}
    assert all(p["status"].get("podIP") for p in running)
    wait_until("the RayCluster's state ready", cluster_ready, timeout=60.0)


def test_invalid_raycluster_is_refused_by_the_crd_schema(kube: Kube, namespace: str):
    refused = kube.run("create", "-n", namespace, "-f", "-", stdin=json.dumps(raycluster("bad", worker_replicas="two")), check=False)
    assert refused.returncode != 0
    assert "is invalid" in refused.stderr, refused.stderr
    assert "spec.workerGroupSpecs[0].replicas" in refused.stderr, refused.stderr
    assert "integer" in refused.stderr, refused.stderr
    gone = kube.run("get", "-n", namespace, "raycluster", "bad", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
