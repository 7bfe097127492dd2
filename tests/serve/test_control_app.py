"""The forecast/control Serve application over real HTTP: a model from MLflow, state from the topic."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from app.bus import open_bus
from app.config import Limits, Settings
from app.contracts.vocabulary import ACTUATORS
from app.control.dispatch import ActuatorEndpoint
from app.metadata import CONTROL_AUDIT, open_metadata
from app.security.credentials import CONTROL_SIMULATE, CONTROL_WRITE, FORECAST_READ, SCOPES, OperatorRegistry
from app.serve.tls_edge import TlsEdge
from tests.helpers.lake import seed_two_greenhouses
from tests.observability.test_alert_rules import promtool  # noqa: F401  (fixture: the promtool binary)

DAYS = 2
START = datetime(2026, 3, 10, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def models(ray_local, tmp_path_factory):
    """Twin data in the lake, a feature set, and two registered versions (v1 champion, v2 challenger)."""
    from app.preprocess import PreprocessParams, run_preprocess
    from app.train.pipeline import TrainJobParams, run_training
    from app.train.promotion import run_promotion
    from app.train.trainer import BoosterParams

    # the seeded data lies in the past: decisions at its instants (as_of) are sent only to a simulated plant
    settings = Settings(data_dir=tmp_path_factory.mktemp("serve"), control={"simulated_plant": True}, security={"https_port": 0})
    seed_two_greenhouses(settings, DAYS)
    run_preprocess(settings, PreprocessParams(horizons_min=(15, 60)))
    first = run_training(settings, TrainJobParams(booster=BoosterParams(num_boost_round=60)))
    run_promotion(settings, first.model_name)
    second = run_training(settings, TrainJobParams(booster=BoosterParams(num_boost_round=30, max_depth=4)))
    return settings, first, second


@pytest.fixture(scope="module")
def app_url(models, ray_serve):
    from ray import serve

    from app.serve.args import AppArgs
    from app.serve.control import build_app

    settings, _, _ = models
    serve.run(build_app(AppArgs(settings=settings.for_replicas())), name="control-test", route_prefix="/climate")
    yield f"{ray_serve}/climate"
    serve.delete("control-test")


@pytest.fixture(scope="module")
def tokens(models) -> dict[str, str]:
    """Operator tokens: one per scope, one with all, one expired, one revoked."""
    settings, _, _ = models
    operators = OperatorRegistry.from_settings(settings)
    made = {
        "admin": operators.add("admin", SCOPES),
        "reader": operators.add("reader", [FORECAST_READ]),
        "writer": operators.add("writer", [CONTROL_WRITE]),
        "simulator": operators.add("simulator", [CONTROL_SIMULATE]),
        "expired": operators.add("expired", SCOPES, valid_days=-1),
        "revoked": operators.add("revoked", SCOPES),
        "made-up": "gho_0123456789abcdef_" + "A" * 43,
    }
    operators.revoke("revoked")
    operators.close()
    return made


@pytest.fixture(scope="module")
def edge(models, app_url, ray_serve):
    """The TLS edge in front of the session's Serve port: every request of this module is HTTPS."""
    settings, _, _ = models
    with TlsEdge(settings, int(ray_serve.rsplit(":", 1)[1])) as running:
        yield running


def https_client(edge: TlsEdge, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=f"{edge.url}/climate", verify=str(edge.tls.ca_path), headers=headers, timeout=60)


@pytest.fixture(scope="module")
def client(edge, tokens):
    with https_client(edge, tokens["admin"]) as c:
        wait_for_greenhouses(c)
        yield c


def wait_for_greenhouses(c: httpx.Client) -> None:
    """The replica follows the sensor topic: wait until both greenhouses are known."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        res = c.get("/healthz")
        if res.status_code == 200 and res.json()["greenhouses"] == ["gh-01", "gh-02"]:
            return
        time.sleep(0.5)
    raise AssertionError("the control app did not pick up the sensor topic in 60 s")


def wait_for_readiness(c: httpx.Client, status: int, timeout_s: float = 60) -> dict:
    """Poll ``/readyz`` (checks are cached for a few seconds) until it answers ``status``."""
    deadline = time.monotonic() + timeout_s
    while (res := c.get("/readyz")).status_code != status and time.monotonic() < deadline:
        time.sleep(0.5)
    assert res.status_code == status, res.text
    return res.json()


def last_ts(settings: Settings) -> datetime:
    return START + timedelta(days=DAYS)


def test_healthz_reports_the_followed_greenhouses(client, edge):
    ready = wait_for_readiness(client, 200)  # the first check loads the champion, which may take a few seconds
    assert ready["ready"] is True and {name: dep["ok"] for name, dep in ready["dependencies"].items()} == {"bus": True, "metadata": True, "model": True}
    with https_client(edge, None) as anonymous:
        assert anonymous.get("/readyz").status_code == 200  # probes carry no operator token
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["ready"] is True and set(health["dependencies"]) == {"bus", "metadata", "model"}
    assert health["greenhouses"] == ["gh-01", "gh-02"]
    assert health["readings_followed"] > 1000 and health["follower_error"] is None
    assert health["gc"]["frozen_objects"] > 10_000 and len(health["gc"]["collections"]) == 3  # the start-up heap is frozen
    loop = client.get("/loop").json()  # the control loop deployed with the app, holding a lease
    assert loop["enabled"] is True and loop["interval_s"] == 300 and len(loop["replicas"]) >= 1


def test_forecast_by_greenhouse_name_uses_the_champion(client, models):
    settings, first, _ = models
    res = client.post("/forecast", json={"greenhouse_id": "gh-01"})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["model"] == {"name": first.model_name, "version": first.model_version}
    assert body["horizons_min"] == [15, 60]
    points = {"air_temp_c_15min", "air_temp_c_60min", "rh_pct_15min", "rh_pct_60min"}
    assert set(body["forecast"]) == points | {f"{k}_{side}" for k in points for side in ("low", "high")}  # each with its 90 % interval
    assert all(body["forecast"][f"{k}_low"] <= body["forecast"][k] <= body["forecast"][f"{k}_high"] for k in points)
    assert 0 < body["forecast"]["air_temp_c_15min"] < 45
    # a plan with full heating forecasts warmer than no heating (monotone model, through HTTP)
    hot = client.post("/forecast", json={"greenhouse_id": "gh-01", "plan": {"vent_pct": 0, "heat_pct": 100, "screen_pct": 0}}).json()
    cold = client.post("/forecast", json={"greenhouse_id": "gh-01", "plan": {"vent_pct": 0, "heat_pct": 0, "screen_pct": 0}}).json()
    assert hot["forecast"]["air_temp_c_60min"] >= cold["forecast"]["air_temp_c_60min"]


def test_forecast_with_the_window_in_the_request(client):
    from app.sim.fleet import FleetSimulator

    fleet = FleetSimulator(1, START, step_s=60, seed=7)
    readings = [r | {"greenhouse_id": "gh-77"} for step in fleet.iter_steps(2 * 3600) for r in step]
    res = client.post("/forecast", json={"greenhouse_id": "gh-77", "readings": readings})
    assert res.status_code == 200, res.text
    assert res.json()["as_of"].startswith((START + timedelta(hours=2)).isoformat()[:16])


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"greenhouse_id": "gh-404"}, 404, 40411),
        ({"greenhouse_id": "bad id!"}, 422, 42201),
        ({"greenhouse_id": "gh-01", "plan": {"vent_pct": 130, "heat_pct": 0, "screen_pct": 0}}, 422, 42201),
        ({"greenhouse_id": "gh-01", "surprise": 1}, 422, 42201),
        ({"greenhouse_id": "gh-01", "readings": [{"greenhouse_id": "gh-01", "device_id": "d", "ts": "yesterday", "measurements": {}}]}, 422, 42211),
    ],
)
def test_bad_requests_get_a_reason_and_an_error_code(client, payload, status, code):
    res = client.post("/forecast", json=payload)
    assert res.status_code == status, res.text
    assert res.json()["error_code"] == code and res.json()["message"]


def test_control_dispatches_a_signed_command_within_limits_and_is_idempotent(client, models):
    settings, first, _ = models
    as_of = (last_ts(settings)).isoformat()
    res = client.post("/control", json={"greenhouse_id": "gh-02", "as_of": as_of, "request_id": "t1"})
    assert res.status_code == 200, res.text
    body = res.json()
    cmd = body["command"]
    assert body["decision"]["mode"] == "mpc", body["decision"]
    assert cmd["model"] == {"name": first.model_name, "version": first.model_version}
    assert body["dispatch"]["status"] == "dispatched"
    limits = Limits()
    for a in ACTUATORS:
        low, high = limits.bounds(a)
        assert low <= cmd["setpoints"][a] <= high
    # the decision forecasts only the horizons its cost counts (<= 15 min here): the 60-min boosters do not run
    assert set(body["decision"]["forecast"]) == {f"{v}_15min{side}" for v in ("air_temp_c", "rh_pct") for side in ("", "_low", "_high")}
    # the same request again is the same command: not published twice
    again = client.post("/control", json={"greenhouse_id": "gh-02", "as_of": as_of, "request_id": "t1"}).json()
    assert again["command"]["command_id"] == cmd["command_id"] and again["dispatch"]["status"] == "duplicate"
    audit = open_metadata(settings.metadata_url).collection(CONTROL_AUDIT).find_one({"_id": cmd["command_id"]})
    assert audit["status"] == "dispatched" and audit["model"]["version"] == first.model_version and audit["requested_by"] == "admin"

    # the greenhouse side receives it once, with a valid signature, and applies it
    applied = []

    class Sink:
        def apply(self, command):
            applied.append(command)

    endpoint = ActuatorEndpoint(settings, open_bus(settings.bus_url), Sink(), {"gh-02"}, clock=lambda: last_ts(settings))
    outcomes = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(o.command_id == cmd["command_id"] for o in outcomes):
        outcomes += endpoint.poll(0.2)
    endpoint.close()
    mine = [o for o in outcomes if o.command_id == cmd["command_id"]]
    assert [o.status for o in mine] == ["applied"]
    assert applied[-1].setpoints.model_dump() == cmd["setpoints"]


def test_control_dry_run_is_returned_and_audited_but_not_published(client, models):
    settings, _, _ = models
    res = client.post("/control", json={"greenhouse_id": "gh-01", "as_of": last_ts(settings).isoformat(), "dry_run": True}).json()
    assert res["dispatch"]["status"] == "dry_run" and res["command"]["dry_run"] is True


def test_stale_data_falls_back_to_the_thermostat(client, models):
    settings, _, _ = models
    later = last_ts(settings) + timedelta(hours=3)
    body = client.post("/control", json={"greenhouse_id": "gh-01", "as_of": later.isoformat(), "dry_run": True}).json()
    assert body["decision"]["mode"] == "thermostat" and "data stale" in body["decision"]["reason"]
    assert body["command"]["model"] == {"name": "thermostat", "version": "rule-v1"}


def deploy_config(settings: Settings, user_config: dict) -> None:
    """Deploy serve_configs/control.yaml the way `serve deploy` does (the controller's apply_config),
    with args pointing at the test's settings and the given user_config."""
    from pathlib import Path

    import yaml
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "serve_configs" / "control.yaml").read_text())
    config.pop("http_options")
    app = config["applications"][0]
    app["name"] = "control-test"
    app["args"]["settings"] = settings.for_replicas()
    next(d for d in app["deployments"] if d["name"] == "ControlApp")["user_config"] = user_config
    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(config), _blocking=True)


def test_model_swap_by_user_config_without_failed_requests_then_fallback(models, client, edge, tokens):
    """`serve deploy` of a new user_config swaps the model in place (same replica process) while
    requests keep succeeding. A version that does not exist makes /control fall back to the
    thermostat and /forecast answer 503; back on the alias, the champion serves again."""
    settings, first, second = models
    deploy_config(settings, {"model_alias": "champion"})  # from code to config: Serve replaces the replicas once
    wait_for_greenhouses(client)
    deadline = time.monotonic() + 60
    while (res := client.post("/forecast", json={"greenhouse_id": "gh-01"})).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.5)  # the new replica's follower is still reading the topic back
    assert res.status_code == 200, res.text
    assert res.json()["model"]["version"] == first.model_version
    pid_before = client.get("/healthz").json()["replica_pid"]

    statuses: list[int] = []
    failures: list[str] = []
    versions: set[str] = set()
    stop = threading.Event()

    def hammer():
        with https_client(edge, tokens["reader"]) as c:
            while not stop.is_set():
                r = c.post("/forecast", json={"greenhouse_id": "gh-01"})
                statuses.append(r.status_code)
                if r.status_code != 200:
                    failures.append(f"{time.strftime('%H:%M:%S')} {r.status_code} {r.text[:200]}")
                if r.status_code == 200:
                    versions.add(r.json()["model"]["version"])

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        time.sleep(1.0)
        deploy_config(settings, {"model_alias": "champion", "model_version": second.model_version})
        deadline = time.monotonic() + 30
        while second.model_version not in versions and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
    assert versions == {first.model_version, second.model_version}
    assert len(statuses) > 5 and set(statuses) == {200}, failures[:5]
    assert client.get("/healthz").json()["replica_pid"] == pid_before  # reconfigured, not restarted

    deploy_config(settings, {"model_version": "999"})
    res = client.post("/control", json={"greenhouse_id": "gh-01", "as_of": last_ts(settings).isoformat(), "dry_run": True})
    assert res.status_code == 200, res.text
    assert res.json()["decision"]["mode"] == "thermostat" and "model unavailable" in res.json()["decision"]["reason"]
    missing = client.post("/forecast", json={"greenhouse_id": "gh-01"})
    assert missing.status_code == 503 and missing.json()["error_code"] == 50311
    unready = wait_for_readiness(client, 503)  # not ready, naming the model and since when
    model = unready["dependencies"]["model"]
    assert model["ok"] is False and model["reason"].startswith(("no model loaded", "no answer within")) and model["since"]  # a slow load of 999 may time out
    assert unready["dependencies"]["bus"]["ok"] is True and unready["dependencies"]["metadata"]["ok"] is True
    assert client.get("/healthz").status_code == 200  # alive all along: nothing for a restart to fix

    deploy_config(settings, {})
    assert client.post("/forecast", json={"greenhouse_id": "gh-01"}).json()["model"]["version"] == first.model_version
    assert wait_for_readiness(client, 200)["dependencies"]["model"]["since"] is None


LAST = (START + timedelta(days=DAYS)).isoformat()


@pytest.mark.parametrize(
    ("who", "path", "payload", "status", "code"),
    [
        (None, "/forecast", {"greenhouse_id": "gh-01"}, 401, 40101),
        ("made-up", "/forecast", {"greenhouse_id": "gh-01"}, 401, 40101),
        ("expired", "/forecast", {"greenhouse_id": "gh-01"}, 401, 40101),
        ("revoked", "/control", {"greenhouse_id": "gh-01", "dry_run": True}, 401, 40101),
        ("reader", "/forecast", {"greenhouse_id": "gh-01"}, 200, None),
        ("writer", "/forecast", {"greenhouse_id": "gh-01"}, 403, 40311),
        ("reader", "/forecast", {"greenhouse_id": "gh-01", "as_of": LAST}, 403, 40311),
        ("reader", "/control", {"greenhouse_id": "gh-01", "dry_run": True}, 403, 40311),
        ("writer", "/control", {"greenhouse_id": "gh-01", "dry_run": True}, 200, None),
        ("writer", "/control", {"greenhouse_id": "gh-01", "as_of": LAST, "dry_run": True}, 403, 40311),
        ("simulator", "/control", {"greenhouse_id": "gh-01", "dry_run": True}, 200, None),
        ("simulator", "/control", {"greenhouse_id": "gh-01"}, 403, 40311),
    ],
)
def test_auth_matrix_over_https(edge, tokens, who, path, payload, status, code):
    with https_client(edge, tokens[who] if who else None) as c:
        res = c.post(path, json=payload)
    assert res.status_code == status, res.text
    if code:
        assert res.json()["error_code"] == code and res.json()["message"]
        assert "Traceback" not in res.text and (tokens[who] if who else "Bearer") not in res.text


def test_plain_http_to_the_https_endpoint_is_refused(edge):
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError)):
        httpx.post(f"http://127.0.0.1:{edge.port}/climate/forecast", json={"greenhouse_id": "gh-01"})


def test_the_app_exports_request_and_forecast_durations_refusals_and_the_serving_share(client, edge, tokens, models, ray_local, promtool):  # noqa: F811
    """What the replicas recorded reaches the node's metrics agent under the catalogue's names."""
    from tests.serve.prometheus_text import exposition, max_of, product_lint_problems, value_of

    settings, first, _ = models
    with https_client(edge, None) as anonymous:
        assert anonymous.post("/forecast", json={"greenhouse_id": "gh-01"}).status_code == 401
    with https_client(edge, tokens["writer"]) as writer:
        assert writer.post("/forecast", json={"greenhouse_id": "gh-01"}).status_code == 403
    assert client.post("/forecast", json={"greenhouse_id": "gh-01"}).status_code == 200
    app = {"application": "control-test"}
    wanted = {
        "unauthenticated": lambda t: value_of(t, "ray_gh_auth_failures_total", surface="control", reason="unauthenticated", **app),
        "missing_scope": lambda t: value_of(t, "ray_gh_auth_failures_total", surface="control", reason="missing_scope", **app),
        "requests": lambda t: value_of(t, "ray_gh_control_request_duration_seconds_count", route="forecast", **app),
        "forecasts": lambda t: value_of(t, "ray_gh_forecast_duration_seconds_count", **app),
        # max: a replica replaced by an earlier test's redeploy keeps its last value until it expires
        "share": lambda t: max_of(t, "ray_gh_serving_share", model_version=f"{first.model_name}/{first.model_version}", role="champion", deployment="ControlApp", **app),
    }
    deadline, seen = time.monotonic() + 60, {}
    while time.monotonic() < deadline:  # the agent reports every few seconds
        text = exposition(ray_local)
        seen = {k: f(text) for k, f in wanted.items()}
        if all(v is not None for v in seen.values()) and seen["requests"] >= 3:
            break
        time.sleep(2)
    assert all(v is not None for v in seen.values()), seen
    assert seen["unauthenticated"] >= 1 and seen["missing_scope"] >= 1 and seen["requests"] >= 3 and seen["forecasts"] >= 1, seen
    assert seen["share"] == 1.0, seen
    assert value_of(text, "ray_gh_serve_latency_ms_count") is None  # replaced by the _seconds histogram
    assert product_lint_problems(text, promtool) == []  # promtool check metrics on the agent's exposition


def test_caller_readings_are_never_dispatched_and_the_asker_is_recorded(edge, tokens, models):
    from app.sim.fleet import FleetSimulator

    settings, _, _ = models
    fleet = FleetSimulator(1, START, step_s=60, seed=3)
    readings = [r | {"greenhouse_id": "gh-01"} for step in fleet.iter_steps(2 * 3600) for r in step]
    with https_client(edge, tokens["simulator"]) as c:
        body = c.post("/control", json={"greenhouse_id": "gh-01", "readings": readings, "dry_run": False}).json()
    assert body["dispatch"]["status"] == "dry_run" and body["requested_by"] == "simulator"
    audit = open_metadata(settings.metadata_url).collection(CONTROL_AUDIT).find_one({"requested_by": "simulator"})
    assert audit is not None and audit["dry_run"] is True


def test_naive_as_of_and_oversized_bodies_get_a_4xx(client):
    naive = client.post("/control", json={"greenhouse_id": "gh-01", "as_of": "2026-03-12T00:00:00", "dry_run": True})
    assert naive.status_code == 422 and naive.json()["error_code"] == 42201
    huge = client.post("/forecast", content=b'{"greenhouse_id": "gh-01", "pad": "' + b"x" * (9 * 1024 * 1024) + b'"}', headers={"Content-Type": "application/json"})
    assert huge.status_code == 413 and huge.json()["error_code"] == 41301


def test_a_rollout_routes_greenhouses_to_the_candidate_while_the_champion_shadows(client, models):
    """All greenhouses on the candidate (a one-step canary at 1.0): each decision is the
    candidate's, the champion forecasts alongside it, and both are in the decision record; once
    the rollout is aborted the champion serves again."""
    from app.control.rollout_store import RolloutStore
    from app.metadata import DECISIONS

    settings, first, second = models
    deploy_config(settings, {"model_alias": "champion"})  # routing by alias (no pinned version), rollouts followed
    rollouts = RolloutStore.from_settings(settings)
    records = open_metadata(settings.metadata_url).collection(DECISIONS)
    plan = rollouts.start(first.model_name, second.model_version, mode="canary", steps=(1.0,), by="test", now=last_ts(settings))
    try:
        time.sleep(settings.rollout.refresh_s + 0.5)  # the replicas read the active rollout this often
        for i, greenhouse in enumerate(("gh-01", "gh-02")):
            as_of = (last_ts(settings) - timedelta(minutes=30 + i)).isoformat()
            body = client.post("/control", json={"greenhouse_id": greenhouse, "as_of": as_of, "dry_run": True, "request_id": f"rollout-{i}"}).json()
            assert body["model_role"] == "candidate" and body["command"]["model"]["version"] == second.model_version
            record = records.find_one({"command_id": body["command"]["command_id"]})
            assert record["rollout_id"] == plan.rollout_id and record["role"] == "candidate" and record["source"] == "on_demand"
            assert f"{first.model_name}/{first.model_version}" in record["shadow_forecasts"]
    finally:
        rollouts.abort(first.model_name, by="test", reason="test over")
    time.sleep(settings.rollout.refresh_s + 0.5)
    body = client.post("/control", json={"greenhouse_id": "gh-01", "as_of": (last_ts(settings) - timedelta(minutes=40)).isoformat(), "dry_run": True}).json()
    assert body["model_role"] == "champion" and body["command"]["model"]["version"] == first.model_version
    assert [d["event"] for d in rollouts.history(plan.rollout_id)] == ["start", "abort"]


def _post_steps(settings: Settings, fleet, credentials, service, steps: int) -> None:
    """``steps`` simulated minutes of every device of ``fleet``, through the gateway's service code."""
    import orjson

    from app.ingest.gateway import JSON_V2

    for _ in range(steps):
        for reading in fleet.step():
            body = orjson.dumps({"records": [{"value": reading}]})
            service.produce(settings.topics.sensors, body, content_type=JSON_V2, authorization=credentials.authorization_for(reading))


def test_the_control_loop_decides_each_greenhouse_once_per_interval_when_a_replica_is_killed(models, ray_serve):
    """Two ControlLoop replicas share the fleet on the readings' clock; one is killed between
    intervals with its lease still current. Every greenhouse still gets exactly one decision per
    interval (the dead replica's moved by the sweep, at most one interval late: here, none late)."""
    import ray
    from ray import serve

    from app.ingest.gateway import IngestService
    from app.metadata import CONTROL_CLAIMS, DECISIONS
    from app.security.credentials import DeviceRegistry
    from app.serve.args import AppArgs
    from app.serve.control import ControlApp, ControlLoop, Forecaster
    from app.serve.serving_models import ModelConfig
    from app.sim.credentials import FleetCredentials
    from app.sim.fleet import FleetSimulator

    base, first, _ = models
    settings = base.model_copy(update={"loop": base.loop.model_copy(update={"event_time": True, "poll_s": 0.05, "lease_s": 1.0, "sweep_after_s": 1.5})})
    args = AppArgs(settings=settings.for_replicas())
    config = ModelConfig().model_dump()
    forecaster = Forecaster.bind(args)
    loop = ControlLoop.options(num_replicas=2, user_config=config).bind(forecaster, args)
    serve.run(ControlApp.options(user_config=config).bind(forecaster, args, loop), name="loop-test", route_prefix="/loop-test")
    store = open_metadata(settings.metadata_url)
    decisions, claims = store.collection(DECISIONS), store.collection(CONTROL_CLAIMS)
    start = last_ts(settings) + timedelta(days=1)  # after everything else this module sent
    fleet = FleetSimulator(2, start, step_s=60, seed=3)
    registry = DeviceRegistry(store)
    service = IngestService(settings, open_bus(settings.bus_url), registry)
    credentials = FleetCredentials.for_fleet(registry, fleet)

    def decided_in(interval_start: datetime) -> list[dict]:
        return decisions.find({"source": "loop", "interval_start": interval_start})

    try:
        intervals = []
        for k in range(7):
            # the first interval comes after 90 minutes of readings: features need that much history
            _post_steps(settings, fleet, credentials, service, 5 if k else 90)
            boundary = fleet.now - timedelta(seconds=fleet.now.timestamp() % 300)
            intervals.append(boundary)
            if k == 3:  # kill the replica that decided gh-01 last interval, its lease still current
                owner = claims.find_one({"greenhouse_id": "gh-01", "interval_start": intervals[-2]})["owner"]
                actor = next(a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].endswith(owner))
                ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
            deadline = time.monotonic() + 30
            while len(decided_in(boundary)) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
        for boundary in intervals[1:]:
            got = sorted(d["greenhouse_id"] for d in decided_in(boundary))
            assert got == ["gh-01", "gh-02"], f"interval {boundary}: {got}"
        assert all(d["model"]["version"] == first.model_version and d["requested_by"] == "control-loop" for d in decisions.find({"source": "loop"}))
    finally:
        serve.delete("loop-test")
