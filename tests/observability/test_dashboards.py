"""The Grafana dashboards: the committed JSON is the generator's output, every panel reads only
metrics of docs/observability.md's catalogue through the datasource variable, and (on the stack)
every panel's PromQL parses in the real Prometheus."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from app.observability.dashboards.builder import DATASOURCE_VARIABLE, dashboard_json
from app.observability.dashboards.definitions import DASHBOARDS
from app.observability.dashboards.prometheus_api import PrometheusApi, PrometheusQueryError
from tests.helpers.engines import engine_url, missing
from tests.observability.test_alert_rules import allowed_labels, matched_labels, metric_catalogue, metric_names

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "stack" / "grafana" / "dashboards"
# Series Prometheus makes itself, not product metrics.
PROMETHEUS_OWN = {"ALERTS", "ALERTS_FOR_STATE"}


def test_committed_json_is_what_the_generator_writes(tmp_path):
    done = subprocess.run([sys.executable, "-m", "app.observability.dashboards", "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    generated = {p.name: p.read_text() for p in tmp_path.glob("*.json")}
    committed = {p.name: p.read_text() for p in COMMITTED.glob("*.json")}
    assert sorted(generated) == sorted(committed), "run `python -m app.observability.dashboards --out stack/grafana/dashboards`"
    stale = [name for name in generated if generated[name] != committed[name]]
    assert stale == [], f"{stale} edited by hand or stale: run `python -m app.observability.dashboards --out stack/grafana/dashboards`"


def test_the_six_dashboards_exist_with_unique_uids_and_titles():
    uids = [d.uid for d in DASHBOARDS]
    assert uids == ["gh-fleet-overview", "gh-ingest", "gh-lake-jobs", "gh-model-quality", "gh-control", "gh-security"]
    for spec in DASHBOARDS:
        titles = [p.title for p in spec.panels]
        assert len(titles) == len(set(titles)), f"{spec.uid}: duplicate panel titles"


def test_every_panel_queries_prometheus_through_the_datasource_variable():
    for spec in DASHBOARDS:
        model = json.loads(dashboard_json(spec))
        assert model["uid"] == spec.uid and "id" not in model
        variables = model["templating"]["list"]
        assert [(v["name"], v["type"], v["query"]) for v in variables] == [(DATASOURCE_VARIABLE, "datasource", "prometheus")]
        assert len(model["panels"]) == len(spec.panels)
        for panel, panel_spec in zip(model["panels"], spec.panels, strict=True):
            assert panel["title"] == panel_spec.title
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert [t["expr"] for t in panel["targets"]] == [q.expr for q in panel_spec.queries]
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
            assert 0 < panel["gridPos"]["w"] <= 24


def test_panels_read_only_catalogued_metrics_with_their_labels():
    catalogue = metric_catalogue()
    for spec in DASHBOARDS:
        for panel, query in spec.queries():
            assert "$" not in query.expr, f"{panel.title}: Grafana macros cannot run against Prometheus as they are"
            assert metric_names(query.expr), f"{spec.uid} / {panel.title}: no metric in {query.expr}"
            used = metric_names(query.expr) - PROMETHEUS_OWN
            unknown = used - set(catalogue)
            assert not unknown, f"{spec.uid} / {panel.title} reads {sorted(unknown)}, missing from docs/observability.md's metric catalogue"
            for metric, labels in matched_labels(query.expr).items():
                if metric in PROMETHEUS_OWN:
                    continue
                extra = labels - allowed_labels(metric, catalogue[metric][1])
                assert not extra, f"{panel.title} matches {metric} on {sorted(extra)}, labels the catalogue does not list"


@pytest.mark.stack
def test_every_panel_expression_parses_in_the_real_prometheus():
    with PrometheusApi(engine_url("prometheus")) as prometheus:
        errors = []
        for spec in DASHBOARDS:
            for panel, query in spec.queries():
                try:
                    prometheus.query(query.expr)
                except PrometheusQueryError as error:
                    errors.append(f"{spec.uid} / {panel.title}: {error}")
    assert errors == []


@pytest.mark.stack
def test_prometheus_reports_a_parse_error_as_such():
    with PrometheusApi(engine_url("prometheus")) as prometheus, pytest.raises(PrometheusQueryError, match="bad_data"):
        prometheus.query("sum by (job (up)")


def test_legend_templates_fill_from_labels():
    from app.observability.dashboards.render import legend_of

    assert legend_of("{{mode}} {{source}}", {"mode": "mpc", "source": "loop"}) == "mpc loop"
    assert legend_of("", {"job": "ray"}) == "job=ray"
    assert legend_of("{{missing}}", {}) == "value"


@pytest.mark.stack
def test_render_draws_the_fleet_overview_from_the_real_prometheus(tmp_path):
    from app.observability.dashboards.render import main

    out = tmp_path / "overview.png"
    assert main(["--prometheus", engine_url("prometheus"), "--out", str(out), "--minutes", "10"]) == 0
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and 10_000 < len(data) < 200_000


GRAFANA = REPO / "stack" / "grafana"


def test_provisioning_points_grafana_at_prometheus_and_both_dashboard_folders():
    (datasource,) = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "greenhouse.yml").read_text())["datasources"]
    assert (datasource["type"], datasource["url"], datasource["isDefault"]) == ("prometheus", "${GH_PROMETHEUS_URL}", True)
    assert datasource["name"] == "Prometheus"  # the name Ray's own provisioning gives its datasource
    providers = {p["name"]: p for p in yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "greenhouse.yml").read_text())["providers"]}
    assert {name: (p["type"], p["options"]["path"]) for name, p in providers.items()} == {"greenhouse": ("file", "${GH_GRAFANA_DASHBOARDS_DIR}"), "ray": ("file", "${GH_RAY_GRAFANA_DASHBOARDS_DIR}")}
    readme = (GRAFANA / "README.md").read_text()
    assert all(var in readme for var in ("GH_PROMETHEUS_URL", "GH_GRAFANA_DASHBOARDS_DIR", "GH_RAY_GRAFANA_DASHBOARDS_DIR"))


@pytest.mark.stack
def test_the_stacks_ray_head_writes_its_dashboards_where_the_readme_says():
    ray_tmp = Path(os.environ.get("STACK_RAY_TMP_DIR") or f"/tmp/ray-gh-stack-{os.getuid()}")
    folder = ray_tmp / "session_latest" / "metrics" / "grafana" / "dashboards"
    if not folder.is_dir():
        missing(f"no Ray session with Grafana dashboards in {ray_tmp} (is the stack's Ray head up?)")
    names = {p.name for p in folder.glob("*.json")}
    assert {"default_grafana_dashboard.json", "serve_grafana_dashboard.json"} <= names
    ray_default = json.loads((folder / "default_grafana_dashboard.json").read_text())
    # Ray's dashboards choose their Prometheus through a datasource variable with no current value:
    # Grafana's default datasource, which the provisioned one is (isDefault).
    variables = {v["name"]: v for v in ray_default["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    assert "value" not in variables["datasource"].get("current", {})
