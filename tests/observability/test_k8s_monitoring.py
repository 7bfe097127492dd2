"""The prometheus-operator objects under kuberay/components/monitoring: generated from the stack's
rules file (never edited by hand), holding exactly its groups, valid for promtool, and rendered by
both KubeRay overlays into their namespace with a PodMonitor that matches what the rules read and a
ServiceMonitor that scrapes the monitor's Service as the job its series are known by."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from app.kuberay import manifests as m
from app.observability import k8s_monitoring as km
from tests.observability.test_alert_rules import promtool  # noqa: F401  (fixture: the promtool binary)
from tests.orchestration.conftest import k8s_tools  # noqa: F401  (fixture: the k8s-tools binary)


def _committed(name: str) -> dict:
    return yaml.safe_load((km.OUT_DIR / name).read_text())


def test_committed_objects_are_what_the_generator_writes():
    assert km.stale_files() == [], "run `python -m app.observability.k8s_monitoring`"
    done = subprocess.run([sys.executable, "-m", "app.observability.k8s_monitoring", "--check"], cwd=km.REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_check_reports_a_hand_edit(tmp_path):
    km.write_files(tmp_path)
    path = tmp_path / "prometheusrule.yaml"
    path.write_text(path.read_text().replace("for: 2m", "for: 5m", 1))
    assert km.stale_files(tmp_path) == ["prometheusrule.yaml"]
    assert km.main(["--out", str(tmp_path), "--check"]) == 1


def test_prometheus_rule_holds_exactly_the_rules_files_groups():
    rule = _committed("prometheusrule.yaml")
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(km.RULES_FILE.read_text())["groups"]
    assert set(rule["spec"]) == {"groups"}


def test_prometheus_rule_passes_promtool(promtool, tmp_path):  # noqa: F811
    rules = tmp_path / "from-prometheusrule.rules.yml"
    rules.write_text(yaml.safe_dump({"groups": _committed("prometheusrule.yaml")["spec"]["groups"]}))
    done = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in km.load_rule_groups())} rules found" in done.stdout


def test_pod_monitor_scrapes_ray_pods_as_the_job_the_rules_read():
    monitor = _committed("podmonitor.yaml")
    assert monitor["spec"]["selector"] == {"matchLabels": {"ray.io/is-ray-node": "yes"}}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics"
    job = next(r["replacement"] for r in endpoint["relabelings"] if r["targetLabel"] == "job")
    read = set(re.findall(r'up\{job="([^"]+)"\}', km.RULES_FILE.read_text()))
    assert read == {job}, f"the rules read up{{job=...}} for {read}; the PodMonitor names its job {job!r}"


def test_service_monitor_scrapes_the_monitor_as_the_job_its_series_are_known_by():
    monitor = _committed("servicemonitor.yaml")
    assert monitor["spec"]["selector"] == {"matchLabels": km.MONITOR_SERVICE_SELECTOR}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
    job = next(r["replacement"] for r in endpoint["relabelings"] if r["targetLabel"] == "job")
    # the stack's Prometheus scrapes processes outside Ray as this job, and the rules' unit tests
    # feed the monitor's series (gh_*, not ray_gh_*) under it
    scrape_jobs = re.findall(r"^\s*- job_name: (\S+)", (km.REPO_ROOT / "stack" / "prometheus" / "prometheus.yml.in").read_text(), re.M)
    rule_tests = (km.REPO_ROOT / "stack" / "prometheus" / "tests" / "greenhouse.rules.test.yml").read_text()
    monitor_series_jobs = set(re.findall(r'(?<![\w])gh_(?:sink_lag|job|monitor)_\w*\{[^}]*job="([^"]+)"', rule_tests))
    assert job in scrape_jobs and monitor_series_jobs == {job}


def test_network_policy_lets_the_scraper_reach_the_metrics_ports():
    # KubeRay's metrics port is 8080 (named "metrics"), the monitor's 9108: the base NetworkPolicies
    # must open them to scrapers.
    policies = yaml.safe_load_all((km.REPO_ROOT / "kuberay" / "base" / "networkpolicy.yaml").read_text())
    ports = {p.get("port") for doc in policies if doc for rule in doc["spec"].get("ingress", []) for p in rule.get("ports", [])}
    assert {8080, 9108} <= ports


@pytest.mark.parametrize("overlay", m.MONITORED_OVERLAYS)
def test_overlays_render_the_monitoring_objects_in_their_namespace(overlay, k8s_tools):  # noqa: F811
    objects = m.load_documents(m.render_overlay(m.overlay_dir(overlay), binary=k8s_tools))
    monitoring = {(o["kind"], o["metadata"]["name"]): o for o in objects if o["apiVersion"] == "monitoring.coreos.com/v1"}
    assert set(monitoring) == {("PrometheusRule", km.RULE_NAME), ("PodMonitor", km.POD_MONITOR_NAME), ("ServiceMonitor", km.SERVICE_MONITOR_NAME)}
    namespace = next(o["metadata"]["name"] for o in objects if o["kind"] == "Namespace")
    assert all(o["metadata"]["namespace"] == namespace for o in monitoring.values())
    assert monitoring[("PrometheusRule", km.RULE_NAME)]["spec"] == _committed("prometheusrule.yaml")["spec"]
    # the ServiceMonitor finds the monitor's Service (same namespace: its default) by label, and the port by name
    service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "greenhouse-monitor")
    endpoint_spec = monitoring[("ServiceMonitor", km.SERVICE_MONITOR_NAME)]["spec"]
    assert "namespaceSelector" not in endpoint_spec and service["metadata"]["namespace"] == namespace
    assert endpoint_spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in endpoint_spec["endpoints"]] == [p["name"] for p in service["spec"]["ports"]]
