"""The dev and prod overlays as a user applies them (``kubectl apply -k``, kubectl v1.37.2 with the
server's strict field validation) to the stack's real kube-apiserver, reconciled by the real KubeRay
operator v1.5.0: every object is accepted, the operator makes the head and worker Pods and the head
Service our RayCluster implies (image, resources, env from the settings and from Secrets, mounts,
the autoscaler sidecar, ports, labels), the RayService gets its own cluster, the RayJob templates
stay suspended, a second apply changes nothing, a RayService whose Serve config changed is
accepted, and a spec the operator's own validation refuses is refused with its reason.

No kubelet runs: kube-scheduler binds the Pods to KWOK's fake node, which reports them Running (no
container runs, no image is pulled, the Secrets need not exist).
"""

from __future__ import annotations

import copy
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.kuberay.render import serve_config_v2_text
from tests.kuberay_real.conftest import Kube, wait_until

pytestmark = [pytest.mark.stack, pytest.mark.k8s, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "prod")
CLUSTER = "greenhouse"  # kuberay/base/raycluster.yaml
SERVICE = "greenhouse-serve"  # kuberay/base/rayservice.yaml


class Applied:
    """One overlay applied: its rendered objects, its namespace and the cluster to read back."""

    def __init__(self, kube: Kube, overlay: str) -> None:
        self.kube, self.overlay = kube, overlay
        self.directory = REPO / "kuberay" / "overlays" / overlay
        self.objects = [o for o in yaml.safe_load_all(kube.run("kustomize", str(self.directory)).stdout) if o]
        self.namespace = next(o["metadata"]["name"] for o in self.objects if o["kind"] == "Namespace")

    def rendered(self, kind: str, name: str) -> dict[str, Any]:
        return next(o for o in self.objects if o["kind"] == kind and o["metadata"]["name"] == name)

    def get(self, *args: str) -> Any:
        return self.kube.json("get", "-n", self.namespace, *args)

    def pods(self, selector: str) -> list[dict[str, Any]]:
        return self.get("pods", "-l", selector)["items"]

    def delete_namespace(self, *, wait: bool) -> None:
        """Delete the namespace (its RayJobs' finalizers make that take a minute or more)."""
        self.kube.run("delete", "namespace", self.namespace, "--ignore-not-found", f"--wait={str(wait).lower()}", timeout=300)


@pytest.fixture(scope="module", params=OVERLAYS)
def applied(request, kube: Kube):
    overlay = Applied(kube, request.param)
    overlay.delete_namespace(wait=True)  # what an earlier run left
    out = kube.run("apply", "-k", str(overlay.directory), check=False, timeout=120)
    overlay.apply_output = out  # type: ignore[attr-defined]
    yield overlay
    overlay.delete_namespace(wait=False)


def test_every_object_of_the_overlay_is_accepted(applied: Applied):
    out = applied.apply_output  # type: ignore[attr-defined]
    assert out.returncode == 0, out.stderr
    for obj in applied.objects:
        namespaced = ["-n", applied.namespace] if obj["kind"] != "Namespace" else []
        got = applied.kube.json("get", *namespaced, obj["kind"].lower(), obj["metadata"]["name"])
        assert got["metadata"]["uid"], f"{obj['kind']}/{obj['metadata']['name']} was not created"


def test_a_second_apply_changes_nothing(applied: Applied):
    """kubectl may still print "configured" (a no-op patch: kustomize wraps a Secret's base64,
    the CRDs default empty fields the manifests leave out), so what counts is the server: no
    object's generation (its spec) moves, nor the resourceVersion of one without a generation."""
    before = _versions(applied)
    applied.kube.run("apply", "-k", str(applied.directory), timeout=120)
    time.sleep(3)  # and the operator does not answer with a change of its own
    after = _versions(applied)
    assert {k: (before[k], v) for k, v in after.items() if before.get(k) != v} == {}


def _versions(applied: Applied) -> dict[str, str]:
    """``kind/name`` -> generation (or resourceVersion) of every object of the overlay."""
    out = {}
    for obj in applied.objects:
        namespaced = ["-n", applied.namespace] if obj["kind"] != "Namespace" else []
        meta = applied.kube.json("get", *namespaced, obj["kind"].lower(), obj["metadata"]["name"])["metadata"]
        out[f"{obj['kind']}/{obj['metadata']['name']}"] = str(meta.get("generation") or meta["resourceVersion"])
    return out


def test_the_operator_makes_the_pods_and_service_our_raycluster_implies(applied: Applied):
    spec = applied.rendered("RayCluster", CLUSTER)["spec"]
    head_pods = wait_until("the head Pod", lambda: applied.pods(f"ray.io/cluster={CLUSTER},ray.io/node-type=head"), timeout=60.0)
    group = spec["workerGroupSpecs"][0]
    selector = f"ray.io/cluster={CLUSTER},ray.io/group={group['groupName']}"
    if group["replicas"]:
        workers = wait_until(f"{group['replicas']} worker Pods", lambda: (p := applied.pods(selector)) and len(p) == group["replicas"] and p, timeout=60.0)
    else:  # dev starts without workers: the autoscaler adds them on demand
        time.sleep(2)
        workers = applied.pods(selector)
        assert workers == [], [w["metadata"]["name"] for w in workers]
    (head,) = head_pods
    _assert_pod_follows_template(head, spec["headGroupSpec"]["template"])
    for worker in workers:
        _assert_pod_follows_template(worker, group["template"])
    names = [c["name"] for c in head["spec"]["containers"]]
    assert spec.get("enableInTreeAutoscaling") is True and "autoscaler" in names, names  # the sidecar
    service = applied.get("service", f"{CLUSTER}-head-svc")
    ports = {p["port"] for p in service["spec"]["ports"]}
    wanted = {p["containerPort"] for p in spec["headGroupSpec"]["template"]["spec"]["containers"][0].get("ports", [])}
    assert wanted <= ports, f"head Service ports {sorted(ports)} lack {sorted(wanted - ports)}"
    assert service["spec"]["selector"]["ray.io/cluster"] == CLUSTER
    ready = wait_until("RayCluster state ready", lambda: applied.get("raycluster", CLUSTER).get("status", {}).get("state") == "ready", timeout=60.0)
    assert ready


def _assert_pod_follows_template(pod: dict[str, Any], template: dict[str, Any]) -> None:
    """The Pod carries what the RayCluster's template says: labels, service account, security
    context, volumes, and for each container its image, resources, env, envFrom and mounts."""
    owner = pod["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("RayCluster", CLUSTER)
    for key, value in (template.get("metadata", {}).get("labels") or {}).items():
        assert pod["metadata"]["labels"].get(key) == value, f"label {key}"
    want_spec, got_spec = template["spec"], pod["spec"]
    if "serviceAccountName" in want_spec:
        assert got_spec["serviceAccountName"] == want_spec["serviceAccountName"]
    for key, value in (want_spec.get("securityContext") or {}).items():
        assert got_spec["securityContext"][key] == value, f"pod securityContext.{key}"
    volumes = {v["name"]: v for v in got_spec.get("volumes", [])}
    for volume in want_spec.get("volumes", []):
        got = volumes[volume["name"]]
        if "secret" in volume:
            assert got["secret"]["secretName"] == volume["secret"]["secretName"], f"volume {volume['name']}"
        if "configMap" in volume:
            assert got["configMap"]["name"] == volume["configMap"]["name"], f"volume {volume['name']}"
    containers = {c["name"]: c for c in got_spec["containers"]}
    for want in want_spec["containers"]:
        got = containers[want["name"]]
        assert got["image"] == want["image"]
        assert _quantities(got.get("resources", {})) == _quantities(want.get("resources", {})), f"{want['name']} resources"
        got_env = {e["name"]: e for e in got.get("env", [])}
        for var in want.get("env", []):
            assert got_env.get(var["name"]) == var, f"{want['name']} env {var['name']}"
        assert all(source in got.get("envFrom", []) for source in want.get("envFrom", []))
        mounts = {(m["name"], m["mountPath"]) for m in got.get("volumeMounts", [])}
        assert {(m["name"], m["mountPath"]) for m in want.get("volumeMounts", [])} <= mounts, f"{want['name']} mounts"


def _quantities(resources: dict[str, Any]) -> dict[str, dict[str, float]]:
    """requests/limits with the apiserver's canonical spelling undone (``1000m`` = ``1``)."""
    return {kind: {name: _quantity(str(value)) for name, value in values.items()} for kind, values in resources.items() if kind in ("requests", "limits")}


def _quantity(text: str) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    return float(text)


def test_the_rayservice_gets_its_cluster_and_a_changed_serve_config_is_accepted(applied: Applied, tmp_path: Path):
    rendered = applied.rendered("RayService", SERVICE)
    cluster = wait_until("the RayService's RayCluster", lambda: _rayservice_cluster(applied), timeout=60.0)
    head = wait_until("its head Pod", lambda: applied.pods(f"ray.io/cluster={cluster},ray.io/node-type=head"), timeout=60.0)
    want_image = rendered["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    assert head[0]["spec"]["containers"][0]["image"] == want_image

    # a person changes serve_configs/ (room for one more ingest replica) and re-renders the Serve config
    configs = tmp_path / "serve_configs"
    configs.mkdir()
    for source in sorted((REPO / "serve_configs").glob("*.yaml")):
        (configs / source.name).write_text(source.read_text())
    ingest = yaml.safe_load((configs / "ingest.yaml").read_text())
    deployment = ingest["applications"][0]["deployments"][0]
    if "autoscaling_config" in deployment:
        deployment["autoscaling_config"]["max_replicas"] += 1
    else:
        deployment["num_replicas"] = int(deployment.get("num_replicas") or 1) + 1
    (configs / "ingest.yaml").write_text(yaml.safe_dump(ingest))
    changed = copy.deepcopy(rendered)
    changed["spec"]["serveConfigV2"] = serve_config_v2_text(configs)
    assert changed["spec"]["serveConfigV2"] != rendered["spec"]["serveConfigV2"]
    out = applied.kube.run("apply", "-f", "-", stdin=yaml.safe_dump(changed))
    assert f"rayservice.ray.io/{SERVICE} configured" in out.stdout
    stored = applied.get("rayservice", SERVICE)
    assert stored["spec"]["serveConfigV2"] == changed["spec"]["serveConfigV2"]
    events = applied.get("events", "--field-selector", f"involvedObject.name={SERVICE}")["items"]
    assert not [e for e in events if e["reason"].startswith("Invalid")], [e["message"] for e in events]
    applied.kube.run("apply", "-f", "-", stdin=yaml.safe_dump(rendered))  # back as the overlay says


def _rayservice_cluster(applied: Applied) -> str:
    status = applied.get("rayservice", SERVICE).get("status") or {}
    for part in ("pendingServiceStatus", "activeServiceStatus"):
        name = (status.get(part) or {}).get("rayClusterName")
        if name:
            return str(name)
    return ""


def test_the_rayjob_templates_are_accepted_and_stay_suspended(applied: Applied):
    templates = [o for o in applied.objects if o["kind"] == "RayJob"]
    assert templates and all(t["spec"]["suspend"] is True for t in templates)
    time.sleep(2)  # time for the operator to act on them, were they not suspended
    for template in templates:
        got = applied.get("rayjob", template["metadata"]["name"])
        assert got["spec"]["suspend"] is True and (got.get("status") or {}).get("jobStatus", "") == ""
    clusters = [c["metadata"]["name"] for c in applied.get("rayclusters")["items"]]
    assert not [c for c in clusters if any(c.startswith(t["metadata"]["name"]) for t in templates)], clusters


def test_a_raycluster_the_operator_finds_invalid_is_refused_with_its_reason(applied: Applied):
    """Schema-valid, but the operator's own validation says no: resources in both rayStartParams
    and the group's Resources field. It records a Warning event with the reason and makes nothing."""
    broken = copy.deepcopy(applied.rendered("RayCluster", CLUSTER))
    name = f"gh-invalid-{uuid.uuid4().hex[:6]}"
    broken["metadata"] = {"name": name, "namespace": applied.namespace}
    broken["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = "1"
    broken["spec"]["headGroupSpec"]["resources"] = {"CPU": "1"}
    applied.kube.run("apply", "-f", "-", stdin=yaml.safe_dump(broken))
    try:
        event = wait_until(
            "the operator's InvalidRayClusterSpec event",
            lambda: [e for e in applied.get("events", "--field-selector", f"involvedObject.name={name}")["items"] if e["reason"] == "InvalidRayClusterSpec"],
            timeout=60.0,
        )[0]
        assert event["type"] == "Warning" and "should not be set in both rayStartParams and Resources" in event["message"], event["message"]
        assert applied.pods(f"ray.io/cluster={name}") == []
    finally:
        applied.kube.run("delete", "raycluster", name, "-n", applied.namespace, "--wait=false", check=False)
