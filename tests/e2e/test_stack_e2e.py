"""End to end on the real stack: gateway on the Ray head -> Kafka -> sink job (Jobs API) -> HDFS +
FerretDB, watched by Prometheus. Later stages (features, training, serving) extend this test.

Needs `stack/stack up` (the test command starts it); outside CI it skips when engines are down.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import orjson
import pyarrow.compute as pc
import pytest
import yaml

from app.bus import open_bus
from app.config import Settings
from app.ingest.client import GatewayClient
from app.lake import Lake
from app.metadata import LAKE_BATCHES, open_metadata
from app.orchestration.ray_jobs import job_runtime_env, submit_and_wait
from app.security.credentials import CONTROL_SIMULATE, FORECAST_READ, OperatorRegistry
from app.serve.tls_edge import TlsEdge
from app.sim.fleet import FleetSimulator
from tests.helpers.engines import engine_url
from tests.helpers.stack import RAY_CLIENT_ENV, stack_settings

pytestmark = pytest.mark.stack
REPO = Path(__file__).resolve().parents[2]
SERVE_PORT = 8000


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Settings pointing at every real engine, namespaced by a run id (engines keep data)."""
    ray_address, prometheus = engine_url("ray"), engine_url("prometheus")
    run, settings = stack_settings(tmp_path_factory.mktemp("e2e"), "e2e", partitions=3, sink_batch_records=500)
    # the readings lie in the past: the control app decides at their instants (as_of), which only a
    # simulated plant accepts for dispatch; the TLS edge takes a free port
    settings = settings.model_copy(update={"control": settings.control.model_copy(update={"simulated_plant": True}), "security": settings.security.model_copy(update={"https_port": 0})})
    old = {k: os.environ.get(k) for k in RAY_CLIENT_ENV}
    os.environ.update(RAY_CLIENT_ENV)
    operators = OperatorRegistry.from_settings(settings)
    tokens = {"loop": operators.add("e2e-loop", [FORECAST_READ, CONTROL_SIMULATE]), "reader": operators.add("e2e-reader", [FORECAST_READ])}
    operators.close()
    with TlsEdge(settings, SERVE_PORT) as edge:  # every request of this module is HTTPS through it
        yield {"run": run, "settings": settings, "ray": ray_address, "prometheus": prometheus, "edge": edge, "tokens": tokens}
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    store = open_metadata(settings.metadata_url)
    store.client.drop_database(f"gh_e2e_{run}")
    store.close()


def ca_of(stack: dict) -> str:
    return str(stack["edge"].tls.ca_path)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def serve_cli(args: list[str], ray_address: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, **RAY_CLIENT_ENV}
    serve = str(Path(sys.executable).with_name("serve"))
    return subprocess.run([serve, *args, "--address", ray_address], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


@pytest.fixture(scope="module")
def gateway_on_head(stack, tmp_path_factory):
    """`serve deploy` of serve_configs/ingest.yaml (args set to the stack settings) onto the head."""
    settings: Settings = stack["settings"]
    config = yaml.safe_load((REPO / "serve_configs" / "ingest.yaml").read_text())
    app_cfg = config["applications"][0]
    app_cfg["name"] = f"ingest-e2e-{stack['run']}"
    app_cfg["route_prefix"] = f"/e2e-{stack['run']}"
    app_cfg["args"] = {"settings": settings.for_replicas()}
    stack["serve_config"] = config  # later deploys must keep this app (serve deploy is declarative)
    path = tmp_path_factory.mktemp("serve") / "ingest-e2e.yaml"
    path.write_text(yaml.safe_dump(config))
    deployed = serve_cli(["deploy", str(path)], stack["ray"])
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    url = f"{stack['edge'].url}{app_cfg['route_prefix']}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2, verify=ca_of(stack)).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(1)
    else:
        status = serve_cli(["status"], stack["ray"])
        pytest.fail(f"gateway on the Ray head never became healthy:\n{status.stdout[-3000:]}")
    yield url
    serve_cli(["shutdown", "-y"], stack["ray"])


def test_readings_flow_through_the_real_stack_exactly_once(stack, gateway_on_head):
    settings: Settings = stack["settings"]
    start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=36)
    fleet = FleetSimulator(2, start, step_s=60, seed=3)
    readings = [r for step in fleet.iter_steps(30 * 3600) for r in step]  # enough for 60-min lags and targets
    stack["last_reading_at"] = fleet.now
    broken = [{**readings[0], "measurements": {"rh_pct": 140.0}}, {**readings[1], "ts": "not-a-time"}]
    from app.security.credentials import DeviceRegistry
    from app.sim.credentials import FleetCredentials

    credentials = FleetCredentials.for_fleet(DeviceRegistry.from_settings(settings), fleet)  # each device posts with its own token
    with GatewayClient(gateway_on_head, topic=settings.topics.sensors, batch_size=100, token_for=credentials.token_for, verify=ca_of(stack), max_attempts=8) as client:
        tally = client.post(readings + broken)
    assert tally.accepted == len(readings) and tally.rejected == 2

    # the sink, as a Ray job on the head, configured by GH_* variables like any deployment
    env_vars = {
        "GH_BUS_URL": settings.bus_url,
        "GH_LAKE_URL": settings.lake_url,
        "GH_METADATA_URL": settings.metadata_url,
        "GH_TOPICS__SENSORS": settings.topics.sensors,
        "GH_TOPICS__DEADLETTER": settings.topics.deadletter,
        "GH_TOPICS__PARTITIONS": str(settings.topics.partitions),
        "GH_SINK__GROUP_ID": settings.sink.group_id,
        "GH_SINK__MAX_BATCH_RECORDS": str(settings.sink.max_batch_records),
        "GH_TRACKING_URL": settings.tracking_url,
    }
    stack["env_vars"] = env_vars
    stack["readings"] = len(readings)
    result = submit_and_wait(stack["ray"], "python -m jobs.sink --idle-polls 3", submission_id=f"sink-e2e-{stack['run']}", runtime_env=job_runtime_env(REPO, env_vars), timeout_s=600)
    assert result.ok, result.logs[-3000:]
    assert result.summary and result.summary["ok"] and result.summary["rows_written"] == len(readings)

    # Parquet in HDFS, exactly once
    lake = Lake.from_url(settings.lake_url)
    table = lake.read_raw_sensors()
    assert table.num_rows == len(readings)
    keys = set(zip(table["device_id"].to_pylist(), pc.cast(table["ts"], "int64").to_pylist()))
    assert len(keys) == len(readings)
    assert set(table["greenhouse_id"].to_pylist()) == {"gh-01", "gh-02"}

    # one committed batch document per file, in the MongoDB-wire server
    docs = open_metadata(settings.metadata_url).collection(LAKE_BATCHES).find({})
    assert len(docs) == len(lake.list_files("raw/sensors")) > 0
    assert all(d["status"] == "committed" for d in docs)
    assert sum(d["rows"] for d in docs) == len(readings)

    # the rejected readings are on the Kafka dead-letter topic
    bus = open_bus(settings.bus_url)
    consumer = bus.consumer(f"check-{stack['run']}", [settings.topics.deadletter])
    dead = []
    deadline = time.monotonic() + 30
    while len(dead) < 2 and time.monotonic() < deadline:
        dead.extend(orjson.loads(m.value) for m in consumer.poll(100, 1))
    consumer.close()
    assert sorted(d["reason"].split(":")[0] for d in dead) == ["measurements.rh_pct", "ts"]

    # a second sink run finds nothing new: exactly once across runs too
    again = submit_and_wait(stack["ray"], "python -m jobs.sink --idle-polls 2", submission_id=f"sink-e2e-{stack['run']}-2", runtime_env=job_runtime_env(REPO, env_vars), timeout_s=600)
    assert again.ok and again.summary["rows_written"] == 0
    assert lake.read_raw_sensors(columns=["device_id"]).num_rows == len(readings)

    # Prometheus scraped the gateway's counters from the Ray head
    application = f"ingest-e2e-{stack['run']}"
    query = 'sum({__name__=~"ray_gh_ingest_records_accepted.*", application="' + application + '"})'
    deadline = time.monotonic() + 90
    value = 0.0
    while time.monotonic() < deadline:
        res = httpx.get(f"{stack['prometheus']}/api/v1/query", params={"query": query}, timeout=5).json()
        if res["data"]["result"]:
            value = float(res["data"]["result"][0]["value"][1])
            if value >= len(readings):
                break
        time.sleep(3)
    assert value >= len(readings), f"Prometheus saw {value} accepted records for the e2e app"


def test_learning_path_runs_as_ray_jobs_on_the_head(stack, gateway_on_head):
    """Preprocess (Ray Data on HDFS), train (Ray Train, MLflow server) and promote, each submitted
    to the Ray head through the Jobs API, as Airflow or a user would."""
    if "env_vars" not in stack:
        pytest.skip("needs the data of test_readings_flow_through_the_real_stack_exactly_once")
    from app.metadata import FEATURE_SETS
    from app.tracking import Tracking

    settings: Settings = stack["settings"]
    model_name = f"gh-e2e-{stack['run']}"
    runtime_env = job_runtime_env(REPO, stack["env_vars"])

    pre = submit_and_wait(stack["ray"], "python -m jobs.preprocess --horizons 15,60", submission_id=f"preprocess-e2e-{stack['run']}", runtime_env=runtime_env, timeout_s=900)
    assert pre.ok, pre.logs[-3000:]
    fs_id = pre.summary["feature_set_id"]
    assert pre.summary["rows_train"] > 0 and pre.summary["rows_validation"] > 0
    doc = open_metadata(settings.metadata_url).collection(FEATURE_SETS).find_one({"_id": fs_id})
    assert doc["path"].startswith("/gh-e2e/") and doc["stats"]["air_temp_c"]["std"] > 0
    assert Lake.from_url(settings.lake_url).list_files(f"features/{fs_id}/split=train")

    train = submit_and_wait(stack["ray"], f"python -m jobs.train --model-name {model_name} --num-boost-round 60", submission_id=f"train-e2e-{stack['run']}", runtime_env=runtime_env, timeout_s=900)
    assert train.ok, train.logs[-3000:]
    assert train.summary["feature_set_id"] == fs_id and train.summary["model_version"] == "1"
    promote = submit_and_wait(stack["ray"], f"python -m jobs.promote --model-name {model_name}", submission_id=f"promote-e2e-{stack['run']}", runtime_env=runtime_env, timeout_s=600)
    assert promote.ok and promote.summary["promoted"], promote.logs[-3000:]

    tracking = Tracking(settings.tracking_url)  # the MLflow server
    assert tracking.version_by_alias(model_name, "champion") == "1"
    stack["model_name"] = model_name
    run = tracking.get_run(train.summary["run_id"])
    assert run["params"]["feature_set_id"] == fs_id and "skill_air_temp_c_15min" in run["metrics"]


def test_control_app_on_the_head_dispatches_commands_through_kafka(stack, gateway_on_head, tmp_path_factory):
    """`serve deploy` of serve_configs/control.yaml next to the gateway: the champion from the MLflow
    server forecasts, /control dispatches a signed command onto the Kafka control topic with its
    audit record in FerretDB; a new user_config naming a missing version falls back to the thermostat."""
    if "last_reading_at" not in stack or "model_name" not in stack:
        pytest.skip("needs the data and the champion of the tests before")
    from app.contracts.command import ControlCommand
    from app.metadata import CONTROL_AUDIT

    settings: Settings = stack["settings"]
    control_cfg = yaml.safe_load((REPO / "serve_configs" / "control.yaml").read_text())["applications"][0]
    control_cfg["name"] = f"control-e2e-{stack['run']}"
    control_cfg["route_prefix"] = f"/climate-e2e-{stack['run']}"
    control_cfg["args"] = {"settings": {**settings.for_replicas(), "control": {**settings.for_replicas()["control"], "model_name": stack["model_name"]}}}
    config = {**stack["serve_config"], "applications": [stack["serve_config"]["applications"][0], control_cfg]}
    folder = tmp_path_factory.mktemp("serve-control")

    def deploy(user_config: dict) -> None:
        next(d for d in control_cfg["deployments"] if d["name"] == "ControlApp")["user_config"] = user_config
        path = folder / "all.yaml"
        path.write_text(yaml.safe_dump(config))
        deployed = serve_cli(["deploy", str(path)], stack["ray"])
        assert deployed.returncode == 0, deployed.stderr[-3000:]

    deploy({"model_alias": "champion"})
    url = f"{stack['edge'].url}{control_cfg['route_prefix']}"
    deadline = time.monotonic() + 240
    health = None
    while time.monotonic() < deadline:
        try:
            res = httpx.get(f"{url}/healthz", timeout=2, verify=ca_of(stack))
            if res.status_code == 200 and res.json()["greenhouses"] == ["gh-01", "gh-02"]:
                health = res.json()
                break
        except httpx.HTTPError:
            pass
        time.sleep(1)
    assert health is not None, serve_cli(["status"], stack["ray"]).stdout[-3000:]
    as_of = stack["last_reading_at"].isoformat()
    # the auth matrix on the real stack: no token, a token without the scope, plain HTTP
    assert httpx.post(f"{url}/forecast", json={"greenhouse_id": "gh-01"}, verify=ca_of(stack)).json()["error_code"] == 40101
    refused = httpx.post(f"{url}/control", json={"greenhouse_id": "gh-01", "dry_run": True}, verify=ca_of(stack), headers=bearer(stack["tokens"]["reader"]))
    assert refused.status_code == 403 and refused.json()["error_code"] == 40311
    with pytest.raises(httpx.HTTPError):
        httpx.post(f"http://127.0.0.1:{stack['edge'].port}{control_cfg['route_prefix']}/forecast", json={"greenhouse_id": "gh-01"})
    with httpx.Client(base_url=url, timeout=60, verify=ca_of(stack), headers=bearer(stack["tokens"]["loop"])) as c:
        forecast = c.post("/forecast", json={"greenhouse_id": "gh-01", "as_of": as_of})
        assert forecast.status_code == 200, forecast.text
        loop = c.get("/loop").json()  # the control loop deployed with the app holds its lease in FerretDB
        assert loop["enabled"] is True and loop["replicas"] and loop["replicas"][0]["renewed_at"], loop
        assert forecast.json()["model"] == {"name": stack["model_name"], "version": "1"}
        res = c.post("/control", json={"greenhouse_id": "gh-01", "as_of": as_of})
        assert res.status_code == 200, res.text
        body = res.json()
    assert body["decision"]["mode"] == "mpc" and body["dispatch"]["status"] == "dispatched", body
    command_id = body["command"]["command_id"]
    audit = open_metadata(settings.metadata_url).collection(CONTROL_AUDIT).find_one({"_id": command_id})
    assert audit["status"] == "dispatched" and audit["requested_by"] == "e2e-loop"

    bus = open_bus(settings.bus_url)
    consumer = bus.consumer(f"e2e-actuators-{stack['run']}", [settings.topics.control])
    found = []
    deadline = time.monotonic() + 60
    while not found and time.monotonic() < deadline:
        found = [m for m in consumer.poll(100, 1.0) if orjson.loads(m.value)["command_id"] == command_id]
    consumer.close()
    bus.close()
    assert found, "the command never reached the Kafka control topic"
    command = ControlCommand.model_validate(orjson.loads(found[0].value))
    from app.security.signing import CommandVerifier

    assert CommandVerifier.from_settings(settings).check(command) == "valid"  # the serving side's key, as an actuator site holds it

    deploy({"model_version": "999"})  # a swap to a version that does not exist: fallback, no outage
    deadline = time.monotonic() + 60
    mode = None
    with httpx.Client(base_url=url, timeout=60, verify=ca_of(stack), headers=bearer(stack["tokens"]["loop"])) as c:
        while time.monotonic() < deadline and mode != "thermostat":
            res = c.post("/control", json={"greenhouse_id": "gh-02", "as_of": as_of, "dry_run": True})
            assert res.status_code == 200, res.text
            mode = res.json()["decision"]["mode"]
            time.sleep(0.5)
    assert mode == "thermostat"
