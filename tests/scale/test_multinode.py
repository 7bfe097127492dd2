"""On a multi-node Ray cluster (a head and two worker nodes on this machine, each its own
``ray start``): jobs, Ray Data tasks and Serve replicas run on more than one node, and a worker
node killed under ingest load costs a bounded window of errors, never an accepted reading; the job
that ran on it fails clearly and its next attempt runs elsewhere.

The gateway writes to the stack's real Kafka and reads its devices from FerretDB."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import orjson
import pytest

from app.bus import open_bus
from app.config import Settings
from app.metadata import open_metadata
from app.orchestration.ray_jobs import make_client, submit_and_wait
from tests.helpers.ray_cluster import WORKER_RESOURCE, LocalRayCluster, node_resource
from tests.helpers.stack import stack_settings
from tests.ingest.conftest import GREENHOUSES, Devices, device_of, make_devices

pytestmark = [pytest.mark.multinode, pytest.mark.stack, pytest.mark.timeout(900)]

JOB = Path(__file__).with_name("placement_job.py")
JSON_V2 = "application/vnd.kafka.json.v2+json"
VICTIM = "worker-1"
START = datetime(2026, 6, 1, tzinfo=timezone.utc)


def job_command(out: Path, *args: str) -> str:
    """The placement job's entrypoint, writing its summary line to ``out``."""
    return " ".join(["python", str(JOB), "--out", str(out), *args])


def job_summary(out: Path) -> dict:
    """What a placement job wrote (its driver's node, its Data tasks' nodes)."""
    return json.loads(out.read_text())


def wait_job(client, submission_id: str, until: set[str], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while (status := str(client.get_job_status(submission_id).value)) not in until:
        assert time.monotonic() < deadline, f"job {submission_id} still {status} after {timeout_s}s"
        time.sleep(1)
    return status


def test_jobs_and_their_data_tasks_run_on_more_than_one_node(ray_cluster: LocalRayCluster, tmp_path: Path):
    client = make_client(ray_cluster.dashboard_url, headers=ray_cluster.headers)
    ids = ray_cluster.node_ids()
    assert set(ids) == {"head", "worker-1", "worker-2"}
    run = uuid.uuid4().hex[:6]
    # one job's driver pinned to each worker (entrypoint_resources), both at once
    submitted = {
        name: client.submit_job(entrypoint=job_command(tmp_path / f"{name}.json", "--blocks", "6"), entrypoint_resources={node_resource(name): 1}, submission_id=f"placement-{name}-{run}")
        for name in ("worker-1", "worker-2")
    }
    for name, sid in submitted.items():
        status = wait_job(client, sid, {"SUCCEEDED", "FAILED", "STOPPED"}, 300)
        assert status == "SUCCEEDED", client.get_job_logs(sid)[-3000:]
        summary = job_summary(tmp_path / f"{name}.json")
        print(f"{name}: driver on {summary['driver_node'][:8]}, Data tasks on {[n[:8] for n in summary['task_nodes']]}")
        assert summary["driver_node"] == ids[name]
        assert summary["rows"] == 24
        assert len(summary["task_nodes"]) >= 2 and set(summary["task_nodes"]) <= set(ids.values())


# --- the ingest gateway on the cluster ------------------------------------------------------------


@dataclass
class Gateway:
    url: str
    settings: Settings
    devices: Devices
    app_url: str  # the dashboard's Serve REST API
    headers: dict[str, str] = field(repr=False)

    @property
    def topic(self) -> str:
        return self.settings.topics.sensors

    def replicas(self) -> list[dict]:
        r = httpx.get(self.app_url, headers=self.headers, timeout=30)
        r.raise_for_status()
        app = r.json()["applications"].get("ingest") or {}
        return [rep for rep in app.get("deployments", {}).get("IngestGateway", {}).get("replicas", []) if rep["state"] == "RUNNING"]

    def wait_replicas(self, count: int, timeout_s: float) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while len(running := self.replicas()) < count:
            assert time.monotonic() < deadline, f"{len(running)} of {count} gateway replicas running after {timeout_s}s"
            time.sleep(2)
        return running


@pytest.fixture(scope="module")
def gateway(ray_cluster: LocalRayCluster, tmp_path_factory):
    """The ingest gateway deployed as `serve deploy` does (the dashboard's REST API): two replicas,
    each asking for the one ``gh-worker`` resource of a worker node, so one runs on each worker."""
    run, settings = stack_settings(tmp_path_factory.mktemp("gh"), "multinode", partitions=4, sink_batch_records=1000)
    devices = make_devices(settings.metadata_url)
    app_url = f"{ray_cluster.dashboard_url}/api/serve/applications/"
    config = {
        "proxy_location": "EveryNode",
        "http_options": {"host": "127.0.0.1", "port": ray_cluster.serve_http_port},
        "applications": [
            {
                "name": "ingest",
                "route_prefix": "/",
                "import_path": "app.serve.ingest:build_app",
                "args": {"settings": settings.for_replicas()},
                "deployments": [{"name": "IngestGateway", "num_replicas": 2, "max_ongoing_requests": 16, "ray_actor_options": {"num_cpus": 0.25, "resources": {WORKER_RESOURCE: 1}}}],
            }
        ],
    }
    r = httpx.put(app_url, json=config, headers=ray_cluster.headers, timeout=120)
    assert r.status_code == 200, r.text
    gw = Gateway(ray_cluster.serve_url, settings, devices, app_url, ray_cluster.headers)
    gw.wait_replicas(2, 300)
    try:
        yield gw
    finally:
        httpx.delete(app_url, headers=ray_cluster.headers, timeout=60)
        open_metadata(settings.metadata_url).client.drop_database(f"gh_multinode_{run}")  # type: ignore[attr-defined]


def reading(i: int) -> dict:
    """Reading number ``i``: its greenhouse alternates, its time and temperature are its own."""
    gh = GREENHOUSES[i % len(GREENHOUSES)]
    ts = (START + timedelta(seconds=30 * i)).isoformat().replace("+00:00", "Z")
    return {"greenhouse_id": gh, "device_id": device_of(gh), "ts": ts, "measurements": {"air_temp_c": round(10 + (i % 2000) / 100, 2), "rh_pct": 60.0}}


def test_gateway_replicas_run_on_both_worker_nodes(ray_cluster: LocalRayCluster, gateway: Gateway):
    ids = ray_cluster.node_ids()
    nodes = sorted(rep["node_id"] for rep in gateway.replicas())
    assert nodes == sorted([ids["worker-1"], ids["worker-2"]])
    body = {"records": [{"value": reading(i)} for i in (0, 2)]}
    r = httpx.post(f"{gateway.url}/topics/{gateway.topic}", content=orjson.dumps(body), headers={"content-type": JSON_V2, "authorization": gateway.devices.auth("gh-01")}, timeout=30)
    assert r.status_code == 200, r.text
    assert all(o["error_code"] is None for o in r.json()["offsets"])


@dataclass
class Outcome:
    t: float  # seconds since the load started
    status: int | str  # HTTP status, or the exception's name
    sent: list[dict]
    offsets: list[dict] | None = None
    detail: str = ""


async def device_load(gateway: Gateway, counter: itertools.count, outcomes: list[Outcome], stop: asyncio.Event, t0: float, batch: int = 10) -> None:
    """One device gateway posting ``batch`` readings of one greenhouse per request, as fast as it
    is answered; after an error it waits 0.2 s and goes on with new readings (a device retrying)."""
    async with httpx.AsyncClient(base_url=gateway.url, timeout=httpx.Timeout(10.0, connect=3.0)) as client:
        while not stop.is_set():
            first = next(counter)
            gh = GREENHOUSES[first % len(GREENHOUSES)]
            sent = [reading(i) for i in range(first * batch * 2, (first + 1) * batch * 2) if GREENHOUSES[i % len(GREENHOUSES)] == gh]
            body = orjson.dumps({"records": [{"value": v} for v in sent]})
            try:
                r = await client.post(f"/topics/{gateway.topic}", content=body, headers={"content-type": JSON_V2, "authorization": gateway.devices.auth(gh)})
                outcomes.append(Outcome(time.monotonic() - t0, r.status_code, sent, r.json()["offsets"] if r.status_code == 200 else None, "" if r.status_code == 200 else r.text[:300]))
                ok = r.status_code == 200
            except httpx.HTTPError as exc:
                outcomes.append(Outcome(time.monotonic() - t0, type(exc).__name__, sent, detail=str(exc)[:300]))
                ok = False
            if not ok:
                await asyncio.sleep(0.2)


def test_a_worker_node_killed_under_ingest_load(ray_cluster: LocalRayCluster, gateway: Gateway, tmp_path: Path):
    """Four devices post readings through the head's HAProxy; the worker node holding one gateway
    replica and one job's driver is killed. Errors stay inside a bounded window and then every
    request succeeds; every reading answered 200 is on Kafka exactly as sent; the job fails with
    a reason and its next attempt (``rerun_failed``) succeeds on a live node; a new worker node
    brings the gateway back to two replicas."""
    ids = ray_cluster.node_ids()
    victim_id = ids[VICTIM]
    assert victim_id in {rep["node_id"] for rep in gateway.replicas()}
    jobs = make_client(ray_cluster.dashboard_url, headers=ray_cluster.headers)
    sid = f"on-{VICTIM}-{uuid.uuid4().hex[:6]}"
    jobs.submit_job(entrypoint=job_command(tmp_path / "held.json", "--blocks", "2", "--sleep-s", "0.1", "--hold-s", "600"), entrypoint_resources={node_resource(VICTIM): 1}, submission_id=sid)
    wait_job(jobs, sid, {"RUNNING"}, 120)

    warm_s, settle_s, give_up_s = 5.0, 8.0, 120.0
    outcomes: list[Outcome] = []

    async def scenario() -> tuple[float, float | None]:
        stop = asyncio.Event()
        t0 = time.monotonic()
        counter = itertools.count()
        clients = [asyncio.create_task(device_load(gateway, counter, outcomes, stop, t0)) for _ in range(4)]
        await asyncio.sleep(warm_s)
        t_kill = time.monotonic() - t0  # the signal goes out now; kill_node returns once every process is gone
        await asyncio.to_thread(ray_cluster.kill_node, VICTIM)
        recovered_at = None
        while (now := time.monotonic() - t0) < t_kill + give_up_s:
            await asyncio.sleep(0.5)
            failed = [o.t for o in outcomes if o.status != 200]
            last_failure = max(failed, default=t_kill)
            # recovered: past the node's death being noticed (failures or not), settle_s of successes only
            if now - max(last_failure, t_kill) >= settle_s and now - t_kill >= 15:
                recovered_at = now
                break
        stop.set()
        await asyncio.gather(*clients)
        return t_kill, recovered_at

    t_kill, recovered_at = asyncio.run(scenario())
    before = [o for o in outcomes if o.t < t_kill]
    after = [o for o in outcomes if o.t >= t_kill]
    failures = [o for o in outcomes if o.status != 200]
    window_s = (max(o.t for o in failures) - t_kill) if failures else 0.0
    print(
        f"killed {VICTIM} at {t_kill:.1f}s: {len(before)} requests before (all 200: {all(o.status == 200 for o in before)}), "
        f"{len(after)} after, {len(failures)} failed within {window_s:.1f}s of the kill "
        f"({sorted({str(o.status) for o in failures})}), recovered at {recovered_at}"
    )
    for o in failures[:5]:
        print(f"  {o.t:.1f}s: {o.status} {o.detail}")
    assert before and all(o.status == 200 for o in before)
    assert recovered_at is not None, f"requests kept failing for {give_up_s}s after the kill"
    assert window_s <= 60, f"errors for {window_s:.1f}s after the kill"
    assert all(o.t >= t_kill for o in failures)
    late = [o for o in after if o.t > t_kill + window_s]
    assert len(late) >= 10 and all(o.status == 200 for o in late)

    # nothing accepted lost: every record answered 200 is on the bus, as sent
    accepted = [(o.offsets[k], v) for o in outcomes if o.offsets for k, v in enumerate(o.sent)]
    assert all(off["error_code"] is None for off, _ in accepted)
    bus = open_bus(gateway.settings.bus_url)
    consumer = bus.consumer(f"check-{uuid.uuid4().hex[:6]}", [gateway.topic])
    stored: dict[tuple[int, int], dict] = {}
    ends = bus.end_offsets(gateway.topic)
    deadline = time.monotonic() + 120
    while sum(ends.values()) > len(stored) and time.monotonic() < deadline:
        stored.update({(m.partition, m.offset): orjson.loads(m.value) for m in consumer.poll(5000, 2)})
    consumer.close()
    for off, value in accepted:
        got = stored.get((off["partition"], off["offset"]))
        assert got is not None, f"accepted reading {value} missing at {off}"
        assert (got["greenhouse_id"], got["device_id"], got["measurements"]) == (value["greenhouse_id"], value["device_id"], value["measurements"])
        assert datetime.fromisoformat(str(got["ts"]).replace("Z", "+00:00")) == datetime.fromisoformat(value["ts"].replace("Z", "+00:00"))
    print(f"{len(accepted)} accepted readings all on the bus as sent ({len(stored)} records in the topic)")

    # the job whose driver ran on the dead node fails with a reason; the next attempt runs elsewhere
    status = wait_job(jobs, sid, {"SUCCEEDED", "FAILED", "STOPPED"}, 180)
    info = jobs.get_job_info(sid)
    print(f"job {sid} on the dead node: {status}: {info.message}")
    assert status == "FAILED" and info.message
    rerun = submit_and_wait(
        ray_cluster.dashboard_url, job_command(tmp_path / "rerun.json", "--blocks", "2", "--sleep-s", "0.1"), submission_id=sid, rerun_failed=True, headers=ray_cluster.headers, poll_s=1, timeout_s=300
    )
    assert rerun.ok and rerun.submission_id == f"{sid}-r1", rerun.logs[-2000:]
    assert job_summary(tmp_path / "rerun.json")["driver_node"] != victim_id

    # a new worker node: Serve places the missing replica there
    new = ray_cluster.add_worker()
    new_id = ray_cluster.node_ids()[new.name]
    running = gateway.wait_replicas(2, 300)
    assert {rep["node_id"] for rep in running} == {ids["worker-2"], new_id}
