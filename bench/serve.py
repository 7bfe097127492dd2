"""Serving benchmark: ``POST /climate/control`` against a bare Serve endpoint that only echoes.

In one run on one machine (local Ray, 2 CPUs, embedded stores) it deploys

- ``echo``: a Serve deployment that returns the JSON it receives (proxy + one replica), and
- ``control``: the forecast/control app as deployed (ingress with online state from the sensor
  topic -> batched multiplexed Forecaster -> MPC policy -> signed dispatch + audit),

then measures, for each with the same client,

1. saturation throughput with ``--concurrency`` closed-loop clients (requests/s, p50/p99), and
2. latency at a fixed offered load of ``--rate`` requests/s (open loop: latency counts from each
   request's scheduled start, so queueing counts; p50/p99),

and prints the ratio control/echo throughput and the p99 at the fixed rate, then one JSON line
with every figure. Targets (issue 5): ratio >= 0.5 and p99 < 100 ms at 50 requests/s.

Saturation uses 32 clients by default: control crosses more hops than echo (ingress ->
forecaster -> dispatch thread), so with few clients it is bound by its latency rather than by the
CPU and the ratio understates its capacity. Each measurement also records the CPU the bench's
processes used (per Ray process, in cores and CPU milliseconds per request; Linux /proc) and the
CPU used outside the bench (``outside_cores``: other work on the machine makes figures noisy).

The load generator (``--client go``, the default) is ``bench/loadgen`` (Go, standard library
only): it is built into ``~/.cache/greenhouse-mlops/bin/gh-loadgen`` on first use and again
whenever its source is newer than the binary (binaries never go into the repository). It needs
far less CPU than a Python client, which matters on a 2-core machine where the client shares the
cores with the server. Without Go (and no up-to-date binary) the benchmark falls back to the
Python client (``--client python``: httpx in a thread pool) and says so; its figures are then
pessimistic, the client taking CPU the server needs.

Readings keep arriving during every run, as in operation: a feeder thread produces
``--steps-per-s`` simulated minutes of every greenhouse's devices to the sensor topic (through the
gateway's service code, continuing the seeded simulation, so simulated time runs ahead of the
clock). A ``/control`` request after its greenhouse's new readings rebuilds the features from the
2-hour window (``latest_feature_row``, ~2 ms alone); later ones hit the cache. The default, 13 steps/s
over 4 greenhouses, puts a new step between any two decisions for a greenhouse at 50 requests/s,
so every decision of the fixed-rate run pays a rebuild; each run reports ``feature_builds`` per
request (from ``/healthz``). ``--steps-per-s 0`` measures the cached path alone.

Both apps sit behind the same ingress, chosen with ``--ingress``: HAProxy forwarding straight to
an HTTP server in each ingress replica (the product's setting, ``app/serve/tuning.py``), or Serve's
Python proxy actor. The echo is far cheaper behind HAProxy, so the ratio is a harder bar there.

    python bench/serve.py [--seconds 20] [--concurrency 32] [--rate 50] [--greenhouses 4] [--steps-per-s 13] [--client go|python] [--ingress haproxy|proxy]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.config import Settings  # noqa: E402
from app.serve.tuning import free_port  # noqa: E402

LOADGEN_SRC = REPO / "bench" / "loadgen"


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
        "max_ms": round(lat[-1] * 1000, 2) if n else None,
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


def loadgen_binary() -> Path | None:
    """The Go load generator, (re)built when its source is newer than the binary; ``None`` when it
    cannot be had (no Go toolchain and no up-to-date binary, or the build failed)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    binary = cache / "greenhouse-mlops" / "bin" / "gh-loadgen"
    newest_source = max(f.stat().st_mtime for f in LOADGEN_SRC.iterdir() if f.suffix in (".go", ".mod"))
    if binary.exists() and binary.stat().st_mtime >= newest_source:
        return binary
    go = shutil.which("go")
    if go is None:
        return None
    binary.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    done = subprocess.run([go, "build", "-o", str(binary), "."], cwd=LOADGEN_SRC, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"warning: building bench/loadgen failed:\n{done.stderr.strip()}", file=sys.stderr)
        return None
    return binary


def run_loadgen(binary: Path, name: str, url: str, bodies: list[dict], seconds: float, *, concurrency: int = 0, rate: float = 0.0) -> dict:
    """One Go load-generator run (closed loop with ``concurrency``, open loop at ``rate``)."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        f.write("\n".join(json.dumps(b) for b in bodies) + "\n")
    try:
        cmd = [str(binary), "-url", url, "-bodies", f.name, "-duration", str(seconds), "-procs", "1"]
        cmd += ["-concurrency", str(concurrency)] if concurrency else ["-rate", str(rate)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    finally:
        os.unlink(f.name)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "endpoint": name,
        "requests": out["requests"],
        "errors": out["errors"],
        "requests_per_s": out["requests_per_s"],
        "p50_ms": out["p50_ms"],
        "p99_ms": out["p99_ms"],
        "max_ms": out["max_ms"],
        **({"first_error": out["first_error"]} if out.get("first_error") else {}),
    }


def _cpu_snapshot() -> tuple[float, float, dict[int, tuple[str, float]]] | None:
    """(wall time, machine busy CPU seconds, {pid: (name, CPU seconds)} for this process and its
    descendants: the local Ray cluster, its workers and the load generator). Linux only."""
    try:
        hz = os.sysconf("SC_CLK_TCK")
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError, AttributeError):
        return None
    busy = (sum(ticks) - ticks[3] - ticks[4]) / hz  # minus idle and iowait
    procs: dict[int, tuple[str, float]] = {}
    todo = [os.getpid()]
    while todo:
        pid = todo.pop()
        try:
            for task in os.listdir(f"/proc/{pid}/task"):  # every thread's children: Ray's HAProxyManager
                with open(f"/proc/{pid}/task/{task}/children") as f:  # starts HAProxy from its event-loop thread
                    todo += [int(c) for c in f.read().split()]
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except (OSError, ValueError):
            continue
        title = argv[0].decode(errors="replace")
        if title.startswith("ray::"):  # a worker: ray::<actor class>[.<method running>]
            name = title.split()[0].split(".")[0]
        elif pid == os.getpid():
            name = "bench driver"
        elif "python" in Path(title.split()[0]).name:  # name it by its script or module
            script = next((a.decode(errors="replace") for a in argv[1:] if a and not a.startswith(b"-")), "")
            name = "python " + Path(script).name
        else:
            name = Path(title.split()[0]).name
        procs[pid] = (name, (int(fields[11]) + int(fields[12])) / hz)
    return time.monotonic(), busy, procs


def cpu_use(before, after, requests_per_s: float) -> dict | None:
    """CPU per process group between two snapshots: cores, and CPU milliseconds per request."""
    if before is None or after is None:
        return None
    wall = after[0] - before[0]
    by_name: dict[str, float] = {}
    for pid, (name, cpu) in after[2].items():
        start = before[2].get(pid, (name, 0.0))[1]
        by_name[name] = by_name.get(name, 0.0) + max(0.0, cpu - start)
    ours = sum(by_name.values()) / wall
    top = sorted(by_name.items(), key=lambda kv: -kv[1])
    return {
        "machine_busy_cores": round((after[1] - before[1]) / wall, 2),
        "bench_cores": round(ours, 2),
        "bench_cpu_ms_per_request": round(1000 * ours / requests_per_s, 1) if requests_per_s else None,
        "outside_cores": round((after[1] - before[1]) / wall - ours, 2),  # other work on the machine
        "processes": {name: {"cores": round(cpu / wall, 3), "cpu_ms_per_request": round(1000 * cpu / wall / requests_per_s, 2) if requests_per_s else None} for name, cpu in top if cpu / wall >= 0.01},
    }


class ReadingFeeder:
    """Produces simulated minutes of every greenhouse to the sensor topic, ``steps_per_s`` a second,
    on a daemon thread (through the gateway's service code, as devices' readings arrive)."""

    def __init__(self, settings: Settings, fleet, steps_per_s: float) -> None:
        from app.bus import open_bus
        from app.ingest.gateway import IngestService
        from app.security.credentials import DeviceRegistry
        from app.sim.credentials import FleetCredentials

        self._settings = settings
        registry = DeviceRegistry.from_settings(settings)
        self._credentials = FleetCredentials.for_fleet(registry, fleet)  # each device posts with its own token
        self._service = IngestService(settings, open_bus(settings.bus_url), registry)
        self._fleet = fleet
        self._interval_s = 1.0 / steps_per_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reading-feeder", daemon=True)
        self.steps = 0
        self.rejected = 0

    def start(self) -> ReadingFeeder:
        self._thread.start()
        return self

    def _run(self) -> None:
        import orjson

        from app.ingest.gateway import JSON_V2

        due = time.monotonic()
        while not self._stop.is_set():
            for reading in self._fleet.step():
                body = orjson.dumps({"records": [{"value": reading}]})
                res = self._service.produce(self._settings.topics.sensors, body, content_type=JSON_V2, authorization=self._credentials.authorization_for(reading))
                self.rejected += sum(o["error_code"] is not None for o in res.body["offsets"])
            self.steps += 1
            due += self._interval_s
            self._stop.wait(max(0.0, due - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _number(minimum: float, *, inclusive: bool):
    """An argparse type: a float at least (or above) ``minimum``, else a clear error (exit 2)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (value >= minimum if inclusive else value > minimum) or value != value:
            raise argparse.ArgumentTypeError(f"{text} must be {'>=' if inclusive else '>'} {minimum:g}")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=_number(0, inclusive=False), default=20.0, help="duration of each measurement (default 20)")
    parser.add_argument("--concurrency", type=int, default=None, help="closed-loop clients for the saturation runs (default 32 with the Go client, 8 with Python threads)")
    parser.add_argument("--rate", type=_number(0, inclusive=False), default=50.0, help="offered requests/s for the fixed-rate runs (default 50)")
    parser.add_argument("--greenhouses", type=int, default=4, help="greenhouses in the seeded state (default 4)")
    parser.add_argument(
        "--steps-per-s",
        type=_number(0, inclusive=True),
        default=13.0,
        help="simulated minutes of readings (every greenhouse's devices) produced per second during the runs (default 13: at"
        " 50 requests/s over 4 greenhouses every decision follows new readings); 0: none, every decision hits the feature cache",
    )
    parser.add_argument("--control-replicas", type=int, default=1, help="ControlApp replicas (default 1, as serve_configs/control.yaml deploys it)")
    parser.add_argument("--client", choices=("go", "python"), default="go", help="load generator: bench/loadgen in Go (default; light on CPU) or httpx threads")
    parser.add_argument(
        "--ingress",
        choices=("haproxy", "proxy"),
        default=None,
        help="HTTP ingress of both apps: HAProxy straight to the ingress replicas (what the product ships) or Serve's Python"
        " proxy actor (RAY_SERVE_ENABLE_HA_PROXY=0); default: the environment's setting, else haproxy",
    )
    args = parser.parse_args(argv)

    binary = None
    if args.client == "go":
        binary = loadgen_binary()
        if binary is None:
            print(
                "WARNING: Go load generator unavailable (no `go` on PATH, or its build failed): falling back to the Python"
                " client, whose CPU use on a small machine makes the server figures pessimistic",
                file=sys.stderr,
            )
    client = "go" if binary is not None else "python"
    concurrency = args.concurrency or (32 if client == "go" else 8)

    import ray
    from ray import serve

    from app.preprocess import PreprocessParams, run_preprocess
    from app.serve.args import AppArgs
    from app.serve.control import ControlApp, application
    from app.serve.forecaster import Forecaster
    from app.serve.serving_models import ModelConfig
    from app.serve.tuning import ACCESS_LOG_OFF, apply_serve_process_env
    from app.sim.fleet import FleetSimulator
    from app.sim.seed import seed_lake
    from app.train.pipeline import TrainJobParams, run_promotion, run_training
    from app.train.trainer import BoosterParams

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    settings = Settings(data_dir=tmp)
    # the feeder's simulated time runs ahead of the clock (13 steps/s: ~22 simulated hours in a run)
    settings = settings.model_copy(update={"ingest": settings.ingest.model_copy(update={"max_future_skew_s": 30 * 86_400.0})})
    if args.ingress is not None:
        os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1" if args.ingress == "haproxy" else "0"
    serve_env = apply_serve_process_env()  # both apps run under the same cluster settings
    ingress = "haproxy" if serve_env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" else "proxy"
    print(f"ingress: {ingress} (both apps)", file=sys.stderr)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        print("seeding 2 days of readings ending now, training a model ...", file=sys.stderr)
        now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
        seed_lake(settings, greenhouses=args.greenhouses, days=2.0, start=now - timedelta(days=2), seed=3)
        fleet = FleetSimulator(args.greenhouses, now - timedelta(days=2), step_s=60, seed=3)
        for _ in fleet.iter_steps(2 * 86_400):  # the seeded days again: the feeder continues them
            pass
        run_preprocess(settings, PreprocessParams(horizons_min=(15, 60)))
        trained = run_training(settings, TrainJobParams(booster=BoosterParams(num_boost_round=120)))
        run_promotion(settings, trained.model_name)

        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})

        @serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=128, logging_config=ACCESS_LOG_OFF)
        class Echo:
            async def __call__(self, request):
                return await request.json()

        serve.run(Echo.bind(), name="echo", route_prefix="/echo")
        app_args = AppArgs(settings=settings.for_replicas())
        control_app = application(app_args)
        if args.control_replicas != 1:  # what application() builds, with more ingress replicas
            control_app = ControlApp.options(num_replicas=args.control_replicas, user_config=ModelConfig().model_dump()).bind(Forecaster.bind(app_args), app_args)
        serve.run(control_app, name="control", route_prefix="/climate")
        base = f"http://127.0.0.1:{port}"
        ids = [f"gh-{i:02d}" for i in range(1, args.greenhouses + 1)]
        with httpx.Client(base_url=base, timeout=60) as c:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                health = c.get("/climate/healthz")
                if health.status_code == 200 and health.json()["greenhouses"] == ids:
                    break
                time.sleep(0.5)
            probe = c.post("/climate/control", json={"greenhouse_id": ids[0]}).json()
        print(f"control probe: mode={probe['decision']['mode']} dispatch={probe['dispatch']['status']}", file=sys.stderr)
        bodies = [{"greenhouse_id": gh} for gh in ids]
        echo_bodies = [{"greenhouse_id": gh, "pad": "x" * 40} for gh in ids]

        results = {}
        print(f"load generator: {client}" + (f" ({binary})" if binary else ""), file=sys.stderr)
        feeder = ReadingFeeder(settings, fleet, args.steps_per_s).start() if args.steps_per_s > 0 else None
        print(f"readings: {args.steps_per_s:g} simulated minutes/s of {len(ids)} greenhouses during the runs", file=sys.stderr)

        def feature_builds() -> int:
            with httpx.Client(base_url=base, timeout=60) as c:
                return int(c.get("/climate/healthz").json()["feature_builds"])

        def measured(key: str, run) -> None:
            builds = feature_builds() if key.startswith("control") else 0
            before = _cpu_snapshot()
            results[key] = run()
            results[key]["cpu"] = cpu_use(before, _cpu_snapshot(), results[key]["requests_per_s"])
            if key.startswith("control") and args.control_replicas == 1 and results[key]["requests"]:
                results[key]["feature_builds_per_request"] = round((feature_builds() - builds) / results[key]["requests"], 3)
            shown = {k: v for k, v in results[key].items() if k != "cpu"}
            cpu = results[key]["cpu"] or {}
            shown["cpu_ms_per_request"] = {k: v["cpu_ms_per_request"] for k, v in list(cpu.get("processes", {}).items())[:4]}
            shown["outside_cores"] = cpu.get("outside_cores")
            print(f"  {key:22s} {shown}", file=sys.stderr)

        for name, url, b in (("echo", f"{base}/echo", echo_bodies), ("control", f"{base}/climate/control", bodies)):
            if binary is not None:
                run_loadgen(binary, name, url, b, 3.0, concurrency=concurrency)  # warm-up
                measured(f"{name}_saturated", partial(run_loadgen, binary, name, url, b, args.seconds, concurrency=concurrency))
                measured(f"{name}_at_{args.rate:g}rps", partial(run_loadgen, binary, name, url, b, args.seconds, rate=args.rate))
            else:
                saturate(url, b, 3.0, concurrency)  # warm-up
                measured(f"{name}_saturated", lambda: stats(name, *saturate(url, b, args.seconds, concurrency)))  # noqa: B023 (called at once)
                measured(f"{name}_at_{args.rate:g}rps", lambda: stats(name, *fixed_rate(url, b, args.seconds, args.rate)))  # noqa: B023
        if feeder is not None:
            feeder.stop()
        with httpx.Client(base_url=base, timeout=60) as c:
            modes = c.get("/climate/healthz").json()
        ratio = results["control_saturated"]["requests_per_s"] / max(results["echo_saturated"]["requests_per_s"], 1e-9)
        p99 = results[f"control_at_{args.rate:g}rps"]["p99_ms"]
        print(f"\ningress {ingress}: control/echo throughput: {ratio:.3f} (target >= 0.5)   control p99 at {args.rate:g}/s: {p99} ms (target < 100)")
        print(
            json.dumps(
                {
                    "bench": "serve",
                    "ingress": ingress,
                    "client": client,
                    "concurrency": concurrency,
                    "control_replicas": args.control_replicas,
                    "steps_per_s": args.steps_per_s,
                    "feeder_steps": feeder.steps if feeder else 0,
                    "feeder_rejected": feeder.rejected if feeder else 0,
                    "serve_env": serve_env,
                    "results": results,
                    "ratio_control_over_echo": round(ratio, 3),
                    "control_p99_ms_at_rate": p99,
                    "probe_mode": probe["decision"]["mode"],
                    "model_error": modes.get("model_error"),
                }
            )
        )
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
