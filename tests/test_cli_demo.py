"""The `greenhouse` CLI as a user meets it: help, bad input, and a short demo run end to end."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from app.observability.dashboards.definitions import DASHBOARDS, FLEET_OVERVIEW
from app.observability.dashboards.prometheus_api import PrometheusApi
from app.observability.dashboards.render import render
from app.observability.dashboards.spec import DashboardSpec
from app.serve.tuning import free_port
from tests.helpers.engines import answering_engine_url, engine_url, missing, stack_setting
from tests.observability.test_dashboards_live import SHOWN_BY_THE_DEMO_RUN

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "app.cli.main"]
DEMO_SERVICE_LABEL = "demo"  # the target label the stack's Prometheus gives the demo's Ray


def run(args: list[str], timeout: float = 60, **env) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + args, cwd=REPO, capture_output=True, text=True, timeout=timeout, env={**os.environ, **env})


def test_help_explains_commands():
    out = run(["--help"])
    assert out.returncode == 0
    for command in ("demo", "sink", "simulate", "config", "lake"):
        assert command in out.stdout
    demo_help = run(["demo", "--help"])
    assert "--greenhouses" in demo_help.stdout and "--days" in demo_help.stdout


def test_bad_input_gets_a_message_and_nonzero_exit(tmp_path):
    out = run(["demo", "--greenhouses", "0"])
    assert out.returncode == 2 and "greenhouses" in (out.stderr + out.stdout)
    out = run(["config", "--config", str(tmp_path / "missing.yaml")])
    assert out.returncode == 2 and "config file not found" in out.stderr
    out = run(["config"], GH_TOPICS__PARTITIONS="zero")
    assert out.returncode == 2 and "invalid settings" in out.stderr


def test_config_shows_effective_settings_with_url_credentials_masked(tmp_path):
    out = run(["config"], GH_DATA_DIR=str(tmp_path), GH_METADATA_URL="mongodb://gh:s3cret@db:27017/gh?tls=true&tlsCertificateKeyFilePassword=p4ss")
    assert out.returncode == 0
    data = json.loads(out.stdout)
    assert data["bus_url"] == f"file://{tmp_path}/bus"
    assert data["metadata_url"] == "mongodb://gh:***@db:27017/gh?tls=true&tlsCertificateKeyFilePassword=***"
    assert "s3cret" not in out.stdout and "p4ss" not in out.stdout


@pytest.mark.serve
def test_short_demo_puts_exactly_the_accepted_readings_in_the_lake(tmp_path):
    out = run(["demo", "--data-only", "--days", "0.1", "--fault-rate", "0.02", "--data-dir", str(tmp_path / "demo"), "--port", str(free_port())], timeout=300, GH_SECURITY__HTTPS_PORT=str(free_port()))
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True
    assert summary["readings_generated"] == 4 * 3 * 144  # 4 greenhouses (the default) x 3 devices x 144 steps
    assert summary["lake_rows"] == summary["readings_accepted"] > 0
    assert summary["readings_rejected"] == sum(summary["rejected_by_reason"].values()) > 0
    assert summary["dead_letters"] == summary["readings_rejected"]
    assert "Demo summary" in out.stderr and "sinking the bus into the lake" in out.stderr
    lake = run(["lake"], GH_DATA_DIR=str(tmp_path / "demo"))
    assert lake.returncode == 0 and "gh-01" in lake.stderr and f"total rows: {summary['lake_rows']}" in lake.stderr


@dataclass(frozen=True)
class DemoRun:
    """One run of ``greenhouse demo`` and what a test needs to read it back."""

    out: subprocess.CompletedProcess
    data_dir: Path
    started_s: float  # Unix time
    ended_s: float
    prometheus_url: str | None  # the stack's Prometheus, which scraped the run's Ray; None: not running


def _demo_scrape_target(metrics_port: int) -> Path | None:
    """A target file putting the demo's Ray metrics port into the stack's Prometheus (its
    `greenhouse` job reads the stack's prometheus-targets folder), when that Prometheus runs."""
    run_dir = stack_setting("GH_TEST_STACK_RUN_DIR")
    if answering_engine_url("prometheus") is None or not run_dir:
        return None
    target = Path(run_dir) / "conf" / "prometheus-targets" / f"demo-{metrics_port}.json"
    target.write_text(json.dumps([{"targets": [f"127.0.0.1:{metrics_port}"], "labels": {"service": DEMO_SERVICE_LABEL}}]))
    return target


@pytest.fixture(scope="module")
def full_demo(tmp_path_factory) -> DemoRun:
    """The whole demo at a small size, once for the tests that read it: 4 greenhouses x 2 days of
    data, a 2-trial search, then 4.8 simulated hours under the control loop next to the
    thermostat, with the rollout drill. When the stack's Prometheus runs, it scrapes the run's Ray
    (the port the demo announces), as a user's Prometheus would."""
    data_dir = tmp_path_factory.mktemp("full") / "full"
    metrics_port = free_port()
    target = _demo_scrape_target(metrics_port)
    started = time.time()
    try:
        out = run(
            ["demo", "--days", "2", "--tune-samples", "2", "--control-days", "0.2", "--data-dir", str(data_dir), "--port", str(free_port())],
            timeout=1200,
            GH_SECURITY__HTTPS_PORT=str(free_port()),
            GH_RAY__METRICS_EXPORT_PORT=str(metrics_port),
        )
    finally:
        if target is not None:
            target.unlink(missing_ok=True)  # the run's Ray is gone: no target left down
    return DemoRun(out, data_dir, started, time.time(), answering_engine_url("prometheus") if target is not None else None)


def test_full_demo_learns_serves_controls_and_rolls_out(full_demo):
    """The demo's summary, report, rollouts and lineage (the run of :func:`full_demo`); the
    control loop's figures below follow from its size."""
    out, data_dir = full_demo.out, full_demo.data_dir
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True and summary["promoted"] is True and summary["model_version"] == "1"
    assert summary["tune_trials"] == 2 and summary["forecast_skill_15min"] is not None
    assert "Ray dashboard: http://127.0.0.1:" in out.stderr and "Ray metrics: http://127.0.0.1:" in out.stderr
    control = summary["control"]
    # 0.2 day = 288 one-minute steps -> 57 counted intervals x 4 greenhouses, each decided once by
    # the control loop and applied in its interval (the warm-up hour before is not counted)
    assert control["control_requests"] == 228 and control["control_missed"] == 0
    assert control["commands_applied"] >= 228 and control["control_modes"].get("mpc", 0) >= 200
    for key in ("model_in_band_pct", "thermostat_in_band_pct", "model_rh_above_max_pct", "thermostat_rh_above_max_pct"):
        assert 0 <= control[key] <= 100
    assert control["model_heating_kwh"] >= 0 and control["thermostat_heating_kwh"] >= 0
    assert summary["control_verdict"].startswith(("better", "not better"))
    report = Path(summary["report"])
    assert report.exists() and (report.parent / "controllers.png").stat().st_size > 10_000
    assert "Demo summary" in out.stderr and "closed-loop control, model vs thermostat" in out.stderr
    _check_rollouts(summary, data_dir, report)
    _check_lineage(data_dir)


def scoped_to_service(expr: str, service: str) -> str:
    """``expr`` with every ``ray_gh_*`` selector narrowed to the target label ``service`` (so that
    only the demo's own series count, not those other runs left in the same Prometheus)."""

    def narrow(match: re.Match) -> str:
        inner = match.group(2)
        return f'{match.group(1)}{{service="{service}"' + (f", {inner}" if inner else "") + "}"

    return re.sub(r"\b(ray_gh_[a-z0-9_]+)(?:\{([^}]*)\})?", narrow, expr)


def scoped_dashboard(spec: DashboardSpec, service: str) -> DashboardSpec:
    """``spec`` with every query's product series narrowed to ``service`` (:func:`scoped_to_service`)."""
    panels = tuple(replace(panel, queries=tuple(replace(q, expr=scoped_to_service(q.expr, service)) for q in panel.queries)) for panel in spec.panels)
    return replace(spec, panels=panels)


@pytest.mark.stack
def test_the_model_and_control_panels_show_the_demo_run(full_demo, tmp_path):
    """The dashboards a demo user watches: every panel that only a trained model, a rollout and
    the closed loop fill (SHOWN_BY_THE_DEMO_RUN of tests/observability/test_dashboards_live.py,
    which checks all the others on a run of its own) has series of the demo's own Ray during the
    run, in the stack's Prometheus. The fleet overview is drawn from the run;
    GH_DEMO_PICTURE=docs/img/ops-overview.png puts it where the README shows it."""
    if full_demo.prometheus_url is None:
        engine_url("prometheus")  # skips (fails under CI) when the stack's Prometheus is down
        missing("the stack's run dir is unknown (stack/stack env --tests names it)")
    assert full_demo.out.returncode == 0, full_demo.out.stderr[-3000:]
    window = {"start_seconds": full_demo.started_s, "end_seconds": full_demo.ended_s, "step_seconds": 15.0}
    with PrometheusApi(str(full_demo.prometheus_url)) as prometheus:
        assert prometheus.query_range(f'up{{service="{DEMO_SERVICE_LABEL}"}} == 1', **window), "the stack's Prometheus never scraped the demo's Ray"
        shown: dict[str, bool] = {}
        for spec in DASHBOARDS:
            for panel, query in spec.queries():
                if panel.title in SHOWN_BY_THE_DEMO_RUN and not shown.get(panel.title):  # a panel shows data when one of its queries has some
                    shown[panel.title] = _has_points(prometheus.query_range(scoped_to_service(query.expr, DEMO_SERVICE_LABEL), **window))
        empty = sorted(title for title, has in shown.items() if not has)
        minutes = (full_demo.ended_s - full_demo.started_s) / 60
        picture = render(
            scoped_dashboard(FLEET_OVERVIEW, DEMO_SERVICE_LABEL), prometheus, Path(os.environ.get("GH_DEMO_PICTURE") or tmp_path / "ops-overview.png"), minutes=minutes, end_seconds=full_demo.ended_s
        )
    assert set(shown) == set(SHOWN_BY_THE_DEMO_RUN), f"SHOWN_BY_THE_DEMO_RUN names panels that do not exist: {sorted(set(SHOWN_BY_THE_DEMO_RUN) - set(shown))}"
    assert empty == [], f"panels without the demo's series during its run: {empty}"
    assert picture.stat().st_size > 20_000


def _has_points(series: list) -> bool:
    return any(not math.isnan(value) for s in series for _, value in s.points)


def _check_rollouts(summary: dict, data_dir: Path, report: Path) -> None:
    """The drill ended as it should, and the report and the ``deployments`` documents agree."""
    from html import escape

    from app.metadata import DEPLOYMENTS, open_metadata

    degraded, good = summary["candidates"]["degraded"], summary["candidates"]["good"]
    assert [(r["label"], r["candidate"], r["status"]) for r in summary["rollouts"]] == [("degraded", degraded, "rolled_back"), ("good", good, "promoted")]
    assert summary["champion_after"] == good
    assert summary["version_errors"][degraded]["forecast_rmse_c"] > summary["version_errors"][good]["forecast_rmse_c"]
    deployments = open_metadata(f"file://{data_dir}/metadata").collection(DEPLOYMENTS)
    html = report.read_text()
    for rollout in summary["rollouts"]:
        docs = deployments.find({"rollout_id": rollout["rollout_id"]}, sort=[("revision", 1)])
        assert [(d["event"], d["fraction"]) for d in docs] == [(s["event"], s["fraction"]) for s in rollout["steps"]]
        assert docs[-1]["event"] == {"rolled_back": "rollback", "promoted": "promote"}[rollout["status"]]
        assert rollout["rollout_id"] in html and all(escape(str(d["reason"])) in html for d in docs)


def _check_lineage(data_dir: Path) -> None:
    """`greenhouse lineage` on a command of the demo's control loop: the whole chain, each link
    the stores' own (decision, model version and its run, feature set, lake batches, offsets)."""
    from app.config import Settings
    from app.metadata import DECISIONS, FEATURE_SETS, LAKE_BATCHES, open_metadata
    from app.tracking import Tracking

    settings = Settings(data_dir=data_dir)
    store = open_metadata(settings.metadata_url)
    decision = store.collection(DECISIONS).find_one({"source": "loop", "mode": "mpc"})
    out = run(["lineage", decision["command_id"], "--json"], timeout=120, GH_DATA_DIR=str(data_dir))
    assert out.returncode == 0, out.stderr[-2000:]
    chain = json.loads(out.stdout)
    links = {link["kind"]: link for link in chain["links"]}
    assert chain["complete"] is True and not [k for k, link in links.items() if link.get("missing")]
    assert links["decision"]["id"] == decision["_id"] and links["readings"]["facts"]["bus_offsets"] == decision["readings"]["bus_offsets"]
    model = decision["model"]
    version = Tracking(settings.tracking_url).model_version(model["name"], model["version"])
    assert links["model_version"]["id"] == f"{model['name']}/{model['version']}" and links["mlflow_run"]["id"] == version["run_id"]
    feature_set = store.collection(FEATURE_SETS).find_one({"_id": links["feature_set"]["id"]})
    assert feature_set is not None and links["lake_batches"]["facts"]["count"] == len(feature_set["source_batches"])
    batches = store.collection(LAKE_BATCHES).find({"status": "committed", "kind": "raw_sensors"})
    expected = {
        (b["partition"], min(x["offset_start"] for x in batches if x["partition"] == b["partition"]), max(x["offset_end"] for x in batches if x["partition"] == b["partition"])) for b in batches
    }
    got = {(p["partition"], p["offset_start"], p["offset_end"]) for p in links["bus_offsets"]["facts"]["partitions"]}
    assert got == expected
