"""Every manifest kustomize renders for the overlays is valid offline: the CRD schemas of the KubeRay
version the manifests target (v1.5.0, the operator stack/kube/build builds and runs; no field the
API server would prune), the operator's own rules, Kubernetes' Go types for core kinds (strict
decoding in stack/k8s-tools), the Serve config, entrypoints, env vars and the Ray version. Negative
cases show that each check catches what it is for."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from app.kuberay import manifests as m
from app.kuberay.render import SERVE_CONFIG_MANIFEST, serve_config_manifest_text, serve_config_v2_text
from app.orchestration.registry import JOBS

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def crd_schemas(kuberay_crds: Path) -> dict:
    schemas = m.load_crd_schemas(kuberay_crds)
    assert set(schemas) == {"RayCluster", "RayJob", "RayService"}
    return schemas


@pytest.fixture(scope="module")
def rendered(k8s_tools) -> dict[str, list[dict]]:
    return {name: m.load_documents(m.render_overlay(m.overlay_dir(name), binary=k8s_tools)) for name in m.OVERLAYS}


def test_overlays_render_the_expected_objects(rendered):
    for name, objects in rendered.items():
        kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects)
        assert ("RayCluster", "greenhouse") in kinds and ("RayService", "greenhouse-serve") in kinds
        assert {("ServiceAccount", "greenhouse-monitor"), ("Deployment", "greenhouse-monitor"), ("Service", "greenhouse-monitor")} <= set(kinds)
        jobs = {o["metadata"]["labels"]["greenhouse.io/job"] for o in objects if o["kind"] == "RayJob"}
        assert jobs == {"sink", "preprocess", "train", "tune", "promote", "drift", "batch_predict"}
        namespace = {"dev": "greenhouse-dev", "prod": "greenhouse"}[name]
        assert all(o["metadata"].get("namespace") == namespace for o in objects if o["kind"] != "Namespace")
        assert not any(o["kind"] == "ConfigMap" and o["metadata"]["name"] == "greenhouse-serve-config" for o in objects)  # local-config
        cluster = next(o for o in objects if o["kind"] == "RayCluster")
        assert cluster["spec"]["enableInTreeAutoscaling"] is True and cluster["spec"]["workerGroupSpecs"]
        for job in (o for o in objects if o["kind"] == "RayJob"):
            spec = job["spec"]
            assert spec["suspend"] and spec["shutdownAfterJobFinishes"] and spec["ttlSecondsAfterFinished"] > 0
            assert spec["activeDeadlineSeconds"] > 0 and spec["backoffLimit"] >= 0
    prod_secrets = [o for o in rendered["prod"] if o["kind"] == "Secret"]
    assert prod_secrets == []  # production secrets are created out of band, only referenced


def test_the_targeted_kuberay_version_is_the_one_the_stack_builds(monkeypatch):
    """KUBERAY_VERSION and the CRDs it names are stack/kube/build's (its go.mod pins the operator)."""
    done = subprocess.run(["bash", str(REPO / "stack" / "kube" / "build"), "--print"], capture_output=True, text=True, timeout=60, check=True)
    printed = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    assert printed["KUBERAY_VERSION"] == m.KUBERAY_VERSION == "v1.5.0"
    monkeypatch.delenv(m.CRDS_DIR_ENV, raising=False)
    assert m.default_crds_dir() == Path(printed["KUBERAY_CRDS"])


def test_ray_resources_validate_against_the_kuberay_crds(rendered, crd_schemas, k8s_tools):
    assert "authOptions" not in crd_schemas["RayCluster"]["properties"]["spec"]["properties"]  # v1.5.0's: came later
    monitored = {name: m.load_documents(m.render_overlay(m.overlay_dir(name), binary=k8s_tools)) for name in m.MONITORED_OVERLAYS}
    checked = 0
    for name, objects in {**rendered, **monitored}.items():
        for obj in objects:
            if obj["kind"] in crd_schemas:
                assert m.crd_errors(obj, crd_schemas[obj["kind"]]) == [], (name, obj["kind"], obj["metadata"]["name"])
                assert m.operator_rule_errors(obj) == [], (name, obj["metadata"]["name"])
                checked += 1
    assert checked == 4 * (2 + len(JOBS))  # per overlay: the RayCluster, the RayService and a RayJob per job


def test_a_field_of_a_later_kuberay_is_caught(rendered, crd_schemas):
    """What v1.7.0's authOptions would be under v1.5.0: dropped by the API server, refused by
    `kubectl apply --validate=strict`."""
    cluster = copy.deepcopy(next(o for o in rendered["dev"] if o["kind"] == "RayCluster"))
    cluster["spec"]["authOptions"] = {"mode": "token", "secretName": "greenhouse-ray-auth"}
    assert m.crd_errors(cluster, crd_schemas["RayCluster"]) == ["/spec/authOptions: unknown field (the API server would drop it)"]


def test_core_kinds_decode_strictly_into_kubernetes_types(k8s_tools):
    for name in m.OVERLAYS + m.MONITORED_OVERLAYS:
        done = subprocess.run([str(k8s_tools), "validate", str(m.overlay_dir(name))], capture_output=True, text=True, timeout=120)
        reports = [json.loads(line) for line in done.stdout.splitlines()]
        assert done.returncode == 0, (name, done.stderr, [r for r in reports if not r["ok"]])
        strict = {r["kind"] for r in reports if r["check"] == "strict"}
        assert {"ServiceAccount", "ConfigMap", "Namespace", "Deployment", "Service", "NetworkPolicy"} <= strict and all(r["ok"] for r in reports)
        if name.startswith("dev"):
            assert "Secret" in strict
        if name in m.MONITORED_OVERLAYS:  # prometheus-operator's own Go types
            assert {"PrometheusRule", "PodMonitor", "ServiceMonitor"} <= strict


def test_core_kind_checker_rejects_unknown_and_mistyped_fields(k8s_tools, tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: [bad.yaml]\n")
    (tmp_path / "bad.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringDta: {a: b}\n---\n"
        'apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa}\nautomountServiceAccountToken: "no"\n---\n'
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n"
    )
    done = subprocess.run([str(k8s_tools), "validate", str(tmp_path)], capture_output=True, text=True, timeout=120)
    reports = {r["kind"]: r for r in map(json.loads, done.stdout.splitlines())}
    assert done.returncode == 1
    assert "stringDta" in reports["Secret"]["error"]
    assert not reports["ServiceAccount"]["ok"] and not reports["Widget"]["ok"]


def test_serve_config_v2_is_generated_from_serve_configs(rendered):
    assert SERVE_CONFIG_MANIFEST.read_text() == serve_config_manifest_text(), "run `python -m app.kuberay.render`"
    expected = serve_config_v2_text()
    from ray.serve.schema import ServeDeploySchema

    for objects in rendered.values():
        service = next(o for o in objects if o["kind"] == "RayService")
        assert service["spec"]["serveConfigV2"] == expected
        config = ServeDeploySchema.model_validate(yaml.safe_load(service["spec"]["serveConfigV2"]))
        assert config.http_options.host == "0.0.0.0"
        local_apps = {a["name"] for f in sorted((REPO / "serve_configs").glob("*.yaml")) for a in yaml.safe_load(f.read_text())["applications"]}
        assert {a.name for a in config.applications} == local_apps
        for app in config.applications:
            assert "data_dir" not in ((app.args or {}).get("settings") or {})


def test_entrypoints_env_vars_and_ray_version(rendered):
    version = m.pyproject_ray_version()
    assert version == "2.60.0"
    for name, objects in rendered.items():
        assert m.entrypoint_errors(objects) == [], name
        assert set(m.entrypoint_modules(objects).values()) == {"jobs.sink", "jobs.preprocess", "jobs.train", "jobs.tune", "jobs.promote", "jobs.drift", "jobs.batch_predict"}
        env = m.env_var_names(objects)
        assert {"GH_CONTROL__SIGNING_KEY_FILE", "GH_METADATA_URL", "GH_BUS_URL", "GH_LAKE_URL"} <= set(env)
        assert m.env_var_errors(objects) == [], name
        assert m.ray_version_errors(objects, version) == [], name
        for c in m.containers(objects):
            secret_refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c.get("env", []) if "valueFrom" in e}
            assert set(secret_refs) <= {"GH_METADATA_URL"}  # other secrets are files: tests/orchestration/test_kuberay_security.py


def _monitor(objects: list[dict]) -> tuple[dict, dict, dict]:
    """The monitor's Deployment, its container and its Service."""
    by_key = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    deployment, service = by_key[("Deployment", "greenhouse-monitor")], by_key[("Service", "greenhouse-monitor")]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return deployment, container, service


def test_monitor_runs_the_ray_image_against_the_shared_clusters_jobs_api(rendered):
    """The monitor Deployment of each overlay: the image of the Ray pods (the overlay's registry),
    `python -m app.entrypoints.monitor` with the settings and GH_METADATA_URL, /metrics on the port
    its Service and probes name, and the Jobs API of the head Service KubeRay makes for the
    RayCluster in the render (<cluster>-head-svc, the head's dashboard port)."""
    registry = {"dev": "localhost:5001/greenhouse-mlops", "prod": "registry.example.com/greenhouse/greenhouse-mlops"}
    for name, objects in rendered.items():
        deployment, container, service = _monitor(objects)
        cluster = next(o for o in objects if o["kind"] == "RayCluster")
        head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
        assert container["image"] == head["image"] and container["image"].startswith(registry[name] + ":"), name
        assert deployment["spec"]["replicas"] == 1
        assert container["command"] == ["python", "-m", "app.entrypoints.monitor"]
        assert container["envFrom"] == [{"configMapRef": {"name": "greenhouse-settings"}}]
        env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
        assert env["GH_METADATA_URL"] == {"secretKeyRef": {"name": "greenhouse-secrets", "key": "metadata-url"}}
        assert env["GH_MONITOR__HOST"] == "0.0.0.0"  # not the loopback default: Prometheus and the probes come from outside

        (port,) = container["ports"]
        assert port == {"containerPort": int(env["GH_MONITOR__PORT"]), "name": "metrics"} and port["containerPort"] == 9108
        for probe in (container["readinessProbe"], container["livenessProbe"]):
            assert probe["httpGet"] == {"path": "/metrics", "port": "metrics"}
        assert service["spec"]["type"] == "ClusterIP" and service["spec"]["ports"] == [{"name": "metrics", "port": 9108, "targetPort": "metrics", "protocol": "TCP"}]
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()

        jobs_api = urlsplit(env["GH_MONITOR__RAY_JOBS_URL"])
        dashboard = next(p["containerPort"] for p in head["ports"] if p["name"] == "dashboard")
        assert (jobs_api.scheme, jobs_api.hostname, jobs_api.port) == ("http", f"{cluster['metadata']['name']}-head-svc", dashboard), name
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        assert requests == {"cpu": "100m", "memory": "256Mi"} and limits["memory"] == "512Mi"


def test_checks_catch_mistakes(rendered, crd_schemas):
    objects = copy.deepcopy(rendered["prod"])
    job = next(o for o in objects if o["kind"] == "RayJob" and o["metadata"]["name"] == "greenhouse-train")
    job["spec"]["shutdownAfterJobFinish"] = True  # typo: pruned by the API server
    job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["rayStartParams"] = {"num-cpus": 2}  # must be a string
    assert any("shutdownAfterJobFinish" in e for e in m.crd_errors(job, crd_schemas["RayJob"]))
    assert any("rayStartParams" in e for e in m.crd_errors(job, crd_schemas["RayJob"]))
    job["spec"]["clusterSelector"] = {"ray.io/cluster": "greenhouse"}
    assert any("exactly one" in e for e in m.operator_rule_errors(job))
    job["spec"]["entrypoint"] = "python -m jobs.no_such_job"
    assert any("jobs.no_such_job" in e for e in m.entrypoint_errors(objects))
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    head["env"].append({"name": "GH_LAKE_URI", "value": "x"})
    assert any(e.startswith("GH_LAKE_URI") for e in m.env_var_errors(objects))
    head["image"] = "greenhouse-mlops:0.1.0-ray2.59.0-py311"
    job["spec"]["rayClusterSpec"]["rayVersion"] = "2.59.0"
    errors = m.ray_version_errors(objects, "2.60.0")
    assert any("rayVersion" in e for e in errors) and any("ray2.59.0" in e for e in errors)


def test_prod_places_sink_workers_near_the_data_and_spreads_serve(rendered):
    """prod: the sink runs as several workers on worker pods (the head takes no tasks), each pod
    preferring the zones of the Kafka brokers and HDFS datanodes and spread over nodes; the Serve
    worker pods spread over nodes and zones. dev keeps one small sink."""
    prod = {(o["kind"], o["metadata"]["name"]): o for o in rendered["prod"]}
    sink = prod[("RayJob", "greenhouse-sink")]["spec"]
    assert "--workers 3" in sink["entrypoint"]
    assert sink["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    group = sink["rayClusterSpec"]["workerGroupSpecs"][0]
    assert group["replicas"] == group["minReplicas"] == 3
    pod = group["template"]["spec"]
    near = pod["affinity"]["podAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert {t["podAffinityTerm"]["labelSelector"]["matchLabels"]["app.kubernetes.io/name"] for t in near} == {"kafka", "hdfs-datanode"}
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in pod["affinity"]["podAffinity"]  # a zone outage must not stop the sink
    role = group["template"]["metadata"]["labels"]["greenhouse.io/role"]
    assert {(c["topologyKey"], c["labelSelector"]["matchLabels"]["greenhouse.io/role"]) for c in pod["topologySpreadConstraints"]} == {
        ("kubernetes.io/hostname", role),
        ("topology.kubernetes.io/zone", role),
    }
    serve = prod[("RayService", "greenhouse-serve")]["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    keys = {c["topologyKey"] for c in serve["template"]["spec"]["topologySpreadConstraints"]}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    dev_sink = next(o for o in rendered["dev"] if o["kind"] == "RayJob" and o["metadata"]["name"] == "greenhouse-sink")
    assert "--workers" not in dev_sink["spec"]["entrypoint"]
