"""Serving benchmark: ``POST /climate/control`` against a bare Serve endpoint that only echoes.

In one run on one machine (local Ray, 2 CPUs, embedded stores) it deploys

- ``echo``: a Serve deployment that returns the JSON it receives (proxy + one replica), and
- ``control``: the forecast/control app as deployed (ingress with online state from the sensor
  topic -> batched multiplexed Forecaster -> MPC policy -> signed dispatch + audit),

then measures

1. saturation throughput with ``--concurrency`` client threads (requests/s, p50/p99), and
2. latency at a fixed offered load of ``--rate`` requests/s (p50/p99),

and prints the ratio control/echo throughput and the p99 at the fixed rate. Targets (issue 5):
ratio >= 0.5 and p99 < 100 ms at 50 requests/s.

    python bench/serve.py [--seconds 20] [--concurrency 8] [--rate 50] [--greenhouses 4]
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.config import Settings  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stats(name: str, latencies: list[float], wall_s: float, errors: int) -> dict:
    lat = sorted(latencies)
    n = len(lat)
    return {
        "endpoint": name,
        "requests": n,
        "errors": errors,
        "requests_per_s": round(n / wall_s, 1) if wall_s else 0.0,
        "p50_ms": round(lat[n // 2] * 1000, 2) if n else None,
        "p99_ms": round(lat[min(n - 1, int(n * 0.99))] * 1000, 2) if n else None,
    }


def saturate(url: str, bodies: list[dict], seconds: float, concurrency: int) -> tuple[list[float], float, int]:
    """Closed loop: ``concurrency`` threads post back to back for ``seconds``."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker(i: int) -> None:
        with httpx.Client(timeout=30) as client:
            k = i
            while time.perf_counter() < stop:
                t = time.perf_counter()
                r = client.post(url, json=bodies[k % len(bodies)])
                dt = time.perf_counter() - t
                k += concurrency
                with lock:
                    if r.status_code == 200:
                        latencies.append(dt)
                    else:
                        errors[0] += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    return latencies, time.perf_counter() - started, errors[0]


def fixed_rate(url: str, bodies: list[dict], seconds: float, rate: float, threads: int = 16) -> tuple[list[float], float, int]:
    """Open loop: requests start on a fixed schedule of ``rate``/s (latency includes queueing)."""
    n = int(seconds * rate)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    local = threading.local()
    t0 = time.perf_counter() + 0.2

    def one(i: int) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(timeout=30)
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        r = client.post(url, json=bodies[i % len(bodies)])
        dt = time.perf_counter() - due  # from the scheduled start: late starts count
        with lock:
            if r.status_code == 200:
                latencies.append(dt)
            else:
                errors[0] += 1

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(n)))
    return latencies, time.perf_counter() - t0, errors[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each measurement (default 20)")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads for the saturation runs (default 8)")
    parser.add_argument("--rate", type=float, default=50.0, help="offered requests/s for the fixed-rate runs (default 50)")
    parser.add_argument("--greenhouses", type=int, default=4, help="greenhouses in the seeded state (default 4)")
    args = parser.parse_args(argv)

    import ray
    from ray import serve

    from app.preprocess import PreprocessParams, run_preprocess
    from app.serve.control import ControlAppArgs, application
    from app.sim.seed import seed_lake
    from app.train.pipeline import TrainJobParams, run_promotion, run_training
    from app.train.trainer import BoosterParams

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    settings = Settings(data_dir=tmp)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        print("seeding 2 days of readings ending now, training a model ...", file=sys.stderr)
        now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
        seed_lake(settings, greenhouses=args.greenhouses, days=2.0, start=now - timedelta(days=2), seed=3)
        run_preprocess(settings, PreprocessParams(horizons_min=(15, 60)))
        trained = run_training(settings, TrainJobParams(booster=BoosterParams(num_boost_round=120)))
        run_promotion(settings, trained.model_name)

        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})

        @serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=128)
        class Echo:
            async def __call__(self, request):
                return await request.json()

        serve.run(Echo.bind(), name="echo", route_prefix="/echo")
        serve.run(application(ControlAppArgs(settings=settings.for_replicas())), name="control", route_prefix="/climate")
        base = f"http://127.0.0.1:{port}"
        ids = [f"gh-{i:02d}" for i in range(1, args.greenhouses + 1)]
        with httpx.Client(base_url=base, timeout=60) as c:
            deadline = time.monotonic() + 120
            while c.get("/climate/healthz").json()["greenhouses"] != ids and time.monotonic() < deadline:
                time.sleep(0.5)
            probe = c.post("/climate/control", json={"greenhouse_id": ids[0]}).json()
        print(f"control probe: mode={probe['decision']['mode']} dispatch={probe['dispatch']['status']}", file=sys.stderr)
        bodies = [{"greenhouse_id": gh} for gh in ids]
        echo_bodies = [{"greenhouse_id": gh, "pad": "x" * 40} for gh in ids]

        results = {}
        for name, url, b in (("echo", f"{base}/echo", echo_bodies), ("control", f"{base}/climate/control", bodies)):
            saturate(url, b, 3.0, args.concurrency)  # warm-up
            lat, wall, err = saturate(url, b, args.seconds, args.concurrency)
            results[f"{name}_saturated"] = stats(name, lat, wall, err)
            print(f"  {name:8s} saturated: {results[f'{name}_saturated']}", file=sys.stderr)
            lat, wall, err = fixed_rate(url, b, args.seconds, args.rate)
            results[f"{name}_at_{args.rate:g}rps"] = stats(name, lat, wall, err)
            print(f"  {name:8s} at {args.rate:g}/s:  {results[f'{name}_at_{args.rate:g}rps']}", file=sys.stderr)
        with httpx.Client(base_url=base, timeout=60) as c:
            modes = c.get("/climate/healthz").json()
        ratio = results["control_saturated"]["requests_per_s"] / max(results["echo_saturated"]["requests_per_s"], 1e-9)
        p99 = results[f"control_at_{args.rate:g}rps"]["p99_ms"]
        print(f"\ncontrol/echo throughput: {ratio:.3f} (target >= 0.5)   control p99 at {args.rate:g}/s: {p99} ms (target < 100)")
        print(json.dumps({"bench": "serve", "results": results, "ratio_control_over_echo": round(ratio, 3), "control_p99_ms_at_rate": p99, "probe_mode": probe["decision"]["mode"], "model_error": modes.get("model_error")}))
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
