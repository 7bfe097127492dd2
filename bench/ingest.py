"""Ingest benchmark: records/s and latency through the gateway into the bus, with baselines.

For batches of 1 and 100 records per request it measures, in one run on one machine:

- ``direct``: the same records written straight to the bus (``Bus.produce``), no HTTP;
- ``uvicorn``: the same validation-and-produce code (``create_api(IngestService)``) behind plain
  uvicorn in its own process, no Serve;
- ``serve``: the gateway on Ray Serve (proxy + replica), as deployed.

and prints the ratios serve/direct and serve/uvicorn. Load comes from ``--concurrency`` client
threads in this process with keep-alive connections. Like real devices, the requests carry device
tokens: eight devices (one per greenhouse) are registered in each mode's metadata store, and every
request holds one device's readings and its token.

    python bench/ingest.py [--requests-1 1500] [--requests-100 200] [--concurrency 8] [--bus-url URL]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.bus import OutgoingRecord, open_bus  # noqa: E402
from app.config import Settings  # noqa: E402
from app.contracts.reading import validate_reading  # noqa: E402
from app.ingest.gateway import JSON_V2  # noqa: E402
from app.serve.tuning import free_port  # noqa: E402

DEVICES = 8


def device(i: int) -> tuple[str, str]:
    """``(device_id, greenhouse_id)`` of bench device ``i``."""
    return f"gh-{i % DEVICES + 1:02d}-climate", f"gh-{i % DEVICES + 1:02d}"


def make_groups(batch: int, count: int) -> list[tuple[int, list[dict]]]:
    """``count`` request bodies' readings of ``batch`` readings each, as ``(device index, readings)``:
    one device per request, the devices in turn, every reading at its own second."""
    start = datetime(2026, 6, 1, tzinfo=timezone.utc)
    groups = []
    for j in range(count):
        device_id, greenhouse_id = device(j)
        ts = [start + timedelta(seconds=j * batch + k) for k in range(batch)]
        readings = [
            {
                "greenhouse_id": greenhouse_id,
                "device_id": device_id,
                "ts": t.isoformat().replace("+00:00", "Z"),
                "measurements": {"air_temp_c": 21.4, "rh_pct": 71.0, "co2_ppm": 455.0, "par_umol_m2_s": 640.0},
            }
            for t in ts
        ]
        groups.append((j % DEVICES, readings))
    return groups


def register_devices(settings: Settings) -> list[str]:
    """Register the bench devices in ``settings``' metadata store; their tokens by device index."""
    from app.security.credentials import DeviceRegistry

    registry = DeviceRegistry.from_settings(settings)
    try:
        return [registry.add(*device(i)) for i in range(DEVICES)]
    finally:
        registry.close()


def make_readings(n: int) -> list[dict]:
    """``n`` readings of the bench devices (for the validation timing)."""
    return [r for _, group in make_groups(1, n) for r in group]


def summarise(name: str, batch: int, latencies: list[float], wall_s: float) -> dict:
    lat = sorted(latencies)
    records = len(lat) * batch
    return {
        "mode": name,
        "batch": batch,
        "requests": len(lat),
        "records_per_s": round(records / wall_s, 1),
        "requests_per_s": round(len(lat) / wall_s, 1),
        "p50_ms": round(lat[len(lat) // 2] * 1000, 2),
        "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 2),
    }


def bench_direct(settings: Settings, bodies: list[list[dict]], batch: int) -> dict:
    """Baseline: validate nothing, skip HTTP, write the same records straight to the bus."""
    bus = open_bus(settings.bus_url)
    bus.create_topic(settings.topics.sensors, settings.topics.partitions)
    prepared = [[OutgoingRecord(orjson.dumps(r), key=r["greenhouse_id"].encode()) for r in body] for body in bodies]
    latencies = []
    started = time.perf_counter()
    for records in prepared:
        t = time.perf_counter()
        bus.produce(settings.topics.sensors, records)
        latencies.append(time.perf_counter() - t)
    return summarise("direct", batch, latencies, time.perf_counter() - started)


def load(url: str, bodies: list[tuple[str, bytes]], concurrency: int) -> tuple[list[float], float]:
    """POST every ``(token, body)`` with ``concurrency`` threads; return per-request latencies and wall time."""
    local = threading.local()
    latencies: list[float] = []
    lock = threading.Lock()

    def one(request: tuple[str, bytes]) -> None:
        token, body = request
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(timeout=60)
        t = time.perf_counter()
        r = client.post(url, content=body, headers={"content-type": JSON_V2, "authorization": f"Bearer {token}"})
        elapsed = time.perf_counter() - t
        if r.status_code != 200:
            raise RuntimeError(f"{url} answered {r.status_code}: {r.text[:200]}")
        with lock:
            latencies.append(elapsed)

    warm = min(20, len(bodies))
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, bodies[:warm]))
        latencies.clear()
        started = time.perf_counter()
        list(pool.map(one, bodies[warm:]))
        wall = time.perf_counter() - started
    return latencies, wall


def _uvicorn_main(settings_json: str, port: int) -> None:
    import uvicorn

    from app.ingest.api import create_api
    from app.ingest.gateway import IngestService
    from app.security.credentials import DeviceRegistry

    settings = Settings.model_validate_json(settings_json)
    api = create_api(IngestService(settings, open_bus(settings.bus_url), DeviceRegistry.from_settings(settings)))
    uvicorn.run(api, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def wait_ready(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout_s} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests-1", type=int, default=1500, help="requests measured with 1 record each")
    parser.add_argument("--requests-100", type=int, default=200, help="requests measured with 100 records each")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads")
    parser.add_argument("--bus-url", default=None, help="bus URL (default: an embedded bus in a temp dir)")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="gh-bench-ingest-"))
    results = []
    plan = [(1, args.requests_1), (100, args.requests_100)]

    run = root.name.rsplit("-", 1)[-1]
    topic = f"bench.sensors.{run}"  # a real bus keeps topics: never write into the product's topic

    def settings_for(name: str) -> Settings:
        overrides = {"bus_url": args.bus_url} if args.bus_url else {}
        topics = {"sensors": f"{topic}.{name}", "deadletter": f"bench.dead.{run}.{name}", "control": f"bench.control.{run}.{name}"}
        return Settings(data_dir=root / name, topics=topics, ingest={"topics": [topics["sensors"]]}, **overrides)

    print(f"# ingest benchmark, data in {root}", file=sys.stderr)
    # one reading's validation cost, for context
    sample = make_readings(1)[0]
    t = time.perf_counter()
    for _ in range(2000):
        validate_reading(sample)
    validate_us = (time.perf_counter() - t) / 2000 * 1e6

    def requests_for(settings: Settings, groups: list[tuple[int, list[dict]]]) -> list[tuple[str, bytes]]:
        tokens = register_devices(settings)
        return [(tokens[d], orjson.dumps({"records": [{"value": r} for r in g]})) for d, g in groups]

    for batch, n in plan:
        groups = make_groups(batch, n + 20)
        results.append(bench_direct(settings_for(f"direct-{batch}"), [g for _, g in groups[20:]], batch))
        print(f"  direct   batch={batch}: {results[-1]['records_per_s']} records/s", file=sys.stderr)

        port = free_port()
        ctx = multiprocessing.get_context("spawn")
        uvicorn_settings = settings_for(f"uvicorn-{batch}")
        bodies = requests_for(uvicorn_settings, groups)
        proc = ctx.Process(target=_uvicorn_main, args=(orjson.dumps(uvicorn_settings.for_replicas()).decode(), port), daemon=True)
        proc.start()
        try:
            wait_ready(f"http://127.0.0.1:{port}/healthz")
            lat, wall = load(f"http://127.0.0.1:{port}/topics/{topic}.uvicorn-{batch}", bodies, args.concurrency)
            results.append(summarise("uvicorn", batch, lat, wall))
        finally:
            proc.terminate()
            proc.join(10)
        print(f"  uvicorn  batch={batch}: {results[-1]['records_per_s']} records/s", file=sys.stderr)

    import ray
    from ray import serve

    from app.serve.args import AppArgs
    from app.serve.ingest import build_app

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        for batch, n in plan:
            serve_settings = settings_for(f"serve-{batch}")
            bodies = requests_for(serve_settings, make_groups(batch, n + 20))
            serve.run(build_app(AppArgs(settings=serve_settings.for_replicas())), name=f"ingest-{batch}", route_prefix=f"/b{batch}")
            lat, wall = load(f"http://127.0.0.1:{port}/b{batch}/topics/{topic}.serve-{batch}", bodies, args.concurrency)
            results.append(summarise("serve", batch, lat, wall))
            print(f"  serve    batch={batch}: {results[-1]['records_per_s']} records/s", file=sys.stderr)
            serve.delete(f"ingest-{batch}")
    finally:
        serve.shutdown()
        ray.shutdown()

    by = {(r["mode"], r["batch"]): r for r in results}
    ratios = {}
    for batch, _ in plan:
        s = by[("serve", batch)]["records_per_s"]
        ratios[f"batch{batch}_serve_over_direct"] = round(s / by[("direct", batch)]["records_per_s"], 4)
        ratios[f"batch{batch}_serve_over_uvicorn"] = round(s / by[("uvicorn", batch)]["records_per_s"], 4)

    print(f"\n{'mode':8} {'batch':>5} {'records/s':>11} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for r in results:
        print(f"{r['mode']:8} {r['batch']:>5} {r['records_per_s']:>11} {r['requests_per_s']:>9} {r['p50_ms']:>8} {r['p99_ms']:>8}")
    print()
    for k, v in ratios.items():
        print(f"{k:32} {v}")
    print(f"validate_reading: {validate_us:.1f} us per reading; concurrency {args.concurrency}; cpus 2 (client in the same machine)")
    print(json.dumps({"bench": "ingest", "results": results, "ratios": ratios, "validate_us": round(validate_us, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
