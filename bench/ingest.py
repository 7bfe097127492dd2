"""Ingest benchmark: records/s and latency through the gateway into the bus, with baselines.

In one run on one machine it measures the same readings through:

- ``direct``: written straight to the bus (``Bus.produce``, batches of 100), no HTTP, no checks;
- ``in-process``: the gateway's code (``IngestService.produce_as``: parse, validate, authorize,
  produce) called in this process, no HTTP: what a record costs the gateway itself;
- ``uvicorn``: the gateway's FastAPI app behind plain uvicorn in a process of its own, no Serve;
- ``serve``: the gateway on Ray Serve as the product ships it (``build_app``), behind HAProxy in
  Ray's throughput mode (``app.serve.tuning.apply_serve_process_env``; ``--ingress proxy`` for
  Serve's Python proxy actor instead, to compare).

Under uvicorn and Serve, four request shapes: REST Proxy v2 with 1 and with 100 records a request,
v3 with one record a request, and v3 streaming (100 records a request, one JSON object a line,
sent chunked, answered one result line each). Load comes from the compiled Go load generator
``bench/loadgen`` (``bench/loadgen_client.py``; closed loop, ``--concurrency`` connections, one
core) and every request carries a device token: eight devices, one per greenhouse, each request
holding one device's readings. An answer counts only when it is 200 (and, for v3, every result
line is ``error_code`` 200). Prints a table, the ratios (targets on 2 cores: serve/direct >= 0.5
at batch 100, serve/uvicorn >= 0.5 at batch 1) and one JSON line. The machine's load average is
printed too: other work on it makes the figures noisy.

    python bench/ingest.py [--seconds 8] [--concurrency 8] [--ingress haproxy|proxy] [--bus-url URL] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import multiprocessing
import os
import pstats
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.bus import OutgoingRecord, open_bus  # noqa: E402
from app.config import Settings  # noqa: E402
from app.ingest.gateway import JSON_V2  # noqa: E402
from app.serve.tuning import free_port  # noqa: E402
from bench.loadgen_client import loadgen_binary, run_loadgen  # noqa: E402

DEVICES = 8
BODIES_PER_DEVICE = 10  # distinct request bodies per device, sent round-robin


@dataclass(frozen=True)
class Shape:
    """One request shape: ``name``, records per request, the path under the gateway's base URL
    (``{topic}`` filled in), and how the load generator sends it."""

    name: str
    batch: int
    path: str
    content_type: str
    v3: bool = False
    chunked: bool = False


SHAPES = (
    Shape("v2", 1, "/topics/{topic}", JSON_V2),
    Shape("v2", 100, "/topics/{topic}", JSON_V2),
    Shape("v3", 1, "/v3/clusters/greenhouse/topics/{topic}/records", "application/json", v3=True),
    Shape("v3-stream", 100, "/v3/clusters/greenhouse/topics/{topic}/records", "application/json", v3=True, chunked=True),
)


def device(i: int) -> tuple[str, str]:
    """``(device_id, greenhouse_id)`` of bench device ``i``."""
    return f"gh-{i % DEVICES + 1:02d}-climate", f"gh-{i % DEVICES + 1:02d}"


def make_groups(batch: int, count: int) -> list[list[dict]]:
    """``count`` requests' readings, ``batch`` each: request ``j`` holds device ``j % 8``'s
    readings, every reading at its own second."""
    start = datetime(2026, 6, 1, tzinfo=timezone.utc)
    groups = []
    for j in range(count):
        device_id, greenhouse_id = device(j)
        groups.append(
            [
                {
                    "greenhouse_id": greenhouse_id,
                    "device_id": device_id,
                    "ts": (start + timedelta(seconds=j * batch + k)).isoformat().replace("+00:00", "Z"),
                    "measurements": {"air_temp_c": 21.4, "rh_pct": 71.0, "co2_ppm": 455.0, "par_umol_m2_s": 640.0},
                }
                for k in range(batch)
            ]
        )
    return groups


def body_of(shape: Shape, readings: list[dict]) -> bytes:
    """One request body of ``shape`` (v3: the records concatenated; the load generator puts one a line)."""
    if shape.v3:
        return b"".join(orjson.dumps({"value": {"type": "JSON", "data": r}}) for r in readings)
    return orjson.dumps({"records": [{"value": r} for r in readings]})


def register_devices(settings: Settings) -> list[str]:
    """Register the bench devices in ``settings``' metadata store; their tokens by device index."""
    from app.security.credentials import DeviceRegistry

    registry = DeviceRegistry.from_settings(settings)
    try:
        return [registry.add(*device(i)) for i in range(DEVICES)]
    finally:
        registry.close()


def figures(mode: str, shape: str, batch: int, requests_per_s: float, p50_ms: float | None, p99_ms: float | None, errors: int = 0) -> dict:
    return {
        "mode": mode,
        "shape": shape,
        "batch": batch,
        "records_per_s": round(requests_per_s * batch, 1),
        "requests_per_s": round(requests_per_s, 1),
        "p50_ms": p50_ms,
        "p99_ms": p99_ms,
        "errors": errors,
    }


def timed(mode: str, shape: str, batch: int, calls: list, seconds: float) -> dict:
    """Call ``calls`` in turn (round-robin) for ``seconds``; the figures of the calls."""
    latencies = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        t = time.perf_counter()
        calls[len(latencies) % len(calls)]()
        latencies.append(time.perf_counter() - t)
    wall = time.perf_counter() - started
    lat = sorted(latencies)
    return figures(mode, shape, batch, len(lat) / wall, round(lat[len(lat) // 2] * 1000, 2), round(lat[int(len(lat) * 0.99)] * 1000, 2))


def bench_direct(settings: Settings, seconds: float) -> dict:
    """Baseline: the same readings straight to the bus, 100 a write, no validation, no HTTP."""
    bus = open_bus(settings.bus_url, topics=settings.topics)
    bus.create_topic(settings.topics.sensors, settings.topics.partitions)
    prepared = [[OutgoingRecord(orjson.dumps(r), key=r["greenhouse_id"].encode()) for r in g] for g in make_groups(100, DEVICES * BODIES_PER_DEVICE)]
    return timed("direct", "bus", 100, [lambda records=records: bus.produce(settings.topics.sensors, records) for records in prepared], seconds)


def bench_in_process(settings: Settings, seconds: float, *, profile: bool) -> dict:
    """The gateway's own code without HTTP: ``IngestService.produce_as`` on v2 bodies of 100."""
    from app.ingest.gateway import IngestService
    from app.security.credentials import DeviceIdentity, DeviceRegistry

    service = IngestService(settings, open_bus(settings.bus_url, topics=settings.topics), DeviceRegistry.from_settings(settings))
    shape = SHAPES[1]
    bodies = [(DeviceIdentity(*device(j)), body_of(shape, g)) for j, g in enumerate(make_groups(100, DEVICES * BODIES_PER_DEVICE))]
    calls = [lambda who=who, body=body: service.produce_as(who, settings.topics.sensors, body, content_type=JSON_V2) for who, body in bodies]
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    result = timed("in-process", "v2", 100, calls, seconds)
    if profiler:
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(30)
        print(out.getvalue(), file=sys.stderr)
    assert service.stats.rejected == 0, service.stats
    return result


def _uvicorn_main(settings_json: str, port: int) -> None:
    import uvicorn

    from app.ingest.api import create_api
    from app.ingest.gateway import IngestService
    from app.security.credentials import DeviceRegistry

    settings = Settings.model_validate_json(settings_json)
    api = create_api(IngestService(settings, open_bus(settings.bus_url, topics=settings.topics), DeviceRegistry.from_settings(settings)))
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


def load_shapes(mode: str, binary: Path, base: str, settings: Settings, tokens: list[str], args: argparse.Namespace) -> list[dict]:
    """Every request shape against the gateway at ``base``; its /stats must show no rejection."""
    results = []
    for shape in SHAPES:
        bodies = [body_of(shape, g) for g in make_groups(shape.batch, DEVICES * BODIES_PER_DEVICE)]
        url = base + shape.path.format(topic=settings.topics.sensors)
        out = run_loadgen(
            binary,
            shape.name,
            url,
            bodies,
            args.seconds,
            concurrency=args.concurrency,
            tokens=tokens,
            content_type=shape.content_type,
            split_values=shape.v3,
            chunked=shape.chunked,
            check_results=shape.v3,
            warmup_s=args.warmup,
        )
        results.append(figures(mode, shape.name, shape.batch, out["requests_per_s"], out["p50_ms"], out["p99_ms"], out["errors"]))
        print(f"  {mode:8} {shape.name:9} batch={shape.batch:<3}: {results[-1]['records_per_s']:>9} records/s  {out.get('first_error', '')}", file=sys.stderr)
    stats = httpx.get(f"{base}/stats", timeout=10).json()
    if stats["rejected"]:
        raise RuntimeError(f"{mode}: the gateway rejected records: {stats}")
    return results


def bench_uvicorn(settings: Settings, binary: Path, args: argparse.Namespace) -> list[dict]:
    """The gateway's FastAPI app under plain uvicorn (one process, no Serve)."""
    tokens = register_devices(settings)
    port = free_port()
    proc = multiprocessing.get_context("spawn").Process(target=_uvicorn_main, args=(orjson.dumps(settings.for_replicas()).decode(), port), daemon=True)
    proc.start()
    try:
        wait_ready(f"http://127.0.0.1:{port}/healthz")
        return load_shapes("uvicorn", binary, f"http://127.0.0.1:{port}", settings, tokens, args)
    finally:
        proc.terminate()
        proc.join(10)


def bench_serve(settings: Settings, binary: Path, args: argparse.Namespace) -> tuple[str, list[dict]]:
    """The gateway on Ray Serve (``build_app``), behind the ingress ``args.ingress`` chooses."""
    from app.serve.tuning import apply_serve_process_env

    if args.ingress is not None:
        os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1" if args.ingress == "haproxy" else "0"
    ingress = "haproxy" if apply_serve_process_env()["RAY_SERVE_ENABLE_HA_PROXY"] == "1" else "proxy"
    import ray
    from ray import serve

    from app.serve.args import AppArgs
    from app.serve.ingest import build_app

    tokens = register_devices(settings)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(AppArgs(settings=settings.for_replicas())), name="ingest", route_prefix="/")
        return ingress, load_shapes("serve", binary, f"http://127.0.0.1:{port}", settings, tokens, args)
    finally:
        serve.shutdown()
        ray.shutdown()


def ratios_of(results: list[dict]) -> dict[str, float]:
    """serve over direct at batch 100 and serve over uvicorn for every shape."""
    by = {(r["mode"], r["shape"], r["batch"]): r["records_per_s"] for r in results}
    direct = by[("direct", "bus", 100)]
    out = {}
    for shape in SHAPES:
        key = (shape.name, shape.batch)
        serve, uvicorn = by[("serve", *key)], by[("uvicorn", *key)]
        if shape.batch == 100:
            out[f"{shape.name}_batch100_serve_over_direct"] = round(serve / direct, 3)
        out[f"{shape.name}_batch{shape.batch}_serve_over_uvicorn"] = round(serve / uvicorn, 3) if uvicorn else 0.0
    out["in_process_batch100_over_direct"] = round(by[("in-process", "v2", 100)] / direct, 3)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per mode and request shape")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds of load before each measurement")
    parser.add_argument("--concurrency", type=int, default=8, help="connections of the load generator")
    parser.add_argument("--ingress", choices=("haproxy", "proxy"), default=None, help="Serve's HTTP ingress: HAProxy to the replica (default, what the product ships) or Serve's Python proxy")
    parser.add_argument("--bus-url", default=None, help="bus URL (default: an embedded bus in a temp dir)")
    parser.add_argument("--profile", action="store_true", help="profile the in-process run and print where its time goes")
    args = parser.parse_args(argv)
    binary = loadgen_binary()
    if binary is None:
        parser.error("bench/loadgen could not be built: install Go (https://go.dev/dl/)")

    root = Path(tempfile.mkdtemp(prefix="gh-bench-ingest-"))
    run = root.name.rsplit("-", 1)[-1]

    def settings_for(name: str) -> Settings:  # a real bus keeps topics: never write into the product's topic
        topics = {"sensors": f"bench.sensors.{run}.{name}", "deadletter": f"bench.dead.{run}.{name}", "control": f"bench.control.{run}.{name}"}
        return Settings(data_dir=root / name, topics=topics, ingest={"topics": [topics["sensors"]]}, **({"bus_url": args.bus_url} if args.bus_url else {}))

    print(f"# ingest benchmark, data in {root}, load average {os.getloadavg()}", file=sys.stderr)
    results = [bench_direct(settings_for("direct"), args.seconds)]
    results.append(bench_in_process(settings_for("in-process"), args.seconds, profile=args.profile))
    for r in results:
        print(f"  {r['mode']:8} batch=100: {r['records_per_s']:>9} records/s", file=sys.stderr)
    results += bench_uvicorn(settings_for("uvicorn"), binary, args)
    ingress, served = bench_serve(settings_for("serve"), binary, args)
    results += served
    ratios = ratios_of(results)

    print(f"\n{'mode':10} {'shape':9} {'batch':>5} {'records/s':>11} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for r in results:
        print(f"{r['mode']:10} {r['shape']:9} {r['batch']:>5} {r['records_per_s']:>11} {r['requests_per_s']:>9} {r['p50_ms']!s:>8} {r['p99_ms']!s:>8} {r['errors']:>6}")
    print()
    for k, v in ratios.items():
        print(f"{k:40} {v}")
    load = os.getloadavg()
    print(f"serve ingress: {ingress}; bus: {args.bus_url or 'embedded'}; concurrency {args.concurrency}; 2 cpus for Ray, client on the same machine; load average now {load[0]:.2f}")
    print(json.dumps({"bench": "ingest", "ingress": ingress, "results": results, "ratios": ratios, "load_average": load}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
