"""Every dashboard panel shows data after a short run of the product on the real stack.

The run: the ingest gateway and the control app deployed together on the stack's Ray head behind the
TLS edge; a simulated fleet posts readings in three waves (with a broken record each) with its
devices' tokens, plus requests with a bad and with no token, a resent wave and an undecodable
record on the bus, then a burst of requests with a made-up token (GhAuthFailureBurst fires); the
lake sink runs once as a Ray job (two workers); records it has not read are then deleted from the
bus and a second sink run moves past them (--accept-data-loss); a monitor process follows the run's
topic and the Ray Jobs API; the control app (no model registered under its name, so every decision
is the thermostat fallback) decides and dispatches on demand, refuses a request without a token,
answers 503 when the control topic refuses a command, and rate-limits (clamps) the thermostat's
jump to full heat in a cold window a caller sends. Then every panel must show at least one
series from the stack's Prometheus (one of its queries returns some), except those only a trained
model, a rollout and the closed loop fill: tests/test_cli_demo.py checks those on the demo's run,
and here their queries must still parse.

Wrapped in ``flock /tmp/gh-heavy.lock`` when run by hand: `serve deploy` replaces every Serve
application on the head.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import yaml

from app.bus import OutgoingRecord, open_bus
from app.config import Settings
from app.ingest.client import GatewayClient
from app.metadata import open_metadata
from app.observability.dashboards.definitions import DASHBOARDS
from app.observability.dashboards.prometheus_api import PrometheusApi
from app.orchestration.ray_jobs import job_runtime_env, submit_and_wait
from app.security.credentials import CONTROL_SIMULATE, FORECAST_READ, DeviceRegistry, OperatorRegistry
from app.serve.tls_edge import TlsEdge
from app.serve.tuning import free_port
from app.sim.credentials import FleetCredentials
from app.sim.fleet import FleetSimulator
from tests.helpers.engines import engine_url, stack_setting
from tests.helpers.stack import RAY_CLIENT_ENV, stack_settings

pytestmark = [pytest.mark.stack, pytest.mark.serve]
REPO = Path(__file__).resolve().parents[2]
SERVE_PORT = 8000
# Ray's agent reports every few seconds and Prometheus scrapes every 10 s (stack/prometheus/
# prometheus.yml.in); rates need two samples, so allow a few scrapes.
SERIES_DEADLINE_S = 180  # GhAuthFailureBurst fires a minute after the burst is scraped
WAVE_GAP_S = 15  # longer than Ray's metrics report interval, so each wave is a new sample

# Panel title -> why this run does not fill it: only a trained model, a rollout and the closed loop
# do, which the demo has; tests/test_cli_demo.py requires each to show the demo run's own series
# in the stack's Prometheus (training here would add minutes to a run that is about the rest).
SHOWN_BY_THE_DEMO_RUN: dict[str, str] = {
    "Online forecast error (MAE, 15 min)": "needs a champion model and forecasts falling due 15+ minutes later",
    "Online forecast error (MAE) by horizon": "as above",
    "Forecast error p90 (15 min)": "as above",
    "Forecast errors measured": "as above",
    "Forecast latency p95": "the Forecaster is only called with a model loaded",
    "Serving share": "set for the versions a model alias resolves to",
    "Rollout forecast RMSE": "only while a rollout step has its minimum of errors",
    "Actuator commands": "counted by the greenhouse side applying commands: the demo's closed loop",
}
HEAT_RATE_PCT_PER_MIN = 2.0  # a slow heating valve: the thermostat's jumps are rate-limited (clamped)
AUTH_BURST = 25  # requests with a made-up token: above GhAuthFailureBurst's 20 in 5 minutes


def _serve(args: list[str], ray_address: str) -> subprocess.CompletedProcess:
    serve = str(Path(sys.executable).with_name("serve"))
    return subprocess.run([serve, *args, "--address", ray_address], capture_output=True, text=True, timeout=180, env={**os.environ, **RAY_CLIENT_ENV}, cwd=REPO)


def _wait_healthy(url: str, ca: str, ready=lambda body: True, timeout_s: float = 180) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            res = httpx.get(f"{url}/healthz", timeout=2, verify=ca)
            if res.status_code == 200 and ready(res.json()):
                return res.json()
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"{url} never became healthy")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    run, settings = stack_settings(tmp_path_factory.mktemp("dash"), "dash", partitions=2, sink_batch_records=200)
    settings = settings.model_copy(update={"control": settings.control.model_copy(update={"simulated_plant": True}), "security": settings.security.model_copy(update={"https_port": 0})})
    old = {k: os.environ.get(k) for k in RAY_CLIENT_ENV}
    os.environ.update(RAY_CLIENT_ENV)
    operators = OperatorRegistry.from_settings(settings)
    token = operators.add("dash-loop", [FORECAST_READ, CONTROL_SIMULATE])
    operators.close()
    with TlsEdge(settings, SERVE_PORT) as edge:
        yield {"run": run, "settings": settings, "ray": engine_url("ray"), "edge": edge, "ca": str(edge.tls.ca_path), "token": token}
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    store = open_metadata(settings.metadata_url)
    store.client.drop_database(f"gh_dash_{run}")
    store.close()


@pytest.fixture(scope="module")
def monitor(stack):
    """A monitor process (python -m app.entrypoints.monitor) for this run's topic and sink group, in
    Prometheus's `greenhouse` scrape job through a file_sd target file (the stack's own monitor
    watches the stack's default topic, which this run does not use)."""
    settings: Settings = stack["settings"]
    port = free_port()
    env = {
        **os.environ,
        "GH_DATA_DIR": str(settings.data_dir),
        "GH_BUS_URL": settings.bus_url,
        "GH_METADATA_URL": settings.metadata_url,
        "GH_TOPICS__SENSORS": settings.topics.sensors,
        "GH_TOPICS__PARTITIONS": str(settings.topics.partitions),
        "GH_SINK__GROUP_ID": settings.sink.group_id,
        "GH_RAY__AUTH_TOKEN_FILE": str(settings.ray.auth_token_file or ""),
        "GH_MONITOR__RAY_JOBS_URL": stack["ray"],
        "GH_MONITOR__INTERVAL_S": "5",
    }
    process = subprocess.Popen([sys.executable, "-m", "app.entrypoints.monitor", "--port", str(port)], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    targets = Path(stack_setting("GH_TEST_STACK_RUN_DIR") or "") / "conf" / "prometheus-targets"
    target_file = targets / f"dash-{stack['run']}.json"
    target_file.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"], "labels": {"service": f"monitor-dash-{stack['run']}"}}]))
    try:
        yield port
    finally:
        target_file.unlink(missing_ok=True)
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def apps(stack, tmp_path_factory):
    """The gateway and the control app, one `serve deploy` onto the head; yields their base URLs."""
    settings: Settings = stack["settings"]
    run = stack["run"]
    ingest = yaml.safe_load((REPO / "serve_configs" / "ingest.yaml").read_text())
    control = yaml.safe_load((REPO / "serve_configs" / "control.yaml").read_text())["applications"][0]
    ingest_app = ingest["applications"][0]
    ingest_app.update(name=f"ingest-dash-{run}", route_prefix=f"/dash-{run}", args={"settings": settings.for_replicas()})
    replicas = settings.for_replicas()
    # a model name nothing registered: every decision is the thermostat fallback (reason: no model)
    control.update(
        name=f"control-dash-{run}",
        route_prefix=f"/climate-dash-{run}",
        args={
            "settings": {
                **replicas,
                "control": {**replicas["control"], "model_name": f"gh-dash-none-{run}", "limits": {**replicas["control"]["limits"], "heat_rate_pct_per_min": HEAT_RATE_PCT_PER_MIN}},
            }
        },
    )
    config = {**ingest, "applications": [ingest_app, control]}
    path = tmp_path_factory.mktemp("serve") / "dash.yaml"
    path.write_text(yaml.safe_dump(config))
    deployed = _serve(["deploy", str(path)], stack["ray"])
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    urls = {"ingest": f"{stack['edge'].url}{ingest_app['route_prefix']}", "control": f"{stack['edge'].url}{control['route_prefix']}"}
    _wait_healthy(urls["ingest"], stack["ca"])
    yield urls
    _serve(["shutdown", "-y"], stack["ray"])


def _post_readings(stack: dict, url: str) -> tuple[datetime, list[dict]]:
    """Three hours of readings up to now from two greenhouses in WAVES posts WAVE_GAP_S apart, each
    wave with a broken record and two refused requests (a made-up token, no token), then the
    middle wave once more (duplicates) and a record the sink cannot decode, written straight to
    the bus; returns the newest reading's time. Waves, because a Ray counter's series appears with its first increment
    in it: only later increments make a rate (docs/observability.md)."""
    settings: Settings = stack["settings"]
    start = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(hours=3)
    fleet = FleetSimulator(2, start, step_s=60, seed=5)
    steps = list(fleet.iter_steps(3 * 3600))  # enough history for the features' lags
    credentials = FleetCredentials.for_fleet(DeviceRegistry.from_settings(settings), fleet)
    topic_url = f"{url}/topics/{settings.topics.sensors}"
    headers = {"content-type": "application/vnd.kafka.json.v2+json"}
    cut = len(steps) - 2 * 10  # most history at once, then two waves of ten minutes each
    waves = [steps[:cut], steps[cut : cut + 10], steps[cut + 10 :]]
    with GatewayClient(url, topic=settings.topics.sensors, batch_size=50, token_for=credentials.token_for, verify=stack["ca"], max_attempts=8) as client:
        for number, wave in enumerate(waves):
            if number:
                time.sleep(WAVE_GAP_S)
            readings = [r for step in wave for r in step]
            broken = {**readings[0], "measurements": {"rh_pct": 140.0}} if number % 2 == 0 else {**readings[0], "ts": "not-a-time"}
            before = client.tally.accepted
            tally = client.post([*readings, broken])
            assert tally.accepted - before == len(readings)
            body = {"records": [{"value": readings[0]}]}
            made_up = httpx.post(topic_url, json=body, headers={**headers, "authorization": "Bearer ghd_made_up_token"}, verify=stack["ca"])
            missing = httpx.post(topic_url, json=body, headers=headers, verify=stack["ca"])
            assert made_up.status_code == 401 and missing.status_code == 401, (made_up.text, missing.text)
    assert tally.rejected == len(waves)
    for _ in range(AUTH_BURST):  # someone knocking with a token that does not exist
        assert httpx.post(topic_url, json=body, headers={**headers, "authorization": "Bearer ghd_knock_knock"}, verify=stack["ca"]).status_code == 401
    with GatewayClient(url, topic=settings.topics.sensors, batch_size=50, token_for=credentials.token_for, verify=stack["ca"], max_attempts=8) as client:
        again = [r for step in waves[1] for r in step]
        assert client.post(again).accepted == len(again)  # a device resending a batch: the sink drops the copies
    # what only a client bypassing the gateway can put on the bus: the sink dead-letters it
    bus = open_bus(settings.bus_url)
    try:
        assert all(r.error is None for r in bus.produce(settings.topics.sensors, [OutgoingRecord(b"not json", partition=0)]))
    finally:
        bus.close()
    return fleet.now, [r for step in steps[-120:] for r in step if r["greenhouse_id"] == "gh-01"]  # two hours: the features' lags


def _run_sink(stack: dict, *, workers: int = 2, accept_data_loss: bool = False) -> dict:
    settings: Settings = stack["settings"]
    env_vars = {
        "GH_BUS_URL": settings.bus_url,
        "GH_LAKE_URL": settings.lake_url,
        "GH_METADATA_URL": settings.metadata_url,
        "GH_TOPICS__SENSORS": settings.topics.sensors,
        "GH_TOPICS__DEADLETTER": settings.topics.deadletter,
        "GH_TOPICS__PARTITIONS": str(settings.topics.partitions),
        "GH_SINK__GROUP_ID": settings.sink.group_id,
        "GH_SINK__MAX_BATCH_RECORDS": str(settings.sink.max_batch_records),
    }
    # Two workers: the sink records its metrics as Ray actors (a single-worker sink never starts Ray,
    # so it has no metrics agent to report to); idle for 15 polls (~15 s), longer than the workers'
    # metrics report interval, so their counts reach the agent before they exit.
    entrypoint = f"python -m jobs.sink --workers {workers} --idle-polls 15" + (" --accept-data-loss" if accept_data_loss else "")
    submission = f"sink-dash-{stack['run']}" + ("-accepting-loss" if accept_data_loss else "")
    result = submit_and_wait(stack["ray"], entrypoint, submission_id=submission, runtime_env=job_runtime_env(REPO, env_vars), timeout_s=300)
    assert result.ok and result.summary, result.logs[-3000:]
    return result.summary


def _lose_records(stack: dict, partition: int = 0, count: int = 5) -> None:
    """Records the sink has not read, deleted from the bus (as retention would), then a sink run
    that moves past them: ray_gh_bus_offsets_lost_total{action="skipped"} (GhBusRecordsLostSkipped).
    Partition 0, which the sink has a checkpoint of (the undecodable record went there): in a
    partition never checkpointed the sink starts at the earliest record held, so nothing is lost."""
    settings: Settings = stack["settings"]
    bus = open_bus(settings.bus_url)
    try:
        produced = bus.produce(settings.topics.sensors, [OutgoingRecord(b"lost", partition=partition) for _ in range(count)])
        assert all(r.error is None for r in produced)
        bus.delete_records(settings.topics.sensors, {partition: max(r.offset for r in produced if r.offset is not None) + 1})
    finally:
        bus.close()
    # one worker (it joins the job's Ray for its metrics): with two, a partition handed from one
    # to the other before any file moves its checkpoint past the gap is counted by both
    summary = _run_sink(stack, workers=1, accept_data_loss=True)
    assert summary["offsets_skipped"] == count, summary


def _refuse_a_command(stack: dict, url: str, as_of: datetime) -> None:
    """The control topic refuses records as large as a command (max.message.bytes): /control
    answers 503 with code 50321, counted in ray_gh_control_dispatch_failures_total; then it takes
    them again."""
    from kafka.admin import ConfigResource, ConfigResourceType

    settings: Settings = stack["settings"]
    bus = open_bus(settings.bus_url)
    try:
        bus.admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, settings.topics.control, configs={"max.message.bytes": "64"})])  # incremental: only this key
        time.sleep(2)  # the brokers apply a topic's config change asynchronously
        with httpx.Client(base_url=url, timeout=60, verify=stack["ca"], headers={"Authorization": f"Bearer {stack['token']}"}) as c:
            res = c.post("/control", json={"greenhouse_id": "gh-01", "as_of": as_of.isoformat(), "request_id": "refused"})
        assert res.status_code == 503 and res.json()["error_code"] == 50321, res.text
    finally:
        bus.admin.reset_configs([ConfigResource(ConfigResourceType.TOPIC, settings.topics.control, configs=["max.message.bytes"])])
        bus.close()


def _clamp_the_heating(stack: dict, url: str, recent: list[dict]) -> None:
    """A window sent by the caller in which gh-01 is cold with its heating off: the thermostat wants
    full heat, the heating's rate limit of this run (HEAT_RATE_PCT_PER_MIN) allows one step of it
    (counted in ray_gh_control_setpoints_clamped_total{actuator="heat_pct"})."""
    cold = [
        {**r, "measurements": {**r["measurements"], **({"air_temp_c": 5.0} if "air_temp_c" in r["measurements"] else {}), **({"heat_pct": 0.0} if "heat_pct" in r["measurements"] else {})}}
        for r in recent
    ]
    settings: Settings = stack["settings"]
    with httpx.Client(base_url=url, timeout=60, verify=stack["ca"], headers={"Authorization": f"Bearer {stack['token']}"}) as c:
        res = c.post("/control", json={"greenhouse_id": "gh-01", "readings": cold})
    assert res.status_code == 200, res.text
    assert res.json()["command"]["setpoints"]["heat_pct"] == HEAT_RATE_PCT_PER_MIN * settings.control.interval_s / 60, res.json()


def _decide(stack: dict, url: str, as_of: datetime) -> None:
    _wait_healthy(url, stack["ca"], ready=lambda body: len(body.get("greenhouses") or []) == 2, timeout_s=120)
    assert httpx.post(f"{url}/control", json={"greenhouse_id": "gh-01"}, verify=stack["ca"]).status_code == 401
    with httpx.Client(base_url=url, timeout=60, verify=stack["ca"], headers={"Authorization": f"Bearer {stack['token']}"}) as c:
        for greenhouse in ("gh-01", "gh-02"):
            res = c.post("/control", json={"greenhouse_id": greenhouse, "as_of": as_of.isoformat()})
            assert res.status_code == 200, res.text
            assert res.json()["decision"]["mode"] == "thermostat", res.json()


def _panels_showing_data(prometheus: PrometheusApi, titles: set[str]) -> set[str]:
    """The panels among ``titles`` that show data now: one of their queries returns a series."""
    return {panel.title for spec in DASHBOARDS for panel, query in spec.queries() if panel.title in titles and prometheus.query(query.expr)}


def test_every_panel_has_series_after_a_short_run(stack, apps, monitor):
    as_of, recent = _post_readings(stack, apps["ingest"])
    _run_sink(stack)
    _lose_records(stack)
    _decide(stack, apps["control"], as_of)
    _refuse_a_command(stack, apps["control"], as_of)
    _clamp_the_heating(stack, apps["control"], recent)

    all_titles = {panel.title for spec in DASHBOARDS for panel in spec.panels}
    assert set(SHOWN_BY_THE_DEMO_RUN) <= all_titles, f"SHOWN_BY_THE_DEMO_RUN names panels that do not exist: {sorted(set(SHOWN_BY_THE_DEMO_RUN) - all_titles)}"
    expected = all_titles - set(SHOWN_BY_THE_DEMO_RUN)
    with PrometheusApi(engine_url("prometheus")) as prometheus:
        deadline = time.monotonic() + SERIES_DEADLINE_S
        # the alert fires a minute after the burst is scraped: wait for it too
        while ((empty := expected - _panels_showing_data(prometheus, expected)) or not (burst := _burst_alert(prometheus))) and time.monotonic() < deadline:
            time.sleep(5)
        for spec in DASHBOARDS:  # the others' queries run too (a parse error raises)
            for panel, query in spec.queries():
                if panel.title in SHOWN_BY_THE_DEMO_RUN:
                    prometheus.query(query.expr)
    print(f"\npanels without series: {sorted(empty)}")
    assert empty == set(), f"panels without series after the run: {sorted(empty)}"
    assert burst, "the burst of made-up tokens did not fire GhAuthFailureBurst"


def _burst_alert(prometheus: PrometheusApi) -> list[dict]:
    return prometheus.query('ALERTS{alertstate="firing", alertname="GhAuthFailureBurst", surface="ingest"}')
