"""Serve that scales: the shipped configs autoscale the HTTP-facing deployments and bound their
queues, and an overloaded gateway answers 503 at once, losing nothing it accepted."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from app.bus import open_bus
from app.config import Settings
from tests.ingest.conftest import make_devices

REPO = Path(__file__).resolve().parents[2]
SCALED = {("ingest", "IngestGateway"), ("control", "ControlApp"), ("control", "Forecaster")}


def shipped_deployments() -> dict[tuple[str, str], dict]:
    out = {}
    for path in sorted((REPO / "serve_configs").glob("*.yaml")):
        for app in yaml.safe_load(path.read_text())["applications"]:
            for deployment in app.get("deployments", []):
                out[(app["name"], deployment["name"])] = deployment
    return out


def test_the_http_facing_deployments_autoscale_with_bounded_queues():
    deployments = shipped_deployments()
    assert SCALED <= set(deployments)
    for key in SCALED:
        d = deployments[key]
        scaling = d["autoscaling_config"]
        assert "num_replicas" not in d, key  # Serve refuses both
        assert 1 <= scaling["min_replicas"] < scaling["max_replicas"], key
        assert 0 < scaling["target_ongoing_requests"] < d["max_ongoing_requests"], key
        assert 0 < d["max_queued_requests"] <= 4 * d["max_ongoing_requests"], key
    assert deployments[("control", "ControlLoop")].get("num_replicas") == 1  # leases share the fleet; no autoscaling


@pytest.mark.serve
def test_an_overloaded_gateway_answers_503_at_once_and_loses_nothing_accepted(ray_serve, tmp_path, reading):
    """One replica taking one request at a time with one waiting: 40 clients at once. The ones
    that do not fit are answered 503 within a second; every record of every 200 is on the bus."""
    from ray import serve

    from app.serve.args import AppArgs
    from app.serve.ingest import IngestGateway

    settings = Settings(data_dir=tmp_path / "gh")
    devices = make_devices(settings.metadata_url)
    app = IngestGateway.options(max_ongoing_requests=1, max_queued_requests=1, num_replicas=1).bind(AppArgs(settings=settings.for_replicas()))
    serve.run(app, name="ingest-overload", route_prefix="/overload")
    body = orjson.dumps({"records": [{"value": reading(i)} for i in range(2000)]})  # a slow request: 2,000 records

    async def post(client: httpx.AsyncClient) -> tuple[int, float, dict | None]:
        t = time.perf_counter()
        r = await client.post("/overload/topics/greenhouse.sensors", content=body, headers={"content-type": "application/vnd.kafka.json.v2+json", "authorization": devices.auth()})
        return r.status_code, time.perf_counter() - t, r.json() if r.status_code == 200 else None

    async def flood() -> list[tuple[int, float, dict | None]]:
        async with httpx.AsyncClient(base_url=ray_serve, timeout=120) as client:
            await post(client)  # warm
            return await asyncio.gather(*(post(client) for _ in range(40)))

    try:
        results = asyncio.run(flood())
    finally:
        serve.delete("ingest-overload")
    statuses = [s for s, _, _ in results]
    refused = [t for s, t, _ in results if s == 503]
    print(f"40 at once: {statuses.count(200)} accepted, {len(refused)} refused with 503 in at most {max(refused, default=0) * 1000:.0f} ms")
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(503) >= 10 and statuses.count(200) >= 2, statuses
    assert max(refused) < 1.0, "a refused request waited"
    accepted = sum(1 for s, _, b in results if s == 200 for o in b["offsets"] if o["error_code"] is None)  # type: ignore[index]
    on_bus = sum(open_bus(settings.bus_url).end_offsets(settings.topics.sensors).values())
    assert on_bus == accepted + 2000  # the warm-up request, and every record of every 200
