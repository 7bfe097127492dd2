"""KubeRayClient against a fake Kubernetes API over real HTTP: the real ``kubernetes`` client sends
every request; the fake answers like the API server and records what it got."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from app.kuberay.client import CORE_KINDS, CUSTOM_KINDS, KubeRayClient, KubeRayError, KubeTarget, RayJobStatus
from app.kuberay.manifests import MONITORED_OVERLAYS, OVERLAYS, load_documents, overlay_dir, rayjob_run, render_overlay
from tests.helpers.fake_kube import FakeKubeAPI

REPO = Path(__file__).resolve().parents[2]
NS = "greenhouse-test"
RUNNING = [
    {"jobDeploymentStatus": "Initializing"},
    {"jobDeploymentStatus": "Running", "jobStatus": "PENDING", "rayClusterName": "run-1-abcde"},
    {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING", "jobId": "run-1", "dashboardURL": "run-1-head-svc:8265"},
]


@pytest.fixture
def fake():
    api = FakeKubeAPI().start()
    yield api
    api.stop()


@pytest.fixture
def client(fake):
    with KubeRayClient.connect(KubeTarget(namespace=NS, server=fake.url, token="test-token")) as c:
        yield c


def template(job: str = "train") -> dict:
    return yaml.safe_load((REPO / "kuberay" / "base" / f"rayjob-{job}.yaml").read_text())


def test_create_get_watch_until_complete_then_delete(fake, client):
    run = rayjob_run(template(), "greenhouse-train-run-1", extra_args=["--num-boost-round", "40"], env_vars={"GH_LAKE_URL": "webhdfs://nn:9870/x"})
    created = client.create(run)
    assert created.created and created.object["metadata"]["uid"]
    post = fake.calls("POST", "/apis/ray.io/v1/namespaces/greenhouse-test/rayjobs")[0]
    assert post.status == 201 and post.headers["authorization"] == "Bearer test-token"
    sent = post.body
    assert sent["metadata"]["name"] == "greenhouse-train-run-1" and sent["spec"]["suspend"] is False
    assert sent["spec"]["entrypoint"] == "python -m jobs.train --num-workers 2 --num-boost-round 40"
    assert yaml.safe_load(sent["spec"]["runtimeEnvYAML"]) == {"env_vars": {"GH_LAKE_URL": "webhdfs://nn:9870/x"}}
    assert sent["metadata"]["labels"] == {"greenhouse.io/job": "train", "greenhouse.io/run-of": "greenhouse-train"}

    fake.script("rayjobs", "greenhouse-train-run-1", [*RUNNING, {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED", "message": "done"}])
    seen: list[str] = []
    status = client.wait_rayjob("greenhouse-train-run-1", timeout_s=30, poll_s=0.05, on_status=lambda s: seen.append(f"{s.deployment_status}/{s.job_status}"))
    assert status.succeeded and status.terminal and status.job_id == "run-1" and status.dashboard_url == "run-1-head-svc:8265"
    assert seen == ["Initializing/", "Running/PENDING", "Running/RUNNING", "Complete/SUCCEEDED"]
    watches = [r for r in fake.calls("GET", "/rayjobs") if r.query.get("watch") == "true"]
    assert watches and watches[0].query["fieldSelector"] == "metadata.name=greenhouse-train-run-1"
    assert watches[0].status == 200

    assert client.delete("RayJob", "greenhouse-train-run-1") is True
    delete = fake.calls("DELETE", "/rayjobs/greenhouse-train-run-1")[0]
    assert delete.body["propagationPolicy"] == "Background"
    assert client.get("RayJob", "greenhouse-train-run-1") is None
    assert client.delete("RayJob", "greenhouse-train-run-1") is False  # 404: already gone


def test_create_conflict_is_idempotent(fake, client):
    run = rayjob_run(template("promote"), "greenhouse-promote-run-7")
    first = client.create(run)
    again = client.create(copy.deepcopy(run))
    assert first.created and not again.created
    assert again.object["metadata"]["uid"] == first.object["metadata"]["uid"]
    posts = fake.calls("POST", "/rayjobs")
    assert [p.status for p in posts] == [201, 409]
    assert len([k for k in fake.objects if k[0] == "rayjobs"]) == 1
    # apply of an existing RayJob never changes it (a run is immutable)
    assert client.apply(copy.deepcopy(run)) == "unchanged"
    assert not fake.calls("PUT")


def test_failed_job_and_polling_when_the_server_cannot_watch(fake, client):
    fake.watch_supported = False
    client.create(rayjob_run(template("sink"), "greenhouse-sink-run-2"))
    fake.script("rayjobs", "greenhouse-sink-run-2", [*RUNNING, {"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "reason": "AppFailed", "message": "exit 1"}])
    status = client.wait_rayjob("greenhouse-sink-run-2", timeout_s=30, poll_s=0.05)
    assert status.terminal and not status.succeeded and status.reason == "AppFailed"
    assert "Failed FAILED" in status.describe()
    assert any(r.status == 500 for r in fake.calls("GET", "/rayjobs") if r.query.get("watch") == "true")
    assert len([r for r in fake.calls("GET", "/rayjobs/greenhouse-sink-run-2")]) >= 3  # polled by get


def test_wait_times_out_and_missing_job_is_an_error(fake, client):
    client.create(rayjob_run(template("tune"), "greenhouse-tune-run-3"))
    fake.script("rayjobs", "greenhouse-tune-run-3", [{"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}])
    with pytest.raises(TimeoutError, match="greenhouse-tune-run-3"):
        client.wait_rayjob("greenhouse-tune-run-3", timeout_s=0.5, poll_s=0.05)
    with pytest.raises(KubeRayError, match="not found"):
        client.wait_rayjob("no-such-job", timeout_s=1)


def test_apply_rayservice_replaces_its_spec_for_a_new_serve_config(fake, client):
    service = yaml.safe_load((REPO / "kuberay" / "base" / "rayservice.yaml").read_text())
    service["metadata"]["namespace"] = NS
    service["spec"]["serveConfigV2"] = "applications: []\n"
    assert client.apply(copy.deepcopy(service)) == "created"
    assert client.apply(copy.deepcopy(service)) == "unchanged"
    service["spec"]["serveConfigV2"] = "applications:\n- name: ingest\n  import_path: app.serve.ingest:build_app\n"
    assert client.apply(copy.deepcopy(service)) == "configured"
    previews, writes = _puts(fake, "/rayservices/greenhouse-serve")
    assert len(previews) == 2 and len(writes) == 1  # each apply of an existing one asks the server first (dry run)
    assert writes[0].status == 200 and writes[0].body["metadata"]["resourceVersion"]  # optimistic concurrency
    assert client.get("RayService", "greenhouse-serve")["spec"]["serveConfigV2"].startswith("applications:\n- name: ingest")
    assert not client.rayservice_ready("greenhouse-serve")
    fake.script("rayservices", "greenhouse-serve", [{"conditions": [{"type": "Ready", "status": "True"}]}])
    assert client.rayservice_ready("greenhouse-serve")
    assert [o["metadata"]["name"] for o in client.list("RayService")] == ["greenhouse-serve"]


def test_apply_keeps_others_metadata_and_retries_a_replace_that_lost_a_race(fake, client):
    service = yaml.safe_load((REPO / "kuberay" / "base" / "rayservice.yaml").read_text())
    service["metadata"]["namespace"] = NS
    assert client.apply(copy.deepcopy(service)) == "created"
    # what controllers and other tools add to the metadata is theirs: kept, and no change
    key = next(k for k in fake.objects if k[0] == "rayservices")
    fake.objects[key]["metadata"].setdefault("annotations", {})["ray.io/last-applied"] = "x"
    fake.objects[key]["metadata"]["finalizers"] = ["ray.io/rayservice-finalizer"]
    assert client.apply(copy.deepcopy(service)) == "unchanged"
    fake.conflicting_puts = 1  # the operator writes the object between our read and our write
    service["spec"]["serveConfigV2"] = "applications: []\n"
    assert client.apply(copy.deepcopy(service)) == "configured"
    assert [(p.status, p.query.get("dryRun")) for p in fake.calls("PUT")][-3:] == [(409, "All"), (200, "All"), (200, None)]
    stored = client.get("RayService", "greenhouse-serve")
    assert stored["spec"]["serveConfigV2"] == "applications: []\n" and stored["metadata"]["generation"] == 2
    assert stored["metadata"]["annotations"]["ray.io/last-applied"] == "x" and stored["metadata"]["finalizers"] == ["ray.io/rayservice-finalizer"]
    fake.conflicting_puts = 99
    with pytest.raises(KubeRayError, match="409"):
        client.apply(copy.deepcopy({**service, "spec": {**service["spec"], "serveConfigV2": "applications: [x]\n"}}))


def test_a_raising_on_status_ends_the_wait_and_an_expired_watch_is_resumed(fake, client):
    client.create(rayjob_run(template("drift"), "greenhouse-drift-run-4"))
    fake.script("rayjobs", "greenhouse-drift-run-4", RUNNING)

    class Stop(Exception):
        pass

    def stop_when_running(status: RayJobStatus) -> None:
        if status.job_status == "RUNNING":
            raise Stop

    with pytest.raises(Stop):  # from inside the watch: not taken for a broken watch
        client.wait_rayjob("greenhouse-drift-run-4", timeout_s=30, poll_s=0.05, on_status=stop_when_running)
    assert len(fake.calls("GET", "/rayjobs/greenhouse-drift-run-4")) == 1  # no polling afterwards

    fake.expired_watches = 1  # 410 Gone: read again, then watch from there (not poll from now on)
    fake.script("rayjobs", "greenhouse-drift-run-4", [RUNNING[1], RUNNING[2], {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}])
    assert client.wait_rayjob("greenhouse-drift-run-4", timeout_s=30, poll_s=0.05).succeeded
    watches = [r for r in fake.calls("GET", "/rayjobs") if r.query.get("watch") == "true"]
    assert len(watches) == 3 and len(fake.calls("GET", "/rayjobs/greenhouse-drift-run-4")) == 3


def test_core_objects_go_through_core_v1(fake, client):
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "greenhouse-settings", "namespace": NS}, "data": {"GH_DATA_DIR": "/tmp/gh"}}
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}
    assert client.apply(ns) == "created"
    assert client.apply(copy.deepcopy(cm)) == "created"
    assert client.apply(copy.deepcopy(cm)) == "unchanged"
    cm["data"]["GH_DATA_DIR"] = "/data/gh"
    assert client.apply(copy.deepcopy(cm)) == "configured"
    assert fake.calls("POST", "/api/v1/namespaces/greenhouse-test/configmaps")[0].status == 201
    assert fake.calls("PUT", "/api/v1/namespaces/greenhouse-test/configmaps/greenhouse-settings")[0].status == 200
    assert client.get("ConfigMap", "greenhouse-settings")["data"] == {"GH_DATA_DIR": "/data/gh"}
    with pytest.raises(KubeRayError, match="kubectl"):
        client.apply({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "x"}})


def test_the_monitors_deployment_and_service_go_through_their_apis(fake, client):
    deployment, service = (next(o for o in yaml.safe_load_all((REPO / "kuberay" / "base" / "monitor.yaml").read_text()) if o["kind"] == kind) for kind in ("Deployment", "Service"))
    for obj in (deployment, service):
        obj["metadata"]["namespace"] = NS
        assert client.apply(copy.deepcopy(obj)) == "created"
        assert client.apply(copy.deepcopy(obj)) == "unchanged"
    assert fake.calls("POST", f"/apis/apps/v1/namespaces/{NS}/deployments")[0].status == 201
    assert fake.calls("POST", f"/api/v1/namespaces/{NS}/services")[0].status == 201
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = "greenhouse-mlops:0.2.0-ray2.60.0-py311"
    assert client.apply(copy.deepcopy(deployment)) == "configured"
    (put,) = _puts(fake, f"/apis/apps/v1/namespaces/{NS}/deployments/greenhouse-monitor")[1]
    assert put.status == 200 and put.body["metadata"]["resourceVersion"]
    assert client.get("Deployment", "greenhouse-monitor")["spec"]["template"]["spec"]["containers"][0]["image"].startswith("greenhouse-mlops:0.2.0")
    assert client.delete("Deployment", "greenhouse-monitor") and client.get("Deployment", "greenhouse-monitor") is None


@pytest.mark.parametrize("overlay", [*OVERLAYS, *MONITORED_OVERLAYS])
def test_every_rendered_kind_can_be_applied(overlay, fake, client, k8s_tools):
    # `greenhouse kuberay apply` creates whatever an overlay renders: a kind the client has no API
    # for would stop it halfway.
    objects = load_documents(render_overlay(overlay_dir(overlay), binary=k8s_tools))
    assert {o["kind"] for o in objects} <= set(CORE_KINDS) | set(CUSTOM_KINDS)
    assert [client.apply(copy.deepcopy(o)) for o in objects] == ["created"] * len(objects)
    assert {client.apply(copy.deepcopy(o)) for o in objects} == {"unchanged"}


def _puts(fake, path: str) -> tuple[list, list]:
    """The PUTs to ``path``: the dry runs, and the writes."""
    puts = fake.calls("PUT", path)
    return [p for p in puts if p.query.get("dryRun") == "All"], [p for p in puts if p.query.get("dryRun") != "All"]


def test_status_model_reads_kuberay_fields():
    st = RayJobStatus.from_object({"metadata": {"name": "j"}, "status": {"jobDeploymentStatus": "Suspended"}})
    assert st.terminal and not st.succeeded
    assert not RayJobStatus.from_object({"metadata": {"name": "j"}}).terminal
