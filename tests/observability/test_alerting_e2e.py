"""Alerts end to end on the real stack: Prometheus evaluates the rules, Alertmanager routes what
fires to the webhook receiver, and the receiver has it.

- A greenhouse goes silent: its device posted readings to the real ingest gateway (Serve on the
  stack's Ray head) and stopped; ``GhGreenhouseSilent`` for that greenhouse arrives, and none for a
  greenhouse whose device keeps posting. The rule is the real one, loaded by the stack's Prometheus
  from stack/prometheus/rules/: its 15-minute threshold is met at once because the silent
  device's last reading is dated 16 minutes ago (it "stopped" then), so only the rule's own
  ``for: 2m`` is waited for, in real time.
- The sink falls behind: records keep arriving on a topic no sink reads; a real monitor process
  (``python -m app.entrypoints.monitor``) measures ``gh_sink_lag_records`` and Prometheus scrapes it
  through a file_sd target; ``GhSinkLagGrowing`` arrives. That rule's windows (``deriv`` over
  ``[15m:1m]``, ``for: 15m``) cannot be waited for in a test, so the test loads a time-scaled copy
  derived in code from the real rule (:func:`scaled_rule`): every duration divided by
  ``TIME_SCALE`` (20: ``[45s:3s]``, ``for: 45s``), threshold and expression otherwise unchanged,
  its metric selected to this run's topic, and a label ``e2e_run`` so only this run's copy is
  waited for. The copy goes to the stack's extra rules folder (``conf/prometheus-rules/``) and is
  removed afterwards.

Both scenarios start before either test waits, so the module takes about as long as the longer of
the two (about 3 minutes: deploying the gateway, then ``for: 2m``). Fresh greenhouse ids, topic,
sink group and database per run: the stack may be shared with other tests.
Needs `stack/stack up` with alertmanager and monitor (stack/with-stack starts them).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from app.bus import OutgoingRecord, open_bus
from app.config import Settings
from app.ingest.client import GatewayClient
from app.metadata import open_metadata
from app.security.credentials import DeviceRegistry
from app.serve.tuning import free_port
from app.sim.credentials import FleetCredentials
from tests.helpers.engines import engine_url, missing, stack_setting
from tests.helpers.stack import RAY_CLIENT_ENV, stack_settings

pytestmark = pytest.mark.stack

REPO = Path(__file__).resolve().parents[2]
RULES_FILE = REPO / "stack" / "prometheus" / "rules" / "greenhouse.rules.yml"
SERVE_URL = "http://127.0.0.1:8000"  # Serve's HTTP port on the stack's head (HAProxy)
LAG_METRIC = "gh_sink_lag_records"  # the monitor's gauge (prometheus_client: no ray_ prefix)
TIME_SCALE = 20  # GhSinkLagGrowing's durations are divided by this in the test's copy
SILENT_FOR = timedelta(minutes=16)  # the silent device's last reading is this old: over the 15-min threshold
ALERT_WAIT_S = 240.0  # longest wait for one alert at the receiver

_DURATION = re.compile(r"(\d+)([smh])")
_SECONDS = {"s": 1, "m": 60, "h": 3600}


# --- the time-scaled rule ------------------------------------------------------------------------


def scale_duration(duration: str, scale: int) -> str:
    """A Prometheus duration divided by ``scale``, in whole seconds (``"15m"``, 20 -> ``"45s"``)."""
    seconds = sum(int(n) * _SECONDS[unit] for n, unit in _DURATION.findall(duration))
    assert seconds and _DURATION.sub("", duration) == "", f"not a duration this test scales: {duration!r}"
    assert seconds % scale == 0, f"{duration} is not a whole number of seconds divided by {scale}"
    return f"{seconds // scale}s"


def scaled_rule(rule: dict[str, Any], scale: int, metric: str, selector: str, run: str) -> dict[str, Any]:
    """A copy of an alerting rule for a short test: every range, subquery step and ``for:``
    divided by ``scale``; ``metric`` restricted by ``selector`` (this run's series only); the label
    ``e2e_run`` added. Threshold, aggregation and annotations stay the real rule's."""
    expr = re.sub(r"\[([0-9smh]+)(?::([0-9smh]+))?\]", lambda m: "[" + ":".join(scale_duration(d, scale) for d in m.groups() if d) + "]", rule["expr"])
    expr = re.sub(rf"(?<![A-Za-z0-9_]){metric}(?![A-Za-z0-9_{{])", f"{metric}{{{selector}}}", expr)
    return {**rule, "expr": expr, "for": scale_duration(rule["for"], scale), "labels": {**rule.get("labels", {}), "e2e_run": run}}


def real_rule(alert: str) -> dict[str, Any]:
    """The alerting rule named ``alert`` in the stack's rules file."""
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    (rule,) = [r for g in groups for r in g["rules"] if r.get("alert") == alert]
    return rule


# --- the alerting path ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alerting() -> dict[str, str]:
    """Prometheus, Alertmanager and the receiver of the stack, and the stack's run dir."""
    prometheus = engine_url("prometheus")
    receiver = stack_setting("GH_TEST_ALERT_RECEIVER_URL") or "http://127.0.0.1:9194/alerts"
    alertmanager = stack_setting("GH_TEST_ALERTMANAGER_URL") or "http://127.0.0.1:9193"
    for name, url in (("alert-receiver", receiver.rsplit("/", 1)[0] + "/-/ready"), ("alertmanager", f"{alertmanager}/-/ready")):
        try:
            httpx.get(url, timeout=3).raise_for_status()
        except httpx.HTTPError:
            missing(f"{name} does not answer at {url}; start it with `stack/stack up alertmanager`")
    active = httpx.get(f"{prometheus}/api/v1/alertmanagers", timeout=5).json()["data"]["activeAlertmanagers"]
    assert any(alertmanager.split("//")[1] in a["url"] for a in active), f"Prometheus does not send to {alertmanager}: {active} (`stack/stack up prometheus` renders its config again)"
    run_dir = stack_setting("GH_TEST_STACK_RUN_DIR")
    if not run_dir:
        missing("GH_TEST_STACK_RUN_DIR is not set and `stack/stack env --tests` did not say")
    return {"prometheus": prometheus, "receiver": receiver, "run_dir": str(run_dir)}


def received(alerting: dict[str, str], **labels: str) -> list[dict[str, Any]]:
    return httpx.get(alerting["receiver"], params=labels, timeout=5).json()["alerts"]


def prometheus_alerts(alerting: dict[str, str], alertname: str) -> list[dict[str, Any]]:
    alerts = httpx.get(f"{alerting['prometheus']}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return [a for a in alerts if a["labels"].get("alertname") == alertname]


def wait_for_alert(alerting: dict[str, str], **labels: str) -> dict[str, Any]:
    """The first firing alert with these labels at the receiver (fails after ALERT_WAIT_S)."""
    deadline = time.monotonic() + ALERT_WAIT_S
    while time.monotonic() < deadline:
        firing = [a for a in received(alerting, **labels) if a["status"] == "firing"]
        if firing:
            return firing[0]
        time.sleep(2)
    states = [(a["labels"], a["state"]) for a in prometheus_alerts(alerting, labels["alertname"])]
    pytest.fail(f"no firing {labels} at the receiver after {ALERT_WAIT_S:.0f} s; Prometheus has {states}")


def reload_prometheus(alerting: dict[str, str]) -> None:
    httpx.post(f"{alerting['prometheus']}/-/reload", timeout=30).raise_for_status()


# --- scenario 1: a greenhouse goes silent ----------------------------------------------------------


def serve_on_head(script: str, *args: str) -> None:
    """Run a Serve call as a driver of the stack's Ray head (a process of its own: this one may
    hold a local Ray instance of other tests)."""
    gcs = stack_setting("GH_TEST_RAY_GCS_ADDRESS") or "127.0.0.1:6379"
    env = {**os.environ, **RAY_CLIENT_ENV}
    done = subprocess.run([sys.executable, "-c", script, gcs, *args], capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]


DEPLOY = """
import json, sys
import ray
from ray import serve
from app.serve.ingest import build_app
ray.init(address=sys.argv[1], logging_level="WARNING")
serve.run(build_app({"settings": json.loads(sys.argv[2])}), name=sys.argv[3], route_prefix=sys.argv[4])
"""

DELETE = """
import sys
import ray
from ray import serve
ray.init(address=sys.argv[1], logging_level="WARNING")
serve.delete(sys.argv[2])
"""


def create_topic(settings: Settings) -> None:
    bus = open_bus(settings.bus_url)
    try:
        bus.create_topic(settings.topics.sensors, 1)
    finally:
        bus.close()


def reading(greenhouse_id: str, device_id: str, at: datetime) -> dict[str, Any]:
    return {"greenhouse_id": greenhouse_id, "device_id": device_id, "ts": at.isoformat().replace("+00:00", "Z"), "measurements": {"air_temp_c": 21.0, "rh_pct": 70.0}}


def keep_posting(client: GatewayClient, greenhouse_id: str, device_id: str, stop: threading.Event) -> None:
    """A device that keeps working: a current reading every 5 s until ``stop``."""
    while not stop.is_set():
        client.post([reading(greenhouse_id, device_id, datetime.now(timezone.utc))])
        stop.wait(5)


@pytest.fixture(scope="module")
def silent_greenhouse(alerting, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """The gateway on the head; greenhouse ``silent``'s device posted ten minutes of readings and
    stopped 16 minutes ago; greenhouse ``live``'s device keeps posting."""
    engine_url("ray")  # skips (fails under CI) when the head does not answer
    run, settings = stack_settings(tmp_path_factory.mktemp("silent"), "alerts", partitions=1, sink_batch_records=100)
    silent, live = f"gh-silent-{run}", f"gh-live-{run}"
    credentials = FleetCredentials.register(DeviceRegistry.from_settings(settings), [(f"{silent}-climate", silent), (f"{live}-climate", live)])
    create_topic(settings)
    name = f"alerts-{run}"
    serve_on_head(DEPLOY, json.dumps(settings.for_replicas()), name, f"/{name}")
    stop = threading.Event()
    with GatewayClient(f"{SERVE_URL}/{name}", topic=settings.topics.sensors, token_for=credentials.token_for, max_attempts=8) as client:
        stopped_at = datetime.now(timezone.utc) - SILENT_FOR
        tally = client.post([reading(silent, f"{silent}-climate", stopped_at - timedelta(minutes=m)) for m in range(10, -1, -1)])
        assert tally.accepted == 11 and tally.rejected == 0, tally
        poster = threading.Thread(target=keep_posting, args=(client, live, f"{live}-climate", stop), daemon=True)
        poster.start()
        try:
            yield {"silent": silent, "live": live}
        finally:
            stop.set()
            poster.join(30)
            serve_on_head(DELETE, name)
            store = open_metadata(settings.metadata_url)
            store.client.drop_database(f"gh_alerts_{run}")
            store.close()


# --- scenario 2: the sink falls behind -------------------------------------------------------------


def keep_producing(settings: Settings, stop: threading.Event) -> None:
    """Records keep arriving on the topic (no sink reads it): 1,200 at once, then 100 every 2 s."""
    bus = open_bus(settings.bus_url)
    batch = 1200
    try:
        while not stop.is_set():
            bus.produce(settings.topics.sensors, [OutgoingRecord(value=b'{"n": %d}' % i, partition=0) for i in range(batch)])
            batch = 100
            stop.wait(2)
    finally:
        bus.close()


def wait_until_scraped(alerting: dict[str, str], query: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if httpx.get(f"{alerting['prometheus']}/api/v1/query", params={"query": query}, timeout=5).json()["data"]["result"]:
            return
        time.sleep(2)
    pytest.fail(f"Prometheus has no {query} after {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def lagging_sink(alerting, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """A fresh topic filling up with no sink, a monitor on it scraped by Prometheus, and the
    time-scaled GhSinkLagGrowing for that topic loaded."""
    run, settings = stack_settings(tmp_path_factory.mktemp("lag"), "lag", partitions=1, sink_batch_records=100)
    topic = settings.topics.sensors
    create_topic(settings)
    port = free_port()
    env = {
        **os.environ,
        "GH_BUS_URL": settings.bus_url,
        "GH_METADATA_URL": settings.metadata_url,
        "GH_TOPICS__SENSORS": topic,
        "GH_TOPICS__PARTITIONS": "1",
        "GH_SINK__GROUP_ID": settings.sink.group_id,
        "GH_DATA_DIR": str(settings.data_dir),
        "GH_RAY__AUTH_TOKEN_FILE": settings.ray.auth_token_file or "",
    }
    log = (settings.data_dir / "monitor.log").open("w")
    monitor = subprocess.Popen([sys.executable, "-m", "app.entrypoints.monitor", "--port", str(port), "--interval-s", "2"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    conf = Path(alerting["run_dir"]) / "conf"
    target = conf / "prometheus-targets" / f"e2e-monitor-{run}.json"
    rules = conf / "prometheus-rules" / f"e2e-{run}.rules.yml"
    rule = scaled_rule(real_rule("GhSinkLagGrowing"), TIME_SCALE, LAG_METRIC, f'topic="{topic}"', run)
    stop = threading.Event()
    producer = threading.Thread(target=keep_producing, args=(settings, stop), daemon=True)
    try:
        target.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"], "labels": {"service": f"e2e-monitor-{run}"}}]))
        rules.parent.mkdir(parents=True, exist_ok=True)
        rules.write_text(yaml.safe_dump({"groups": [{"name": f"e2e-scaled-{run}", "rules": [rule]}]}, sort_keys=False))
        reload_prometheus(alerting)
        producer.start()
        wait_until_scraped(alerting, f'{LAG_METRIC}{{topic="{topic}"}} > 1000')
        yield {"topic": topic, "run": run, "rule": rule}
    finally:
        stop.set()
        if producer.is_alive():
            producer.join(30)
        target.unlink(missing_ok=True)
        rules.unlink(missing_ok=True)
        reload_prometheus(alerting)
        monitor.terminate()
        monitor.wait(30)
        log.close()
        store = open_metadata(settings.metadata_url)
        store.client.drop_database(f"gh_lag_{run}")
        store.close()


# --- the tests ---------------------------------------------------------------------------------------


def test_the_scaled_rule_keeps_the_real_rules_logic():
    """What the lag test loads: the real rule's expression with its durations divided by
    TIME_SCALE and its metric narrowed to one topic; it reads the monitor's gauge."""
    rule = real_rule("GhSinkLagGrowing")
    assert re.search(rf"(?<![A-Za-z0-9_]){LAG_METRIC}\b", rule["expr"]), f"the rule must read the monitor's {LAG_METRIC} (no ray_ prefix): {rule['expr']}"
    copy = scaled_rule(rule, TIME_SCALE, LAG_METRIC, 'topic="t"', "r1")
    assert copy["for"] == scale_duration(rule["for"], TIME_SCALE)
    assert copy["labels"] == {**rule["labels"], "e2e_run": "r1"} and copy["annotations"] == rule["annotations"]
    unscaled = re.sub(r"\[[^\]]*\]", "[W]", rule["expr"]).replace(LAG_METRIC, f'{LAG_METRIC}{{topic="t"}}')
    assert re.sub(r"\[[^\]]*\]", "[W]", copy["expr"]) == unscaled
    assert scale_duration("15m", 20) == "45s" and scale_duration("1m", 20) == "3s" and scale_duration("1h30m", 30) == "180s"


def test_a_silent_greenhouse_wakes_someone(alerting, silent_greenhouse, lagging_sink):
    """(Both scenarios are set up before this waits, so the lag test finds its alert waiting.)"""
    silent, live = silent_greenhouse["silent"], silent_greenhouse["live"]
    alert = wait_for_alert(alerting, alertname="GhGreenhouseSilent", greenhouse_id=silent)
    assert alert["labels"]["severity"] == "warning"
    assert silent in alert["annotations"]["summary"] and alert["annotations"]["runbook"].endswith("#ghgreenhousesilent")
    # the device that kept posting is not reported, neither to the receiver nor in Prometheus
    assert received(alerting, alertname="GhGreenhouseSilent", greenhouse_id=live) == []
    assert [a for a in prometheus_alerts(alerting, "GhGreenhouseSilent") if a["labels"].get("greenhouse_id") == live] == []


def test_a_sink_falling_behind_wakes_someone(alerting, lagging_sink):
    topic = lagging_sink["topic"]
    alert = wait_for_alert(alerting, alertname="GhSinkLagGrowing", e2e_run=lagging_sink["run"], topic=topic)
    assert alert["labels"]["partition"] == "0" and alert["labels"]["severity"] == "warning"
    assert topic in alert["annotations"]["summary"]
