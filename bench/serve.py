"""Control throughput benchmark (issue 16): the controller core in-process, the control loop's batch
path, and ``POST /climate/control``, in one run on one machine (local Ray, 2 CPUs, embedded stores),
with readings arriving throughout.

The yardstick is the work itself. Three throughputs of the same controller core with the same
registered model:

1. **in-process limit** (decisions/s): in the bench process, an :class:`~app.control.online.OnlineWindow`
   follows the sensor topic (a :class:`~app.control.online.SensorTopicFollower`, as serving does);
   once per control interval the bench builds every greenhouse's feature row
   (``OnlineWindow.features`` -> ``latest_feature_row``) and calls ``Controller.decide_sync`` with the
   registered model loaded in-process (``app.tracking.load_forecast_model``, one XGBoost thread, as a
   :class:`~app.control.core.ModelForecaster` predicting only the horizons asked, as the Forecaster
   deployment does). Decisions/s = greenhouses / pass time. ``Controller.decide_many`` over batches
   of ``loop.batch_size`` is measured in alternate intervals, as information.
2. **batch path** (decisions/s): the ``ControlLoop`` deployment of ``app.serve.control.application``
   (claims, features, one Forecaster call per batch through ``FleetDecider``, signed dispatch, a
   ``decisions`` record per greenhouse; claims and records written once per batch). Decisions/s = decided / busy_s of
   full intervals (every active greenhouse decided), read at ``GET /climate/loop``; the wall time
   of a whole fleet pass (from the reading that opens the interval until the replica's own status,
   asked through its deployment handle, counts every greenhouse decided) is reported too, and for
   ``--fleet-greenhouses`` (1,000) it is held against ``control.interval_s``.
3. **/climate/control**: saturation throughput with ``--concurrency`` closed-loop clients, and p50/p99
   at a fixed ``--rate`` requests/s (open loop: latency counts from each request's scheduled start).
   The loop is not deployed during these runs (``application(..., with_loop=False)``), so it does
   not compete for the cores; it is deployed afterwards for (2). ControlApp and the Forecaster run
   one replica each, pinned (``num_replicas=1``, no autoscaling), so every figure is per replica.

   **Concurrency sweep** (``--concurrency 1,2,4,8,16``, a comma-separated list): the closed-loop
   run once per value, in the order given, after one 3 s warm-up at the largest; it prints a table
   of clients, requests/s, p50, p99, errors, the ongoing requests of ControlApp and of the
   Forecaster (Serve's own count at each replica, the figure autoscaling holds against
   ``target_ongoing_requests``; sampled every 0.1 s from the replica actors) and both replicas'
   CPU-ms per request, to derive ``autoscaling_config`` targets from (the service time at 1 client,
   the saturation throughput, the in-flight count where p50 grows with the queue; see
   docs/scaling.md, "Serve autoscaling"). The JSON carries the runs under ``control_sweep`` and
   ``control_saturated`` is the run at the largest value. One value keeps the single run.

Targets on 2 cores: batch/in-process >= 0.6, control/in-process >= 0.3, p99 < 100 ms at 50
requests/s, and a 1,000-greenhouse fleet pass under one control interval.

Clock: event time. The deployment runs with ``control.simulated_plant`` and ``loop.event_time``: the
loop's clock is the newest reading's time, so a 300 s interval passes as soon as the feeder has
produced five simulated minutes. Why not the wall clock with fresh readings: one pass per 300 s of
wall time would make each measurement take many minutes, and a shorter ``control.interval_s``
would change the policy (rate limits are per interval) and, with readings at their real pace, let
decisions hit the feature cache, which in operation they never do (five new minutes per interval).
In event time every interval carries exactly the readings of five simulated minutes (15 per
greenhouse), so each decision rebuilds its features from the 2-hour window and the followers' work
per decision is what it is in operation. The feeder is *gated* during the interval runs: the step
that opens a new interval waits until the previous interval's pass is over (in-process: the bench's
pass; the loop: its replica's status counts every greenhouse decided), so every interval is a full
pass, none is skipped, and passes never overlap; the other four steps of an interval arrive while
the pass runs. The simulated fleet starts two hours before now (its first steps fill the windows)
and runs ahead of the wall clock, so ``/climate/control``, which decides at the wall clock, sees
fresh readings too.

Readings go straight to the sensor topic (key = greenhouse id, value = the reading's JSON, as the
gateway writes them) from a feeder thread in the bench process: through the gateway (HTTP or its
service code with per-device tokens), 1,000 greenhouses' readings would load the bench's CPU far
more than the servers'. The model is trained first on ``--train-greenhouses`` seeded greenhouses
(two days, on a bus of their own, so the serving bus holds only the measured fleet).

Greenhouses: ``--greenhouses`` (default 100) for the three throughputs and their ratios;
``--fleet-greenhouses`` (default 1,000; 0 skips it) for the fleet pass, a second fleet run through
the loop afterwards (the online window holds at most 1,024 greenhouses). ``--only-control`` skips
(1), (2) and the fleet pass: only /climate/control is measured (no ratios), in a few minutes
rather than many. ``--profile`` runs the in-process passes under cProfile and prints where their
time goes.

The load generator (``--client go``, the default) is ``bench/loadgen`` (Go, standard library
only): built into ``~/.cache/greenhouse-mlops/bin/gh-loadgen`` on first use and again whenever its
source is newer than the binary. Without Go the bench falls back to httpx threads (``--client
python``), whose CPU use on a 2-core machine makes the /control figures pessimistic. Requests carry
an operator token (scopes ``forecast:read`` and ``control:write``) issued for the run. Each run
also records the CPU the bench's processes used (per Ray process; Linux /proc) and the CPU used
outside the bench (``outside_cores``: other work on the machine makes figures noisy).

Progress goes to stderr; a summary and then one JSON line with every figure go to stdout.

    python bench/serve.py [--greenhouses 100] [--fleet-greenhouses 1000] [--intervals 4] [--seconds 20] [--rate 50] [--concurrency 32|1,2,4,8,16] [--steps-per-s 2] [--fleet-steps-per-s 1] [--client go|python] [--ingress haproxy|proxy] [--echo] [--profile] [--only-control]
    python bench/serve.py --only-control --concurrency 1,2,4,8,16 --seconds 15   # the per-replica table for autoscaling targets
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.config import Settings  # noqa: E402
from app.serve.tuning import free_port  # noqa: E402
from bench.loadgen_client import loadgen_binary, run_loadgen  # noqa: E402

WARM_STEPS = 125  # simulated minutes that fill an online window (features look back up to two hours)


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


def saturate(url: str, bodies: list[dict], seconds: float, concurrency: int, headers: dict[str, str] | None = None) -> tuple[list[float], float, int]:
    """Closed loop: ``concurrency`` threads post back to back for ``seconds``."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker(i: int) -> None:
        with httpx.Client(timeout=30, headers=headers) as client:
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


def fixed_rate(url: str, bodies: list[dict], seconds: float, rate: float, headers: dict[str, str] | None = None, threads: int = 16) -> tuple[list[float], float, int]:
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
            client = local.client = httpx.Client(timeout=30, headers=headers)
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
    """CPU per process group between two snapshots: cores, and CPU milliseconds per request (or
    per decision: ``requests_per_s`` is whatever rate the run achieved)."""
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


class BusFeeder:
    """A simulated fleet's readings, one simulated minute per step, produced straight to the sensor
    topic (key = greenhouse id, value = the reading's JSON, as the gateway writes them).

    :meth:`warm` produces steps at once (to fill the online windows); :meth:`start` produces
    ``steps_per_s`` steps a second on a daemon thread, and with a ``gate`` holds each step that
    opens a new control interval until ``gate.ready()`` (see the module docstring)."""

    def __init__(self, settings: Settings, fleet: Any) -> None:
        from app.bus import open_bus

        self.bus = open_bus(settings.bus_url)
        self.topic = settings.topics.sensors
        self.bus.create_topic(self.topic, settings.topics.partitions)
        self.fleet = fleet
        self.interval_s = settings.control.interval_s
        self.steps = 0
        self.readings = 0
        self.boundaries: list[datetime] = []
        """Interval starts produced by the gated thread, in order."""
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self) -> datetime:
        from app.bus import OutgoingRecord

        readings = self.fleet.step()
        self.bus.produce(self.topic, [OutgoingRecord(value=orjson.dumps(r), key=r["greenhouse_id"].encode()) for r in readings])
        self.steps += 1
        self.readings += len(readings)
        return self.fleet.now

    def next_opens_interval(self) -> bool:
        nxt = self.fleet.now + timedelta(seconds=self.fleet.step_s)
        return nxt.timestamp() % self.interval_s == 0

    def warm(self, steps: int) -> None:
        for _ in range(steps):
            self.step()

    def start(self, steps_per_s: float, gate: Any = None) -> BusFeeder:
        self.stop()
        self.boundaries = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(steps_per_s, gate, self._stop), name="reading-feeder", daemon=True)
        self._thread.start()
        return self

    def _run(self, steps_per_s: float, gate: Any, stop: threading.Event) -> None:
        period = 1.0 / steps_per_s
        due = time.monotonic()
        try:
            while not stop.is_set():
                if gate is not None and self.next_opens_interval():
                    while not gate.ready():
                        if stop.wait(0.05):
                            return
                    due = max(due, time.monotonic())
                    opened = self.step()
                    self.boundaries.append(opened)
                    gate.passed(opened)
                else:
                    self.step()
                due += period
                stop.wait(max(0.0, due - time.monotonic()))
        except Exception as exc:  # report, do not hang the bench
            self.error = f"{type(exc).__name__}: {exc}"
            print(f"feeder failed: {self.error}", file=sys.stderr)

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=60)
            self._thread = None


class PassGate:
    """In-process: a new interval's first step waits until the bench has decided the last one."""

    def __init__(self) -> None:
        self.opened = 0
        self.done = 0

    def ready(self) -> bool:
        return self.done >= self.opened

    def passed(self, _start: datetime) -> None:
        self.opened += 1


class LoopGate:
    """The loop: a new interval's first step waits until the loop replica says (``ControlLoop.status``
    through its deployment handle) that it has decided or failed ``expected`` greenhouses in the
    interval the last gated step opened (decisions, dispatch, records and claims all done), or its
    count has not moved for ``stall_s``, or ``timeout_s`` passed. Records each interval's wall time
    from the step that opened it to the moment the loop was seen done (polled every 0.1 s)."""

    def __init__(self, handle: Any, expected: int, *, stall_s: float = 60.0, timeout_s: float = 600.0) -> None:
        self.handle, self.expected = handle, expected
        self.stall_s, self.timeout_s = stall_s, timeout_s
        self.opened: datetime | None = None
        self.opened_at = self.changed = self.polled = 0.0
        self.count = -1
        self.walls: dict[datetime, float] = {}
        self._lock = threading.Lock()
        self.stalls = 0
        self.timeouts = 0

    def status(self) -> dict:
        return self.handle.status.remote().result(timeout_s=120)

    def poll(self) -> bool:
        """Look at the loop (at most every 0.1 s); whether the opened interval is done."""
        with self._lock:
            now = time.monotonic()
            if self.opened is None or self.opened in self.walls:
                return True
            if now - self.polled >= 0.1:
                self.polled = now
                current = self.status().get("current") or {}
                if current.get("interval_start") == self.opened:
                    done = current["decided"] + current["failed"]
                    if done != self.count:
                        self.count, self.changed = done, now
                    if done >= self.expected:
                        self.walls[self.opened] = now - self.opened_at
                        return True
            return False

    def ready(self) -> bool:
        if self.poll():
            return True
        now = time.monotonic()
        if now - self.changed >= self.stall_s:
            self.stalls += 1
            return True
        if now - self.opened_at >= self.timeout_s:
            self.timeouts += 1
            return True
        return False

    def passed(self, opened: datetime) -> None:
        with self._lock:
            self.opened, self.count = opened, -1
            self.opened_at = self.changed = time.monotonic()


def wait_idle(gate: LoopGate, limit_s: float) -> None:
    """Until the loop has finished the interval it is in (whatever the warm-up readings gave it)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        current = gate.status().get("current") or {}
        if current and current["decided"] + current["failed"] >= current["active_seen"]:
            return
        time.sleep(0.5)


def in_process_forecaster(settings: Settings) -> tuple[Any, Any]:
    """The registered model (the alias serving resolves) loaded here, as the controller's
    :class:`~app.control.core.ModelForecaster`, with the feature parameters it was trained with."""
    from app.contracts.command import ModelRef
    from app.control.core import ModelForecaster
    from app.serve.forecaster import XGBOOST_THREADS, _horizons_view, _output_keys, _predict_matrix
    from app.serve.serving_models import feature_params_of
    from app.tracking import load_forecast_model, resolve_alias

    name, alias = settings.control.model_name, settings.control.model_alias
    version = resolve_alias(settings.tracking_url, name, alias)
    model = load_forecast_model(settings.tracking_url, f"models:/{name}/{version}")
    for booster in model.boosters.values():
        booster.set_param({"nthread": XGBOOST_THREADS})  # as the Forecaster deployment runs it

    def predict(matrix: Any, columns: list[str], horizons: list[int] | None = None) -> Any:
        return _predict_matrix(_horizons_view(model, tuple(horizons) if horizons else None), matrix, list(columns))

    forecaster = ModelForecaster(ModelRef(name=name, version=str(version)), tuple(model.feature_columns), tuple(model.horizons_min), tuple(_output_keys(model)), predict)
    params = feature_params_of({"feature_params": dict(model.feature_params), "horizons_min": list(model.horizons_min)})
    return forecaster, params


def in_process_limit(settings: Settings, feeder: BusFeeder, ids: list[str], passes: int, steps_per_s: float, *, profile: bool) -> dict:
    """The controller core in this process over the fleet, once per interval (see the module
    docstring): ``passes`` intervals with ``decide_sync`` per greenhouse and ``passes`` with
    ``decide_many`` per batch, alternating, after one unmeasured pass."""
    from app.control.core import Controller, ControlPolicy, GreenhouseState
    from app.control.correction import ForecastOffsets
    from app.control.online import OnlineWindow, SensorTopicFollower

    forecaster, params = in_process_forecaster(settings)
    controller = Controller(ControlPolicy.from_settings(settings), ForecastOffsets(alpha=settings.control.offset_alpha))
    window = OnlineWindow(settings.control.window_min)
    follower = SensorTopicFollower(feeder.bus, settings.topics.sensors, window, group_id="bench-in-process", partitions=settings.topics.partitions).start()
    batch_size = settings.loop.batch_size
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    sync: list[dict] = []
    many: list[dict] = []
    loop = asyncio.new_event_loop()
    try:
        print(f"  in-process: warming the window ({WARM_STEPS} simulated minutes of {len(ids)} greenhouses) ...", file=sys.stderr)
        feeder.warm(WARM_STEPS)
        gate = PassGate()
        feeder.start(steps_per_s, gate)
        for k in range(2 * passes + 1):
            deadline = time.monotonic() + 120
            while len(feeder.boundaries) <= k and time.monotonic() < deadline:
                time.sleep(0.01)
            if len(feeder.boundaries) <= k:
                raise RuntimeError(f"the feeder produced no interval start in 120 s ({feeder.error or 'no error'})")
            start = feeder.boundaries[k]
            while any((window.latest_ts(g) or start - timedelta(1)) < start for g in ids) and time.monotonic() < deadline:
                time.sleep(0.005)  # the follower has the interval's first readings of every greenhouse
            builds = window.builds
            modes: dict[str, int] = {}
            feat_s = decide_s = 0.0
            mode = "many" if k % 2 == 0 and k > 0 else "sync"
            if profiler is not None and mode == "sync" and k > 0:
                profiler.enable()
            t0 = time.perf_counter()
            if mode == "sync":
                for g in ids:
                    a = time.perf_counter()
                    feats = window.features(g, params, start)
                    b = time.perf_counter()
                    if feats is None:
                        modes["no_features"] = modes.get("no_features", 0) + 1
                        continue
                    d = controller.decide_sync(GreenhouseState(g, feats), forecaster, start)
                    feat_s += b - a
                    decide_s += time.perf_counter() - b
                    modes[d.mode] = modes.get(d.mode, 0) + 1
            else:
                for first in range(0, len(ids), batch_size):
                    a = time.perf_counter()
                    states = [GreenhouseState(g, f) for g in ids[first : first + batch_size] if (f := window.features(g, params, start)) is not None]
                    b = time.perf_counter()
                    for d in loop.run_until_complete(controller.decide_many(states, forecaster, start)):
                        modes[d.mode] = modes.get(d.mode, 0) + 1
                    feat_s += b - a
                    decide_s += time.perf_counter() - b
            wall = time.perf_counter() - t0
            if profiler is not None:
                profiler.disable()
            gate.done += 1
            if k == 0:
                continue
            n = sum(v for m, v in modes.items() if m != "no_features")
            entry = {
                "interval_start": start.isoformat(),
                "decided": n,
                "pass_s": round(wall, 3),
                "decisions_per_s": round(n / wall, 1) if wall else None,
                "features_ms_per_greenhouse": round(1000 * feat_s / max(n, 1), 3),
                "decide_ms_per_greenhouse": round(1000 * decide_s / max(n, 1), 3),
                "feature_builds_per_decision": round((window.builds - builds) / max(n, 1), 3),
                "modes": modes,
            }
            (sync if mode == "sync" else many).append(entry)
            print(f"  in-process {mode:4s} {entry}", file=sys.stderr)
    finally:
        feeder.stop()
        follower.stop()
        loop.close()
    result = {"greenhouses": len(ids), "decide_sync": _rate(sync), "decide_many": {**_rate(many), "batch_size": batch_size}, "passes": {"decide_sync": sync, "decide_many": many}}
    if profiler is not None:
        import io
        import pstats

        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
        calls = len(ids) * len(sync)
        print(f"\ncProfile of the in-process decide_sync passes ({calls} decisions; divide by it for per-greenhouse time):\n{out.getvalue()}", file=sys.stderr)
    return result


def _rate(passes: list[dict]) -> dict:
    """Decisions/s over passes (total decided / total pass time) and the per-greenhouse split."""
    n = sum(p["decided"] for p in passes)
    wall = sum(p["pass_s"] for p in passes)
    if not passes or not wall:
        return {"decisions_per_s": None}
    return {
        "decisions_per_s": round(n / wall, 1),
        "ms_per_greenhouse": round(1000 * wall / n, 3),
        "features_ms_per_greenhouse": round(sum(p["features_ms_per_greenhouse"] * p["decided"] for p in passes) / n, 3),
        "decide_ms_per_greenhouse": round(sum(p["decide_ms_per_greenhouse"] * p["decided"] for p in passes) / n, 3),
        "feature_builds_per_decision": round(sum(p["feature_builds_per_decision"] * p["decided"] for p in passes) / n, 3),
    }


def loop_status(base: str, token: str) -> dict:
    with httpx.Client(base_url=base, timeout=60, headers={"Authorization": f"Bearer {token}"}) as c:
        r = c.get("/climate/loop")
        r.raise_for_status()
        return r.json()


def batch_path(settings: Settings, base: str, token: str, feeder: BusFeeder, n: int, intervals: int, steps_per_s: float, *, pass_timeout_s: float) -> dict:
    """The control loop over ``n`` greenhouses: the feeder gated on the loop's progress, one
    unmeasured interval, then ``intervals`` intervals as ``GET /climate/loop`` reports them
    (decided, busy_s, batches, late, failed, skipped), each with its pass wall time (from the step
    that opened it until the loop had decided every greenhouse)."""
    from ray import serve

    gate = LoopGate(serve.get_deployment_handle("ControlLoop", app_name="control"), n, stall_s=min(60.0, pass_timeout_s), timeout_s=pass_timeout_s)
    wait_idle(gate, pass_timeout_s)  # whatever the loop was doing with the warm-up readings
    feeder.start(steps_per_s, gate)
    seen: dict[datetime, dict] = {}
    cpu_before, decided_before = None, 0
    first: datetime | None = None
    deadline = time.monotonic() + (intervals + 3) * pass_timeout_s
    polled = 0.0
    try:
        while len(seen) < intervals and time.monotonic() < deadline:
            gate.poll()  # also between the feeder's looks: a pass's end is seen within 0.1 s
            if first is None and len(feeder.boundaries) >= 2:
                first = feeder.boundaries[1]  # the first interval opened by a gated step is not measured
                cpu_before, decided_before = _cpu_snapshot(), sum(p["decided"] for p in seen.values())
            time.sleep(0.05)
            if feeder.error:
                raise RuntimeError(f"feeder failed: {feeder.error}")
            if first is None or time.monotonic() - polled < 0.5:
                continue
            polled = time.monotonic()
            for replica in loop_status(base, token)["replicas"]:
                p = replica.get("last_interval") or {}
                start = datetime.fromisoformat(p["interval_start"]) if p.get("interval_start") else None
                if start is not None and start >= first and start not in seen:
                    seen[start] = {**p, "pass_wall_s": round(gate.walls[start], 3) if start in gate.walls else None}
                    print(f"  loop {n} greenhouses: {seen[start]}", file=sys.stderr)
    finally:
        cpu_after = _cpu_snapshot()
        feeder.stop()
    measured = [{**p, "full": p["decided"] >= n and not p["failed"]} for _, p in sorted(seen.items())]
    full = [m for m in measured if m["full"]] or measured
    decided, busy = sum(m["decided"] for m in full), sum(m["busy_s"] for m in full)
    walls = sorted(m["pass_wall_s"] for m in full if m["pass_wall_s"] is not None)
    rate = decided / busy if busy else None
    # CPU per decision over the measured intervals, the gaps between passes included
    wall_s = cpu_after[0] - cpu_before[0] if cpu_before and cpu_after else 0.0
    made = sum(m["decided"] for m in measured) - decided_before
    return {
        "greenhouses": n,
        "decisions_per_s": round(rate, 1) if rate else None,
        "busy_ms_per_greenhouse": round(1000 * busy / decided, 3) if decided else None,
        "full_intervals": sum(m["full"] for m in measured),
        "pass_wall_s_max": walls[-1] if walls else None,
        "pass_wall_s_median": walls[len(walls) // 2] if walls else None,
        "busy_s_max": max((m["busy_s"] for m in full), default=None),
        "interval_s": settings.control.interval_s,
        "gate": {"stalls": gate.stalls, "timeouts": gate.timeouts},
        "intervals": measured,
        "cpu": cpu_use(cpu_before, cpu_after, made / wall_s) if wall_s and made else None,
    }


def pinned(app: Any, replicas: int = 1) -> Any:
    """``app`` with every deployment of its graph at ``replicas`` fixed replicas, autoscaling off
    (the /climate/control figures are per replica, whatever the deployments' own options say). A
    deployment bound under two callers (the Forecaster) stays one deployment."""
    from ray.serve import Application

    done: dict[int, Any] = {}

    def visit(node: Any) -> Any:
        if isinstance(node, (list, tuple)):
            return type(node)(visit(x) for x in node)
        if isinstance(node, dict):
            return {k: visit(v) for k, v in node.items()}
        if not isinstance(node, Application):
            return node
        if id(node) not in done:
            bound = node._bound_deployment  # as ray.serve's own build_app walks the graph
            args, kwargs = visit(bound.init_args), visit(bound.init_kwargs)
            done[id(node)] = Application(bound.options(num_replicas=replicas, autoscaling_config=None, _init_args=args, _init_kwargs=kwargs))
        return done[id(node)]

    return visit(app)


def running_replicas(app_name: str) -> dict[str, int]:
    """RUNNING replicas per deployment of ``app_name`` (``serve.status()``)."""
    from ray import serve

    deployments = serve.status().applications[app_name].deployments
    return {name: d.replica_states.get("RUNNING", 0) for name, d in deployments.items()}


class OngoingSampler:
    """Serve's ongoing-request count of each deployment (summed over its replicas), the figure
    autoscaling holds against ``target_ongoing_requests``: requests running or waiting in the
    replica, those waiting for a ``@serve.batch`` included. A daemon thread asks each replica
    actor (``get_num_ongoing_requests``) every ``period_s`` while the ``with`` block runs."""

    def __init__(self, app_name: str, deployments: tuple[str, ...], period_s: float = 0.1) -> None:
        import ray

        named = ray.util.list_named_actors(all_namespaces=True)
        self.actors = {d: [ray.get_actor(a["name"], namespace=a["namespace"]) for a in named if a["name"].startswith(f"SERVE_REPLICA::{app_name}#{d}#")] for d in deployments}
        self.samples: dict[str, list[int]] = {d: [] for d in deployments}
        self.period_s = period_s
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ongoing-sampler", daemon=True)

    def __enter__(self) -> OngoingSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import ray

        while not self._stop.wait(self.period_s):
            for name, actors in self.actors.items():
                try:
                    self.samples[name].append(sum(ray.get([a.get_num_ongoing_requests.remote() for a in actors], timeout=5)))
                except Exception:  # a replica gone or slow to answer: one sample less
                    self.failed += 1

    def summary(self) -> dict:
        out: dict[str, Any] = {
            name: {"replicas": len(self.actors[name]), "mean": round(sum(v) / len(v), 2) if v else None, "max": max(v, default=None), "samples": len(v)} for name, v in self.samples.items()
        }
        return {**out, "failed_samples": self.failed}


def sweep_table(rows: list[dict]) -> str:
    """The concurrency sweep as a Markdown table (as docs/scaling.md shows the gateway's)."""
    lines = [
        "| clients | requests/s | p50 (ms) | p99 (ms) | errors | ControlApp ongoing (mean) | Forecaster ongoing (mean/max) | Forecaster CPU-ms/request | ControlApp CPU-ms/request |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ongoing = r.get("ongoing") or {}
        app, fc = ongoing.get("ControlApp") or {}, ongoing.get("Forecaster") or {}
        procs = (r.get("cpu") or {}).get("processes", {})
        cpu = {name.rsplit(":", 1)[-1]: v["cpu_ms_per_request"] for name, v in procs.items() if name.startswith("ray::ServeReplica:")}
        lines.append(
            f"| {r['clients']} | {r['requests_per_s']} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} | {app.get('mean')} | {fc.get('mean')}/{fc.get('max')}"
            f" | {cpu.get('Forecaster')} | {cpu.get('ControlApp')} |"
        )
    return "\n".join(lines)


def _levels(text: str) -> list[int]:
    """An argparse type: closed-loop client counts, one integer or a comma-separated list."""
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer or a comma-separated list of them") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give client counts of at least 1")
    return levels


def loop_phases(args: argparse.Namespace, settings: Settings, app_args: Any, base: str, token: str, feeder: BusFeeder, fleet: Any, n: int) -> tuple[dict, dict | None]:
    """(2) the batch path over ``n`` greenhouses and (4) the fleet pass (unless
    ``--fleet-greenhouses 0``): the control app redeployed with its loop."""
    from ray import serve

    from app.serve.control import application
    from app.sim.fleet import FleetSimulator

    print(f"\n2. batch path: the control loop over {n} greenhouses ...", file=sys.stderr)
    serve.run(application(app_args), name="control", route_prefix="/climate")
    auth = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # the new ControlApp replica answers /loop, the loop replica has its lease
        with httpx.Client(base_url=base, timeout=60, headers=auth) as c:
            r = c.get("/climate/loop")
        if r.status_code == 200 and r.json()["replicas"]:
            break
        time.sleep(0.5)
    else:
        raise RuntimeError(f"the control loop did not come up: {r.status_code} {r.text[:300]}")
    feeder.warm(10)  # two intervals the loop decides unmeasured (its window backfills from the topic)
    batch = batch_path(settings, base, token, feeder, n, args.intervals, args.steps_per_s, pass_timeout_s=args.pass_timeout)

    fleet_pass = None
    if args.fleet_greenhouses:
        print(f"\n4. fleet pass: the control loop over {args.fleet_greenhouses} greenhouses ...", file=sys.stderr)
        big = BusFeeder(settings, FleetSimulator(args.fleet_greenhouses, fleet.now, step_s=60, seed=5))  # continues after the small fleet's readings
        warm_started = time.monotonic()
        big.warm(WARM_STEPS)
        print(f"  warmed {args.fleet_greenhouses} windows with {big.readings} readings in {time.monotonic() - warm_started:.0f} s", file=sys.stderr)
        fleet_pass = batch_path(settings, base, token, big, args.fleet_greenhouses, max(2, args.intervals // 2), args.fleet_steps_per_s, pass_timeout_s=args.pass_timeout)
    return batch, fleet_pass


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


def _count(minimum: int, maximum: int):
    """An argparse type: an integer in ``[minimum, maximum]``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"{text} must be between {minimum} and {maximum}")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--greenhouses", type=_count(1, 1024), default=100, help="greenhouses of the three throughputs and their ratios (default 100)")
    parser.add_argument("--fleet-greenhouses", type=_count(0, 1024), default=1000, help="greenhouses of the fleet pass through the loop (default 1000; 0: skip it)")
    parser.add_argument("--intervals", type=_count(1, 6), default=4, help="measured control intervals per interval run (in-process: as many again for decide_many; default 4)")
    parser.add_argument(
        "--steps-per-s",
        type=_number(0, inclusive=False),
        default=2.0,
        help="simulated minutes of readings produced per second for --greenhouses (default 2: an interval every 2.5 s unless a pass holds it)",
    )
    parser.add_argument(
        "--fleet-steps-per-s", type=_number(0, inclusive=False), default=1.0, help="simulated minutes per second for --fleet-greenhouses (default 1; each step is 3 readings per greenhouse)"
    )
    parser.add_argument("--pass-timeout", type=_number(0, inclusive=False), default=600.0, help="longest wait for the loop to finish an interval before the feeder moves on (s, default 600)")
    parser.add_argument("--seconds", type=_number(0, inclusive=False), default=20.0, help="duration of each /climate/control measurement (default 20)")
    parser.add_argument(
        "--concurrency",
        type=_levels,
        default=None,
        help="closed-loop clients for the saturation runs (default 32 with the Go client, 8 with Python threads); a comma-separated list"
        " (1,2,4,8,16) runs /climate/control once per value and prints a table (clients, requests/s, p50, p99, ongoing requests)",
    )
    parser.add_argument("--rate", type=_number(0, inclusive=False), default=50.0, help="offered requests/s for the fixed-rate run (default 50)")
    parser.add_argument("--train-greenhouses", type=_count(1, 64), default=4, help="seeded greenhouses (two days) the model is trained on (default 4)")
    parser.add_argument("--client", choices=("go", "python"), default="go", help="load generator: bench/loadgen in Go (default; light on CPU) or httpx threads")
    parser.add_argument(
        "--ingress",
        choices=("haproxy", "proxy"),
        default=None,
        help="HTTP ingress: HAProxy straight to the ingress replicas (what the product ships) or Serve's Python proxy actor"
        " (RAY_SERVE_ENABLE_HA_PROXY=0); default: the environment's setting, else haproxy",
    )
    parser.add_argument("--echo", action="store_true", help="also deploy a bare echo endpoint and measure its saturation throughput (information only)")
    parser.add_argument("--profile", action="store_true", help="run the in-process decide_sync passes under cProfile and print the top functions (stderr)")
    parser.add_argument("--only-control", action="store_true", help="measure only /climate/control: skip the in-process limit, the batch path and the fleet pass (no ratios)")
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
    levels = args.concurrency or [32 if client == "go" else 8]
    concurrency = max(levels)

    import ray
    from ray import serve

    from app.preprocess import PreprocessParams, run_preprocess
    from app.security.credentials import CONTROL_WRITE, FORECAST_READ, OperatorRegistry
    from app.serve.args import AppArgs
    from app.serve.control import application
    from app.serve.tuning import ACCESS_LOG_OFF, apply_serve_process_env
    from app.sim.fleet import FleetSimulator
    from app.sim.seed import seed_lake
    from app.train.pipeline import TrainJobParams, run_training
    from app.train.promotion import run_promotion
    from app.train.trainer import BoosterParams

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    base_settings = Settings(data_dir=tmp)
    settings = base_settings.model_copy(
        update={
            "control": base_settings.control.model_copy(update={"simulated_plant": True}),  # event time needs it (loopback only)
            "loop": base_settings.loop.model_copy(update={"event_time": True}),
        }
    )
    if args.ingress is not None:
        os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1" if args.ingress == "haproxy" else "0"
    serve_env = apply_serve_process_env()
    ingress = "haproxy" if serve_env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" else "proxy"
    print(f"ingress: {ingress}", file=sys.stderr)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    started = time.monotonic()
    try:
        print(f"seeding 2 days of {args.train_greenhouses} greenhouses, training a model ...", file=sys.stderr)
        now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
        seed_settings = settings.model_copy(update={"bus_url": f"file://{tmp / 'seed-bus'}"})  # the serving bus holds only the measured fleets
        seed_lake(seed_settings, greenhouses=args.train_greenhouses, days=2.0, start=now - timedelta(days=2, hours=3), seed=3)
        run_preprocess(settings, PreprocessParams(horizons_min=(15, 60)))
        trained = run_training(settings, TrainJobParams(booster=BoosterParams(num_boost_round=120)))
        run_promotion(settings, trained.model_name)
        operators = OperatorRegistry.from_settings(settings)
        token = operators.add("bench", [FORECAST_READ, CONTROL_WRITE], valid_days=1)
        operators.close()

        ids = [f"gh-{i:02d}" for i in range(1, args.greenhouses + 1)]
        fleet = FleetSimulator(args.greenhouses, now - timedelta(minutes=WARM_STEPS), step_s=60, seed=3)
        feeder = BusFeeder(settings, fleet)

        # 1. the compute limit: the controller core in this process (no Serve app deployed yet)
        inproc = None
        if not args.only_control:
            print(f"\n1. in-process limit over {len(ids)} greenhouses ({args.steps_per_s:g} simulated minutes/s arriving) ...", file=sys.stderr)
            inproc = in_process_limit(settings, feeder, ids, args.intervals, args.steps_per_s, profile=args.profile)
        limit = inproc["decide_sync"]["decisions_per_s"] if inproc else None

        # 3. /climate/control, with the loop not deployed
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {token}"}
        app_args = AppArgs(settings=settings.for_replicas())
        print(f"\n3. /climate/control (control app without the loop) over {len(ids)} greenhouses ...", file=sys.stderr)
        serve.run(pinned(application(app_args, with_loop=False)), name="control", route_prefix="/climate")
        replicas = running_replicas("control")
        print(f"  replicas: {replicas} (pinned, no autoscaling)", file=sys.stderr)
        if inproc is None or 3 * len(ids) * WARM_STEPS > 20_000 * settings.topics.partitions:  # no readings yet, or more than the followers' backfill
            feeder.warm(WARM_STEPS)
        with httpx.Client(base_url=base, timeout=60, headers=auth) as c:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                health = c.get("/climate/healthz")
                if health.status_code == 200 and set(ids) <= set(health.json()["greenhouses"]):
                    break
                time.sleep(0.5)
            probe = c.post("/climate/control", json={"greenhouse_id": ids[0]})
            probe.raise_for_status()
            probe = probe.json()
        print(f"  control probe: mode={probe['decision']['mode']} dispatch={probe['dispatch']['status']} age_s={probe['state']['age_s']}", file=sys.stderr)
        if probe["decision"]["mode"] != "mpc":
            print(f"  WARNING: the probe decision is not the model's: {probe['decision']['reason']}", file=sys.stderr)
        bodies = [{"greenhouse_id": gh} for gh in ids]
        print(f"  load generator: {client}" + (f" ({binary})" if binary else ""), file=sys.stderr)
        results: dict[str, Any] = {}

        def feature_builds() -> int:
            with httpx.Client(base_url=base, timeout=60, headers=auth) as c:
                return int(c.get("/climate/healthz").json()["feature_builds"])

        def measured(key: str, run, builds: bool = True) -> None:
            before_builds = feature_builds() if builds else 0
            before = _cpu_snapshot()
            results[key] = run()
            results[key]["cpu"] = cpu_use(before, _cpu_snapshot(), results[key]["requests_per_s"])
            if builds and results[key]["requests"]:
                results[key]["feature_builds_per_request"] = round((feature_builds() - before_builds) / results[key]["requests"], 3)
            shown = {k: v for k, v in results[key].items() if k != "cpu"}
            cpu = results[key]["cpu"] or {}
            shown["cpu_ms_per_request"] = {k: v["cpu_ms_per_request"] for k, v in list(cpu.get("processes", {}).items())[:5]}
            shown["outside_cores"] = cpu.get("outside_cores")
            print(f"  {key:22s} {shown}", file=sys.stderr)

        def load(name: str, url: str, b: list[dict], seconds: float, *, concurrency: int = 0, rate: float = 0.0, token: str | None = None) -> dict:
            if binary is not None:
                return run_loadgen(binary, name, url, b, seconds, concurrency=concurrency, rate=rate, token=token)
            headers = {"Authorization": f"Bearer {token}"} if token else None
            if concurrency:
                return stats(name, *saturate(url, b, seconds, concurrency, headers))
            return stats(name, *fixed_rate(url, b, seconds, rate, headers))

        feeder.start(args.steps_per_s)
        url = f"{base}/climate/control"
        load("control", url, bodies, 3.0, concurrency=concurrency, token=token)  # warm-up
        sweep = None
        if len(levels) == 1:
            measured("control_saturated", partial(load, "control", url, bodies, args.seconds, concurrency=concurrency, token=token))
        else:

            def sampled(clients: int) -> dict:
                with OngoingSampler("control", ("ControlApp", "Forecaster")) as sampler:
                    out = load("control", url, bodies, args.seconds, concurrency=clients, token=token)
                return {"clients": clients, **out, "ongoing": sampler.summary()}

            for clients in levels:
                measured(f"control_c{clients}", partial(sampled, clients))
            sweep = [results.pop(f"control_c{clients}") for clients in levels]
            results["control_saturated"] = next(r for r in sweep if r["clients"] == concurrency)
        measured(f"control_at_{args.rate:g}rps", partial(load, "control", url, bodies, args.seconds, rate=args.rate, token=token))
        if args.echo:

            @serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=128, logging_config=ACCESS_LOG_OFF)
            class Echo:
                async def __call__(self, request):
                    return await request.json()

            serve.run(Echo.bind(), name="echo", route_prefix="/echo")
            echo_bodies = [{"greenhouse_id": gh, "pad": "x" * 40} for gh in ids]
            load("echo", f"{base}/echo", echo_bodies, 3.0, concurrency=concurrency)
            measured("echo_saturated", partial(load, "echo", f"{base}/echo", echo_bodies, args.seconds, concurrency=concurrency), builds=False)
            serve.delete("echo")
        feeder.stop()

        batch = fleet_pass = None
        if not args.only_control:
            batch, fleet_pass = loop_phases(args, settings, app_args, base, token, feeder, fleet, len(ids))
        with httpx.Client(base_url=base, timeout=60, headers=auth) as c:
            health = c.get("/climate/healthz").json()
        control_rate = results["control_saturated"]["requests_per_s"]
        batch_ratio = batch["decisions_per_s"] / limit if limit and batch and batch["decisions_per_s"] else None
        control_ratio = control_rate / limit if limit else None
        p99 = results[f"control_at_{args.rate:g}rps"]["p99_ms"]

        def fmt(x: Any, spec: str = ".3f") -> str:
            return "n/a" if x is None else format(x, spec)

        lines = [""]
        if inproc is not None:
            lines.append(
                f"in-process limit ({len(ids)} greenhouses, decide_sync): {fmt(limit, '.1f')} decisions/s"
                f" ({fmt(inproc['decide_sync'].get('features_ms_per_greenhouse'))} ms features + {fmt(inproc['decide_sync'].get('decide_ms_per_greenhouse'))} ms decide per greenhouse);"
                f" decide_many (batches of {settings.loop.batch_size}): {fmt(inproc['decide_many']['decisions_per_s'], '.1f')} decisions/s"
            )
        if batch is not None:
            lines.append(
                f"batch path (control loop, {len(ids)} greenhouses): {fmt(batch['decisions_per_s'], '.1f')} decisions/s (busy {fmt(batch['busy_ms_per_greenhouse'])} ms per greenhouse;"
                f" pass wall {fmt(batch['pass_wall_s_median'], '.2f')} s)   batch/in-process: {fmt(batch_ratio)} (target >= 0.6)"
            )
        lines.append(
            f"/climate/control ({ingress}, {client} client): {control_rate} requests/s saturated   control/in-process: {fmt(control_ratio)} (target >= 0.3)"
            f"   p99 at {args.rate:g}/s: {p99} ms (target < 100)"
        )
        if sweep is not None:
            lines += ["", f"/climate/control by closed-loop clients ({replicas}, {args.seconds:g} s each):", sweep_table(sweep)]
        if fleet_pass is not None:
            lines.append(
                f"fleet pass ({args.fleet_greenhouses} greenhouses): wall {fmt(fleet_pass['pass_wall_s_max'], '.1f')} s max, {fmt(fleet_pass['pass_wall_s_median'], '.1f')} s median"
                f" (busy {fmt(fleet_pass['busy_s_max'], '.1f')} s; {fmt(fleet_pass['decisions_per_s'], '.1f')} decisions/s) vs interval {settings.control.interval_s:g} s (target: under it)"
            )
        if args.echo:
            lines.append(f"echo (information): {results['echo_saturated']['requests_per_s']} requests/s saturated")
        print("\n".join(lines))
        print(
            json.dumps(
                {
                    "bench": "serve",
                    "ingress": ingress,
                    "client": client,
                    "concurrency": concurrency,
                    "greenhouses": len(ids),
                    "fleet_greenhouses": args.fleet_greenhouses,
                    "steps_per_s": args.steps_per_s,
                    "fleet_steps_per_s": args.fleet_steps_per_s,
                    "clock": "event_time",
                    "serve_env": serve_env,
                    "in_process": inproc,
                    "batch_path": batch,
                    "control": results,
                    **({"control_sweep": sweep, "replicas": replicas} if sweep is not None else {}),
                    "fleet_pass": fleet_pass,
                    "in_process_decisions_per_s": limit,
                    "batch_decisions_per_s": batch["decisions_per_s"] if batch else None,
                    "control_requests_per_s": control_rate,
                    "ratio_batch_over_in_process": round(batch_ratio, 3) if batch_ratio else None,
                    "ratio_control_over_in_process": round(control_ratio, 3) if control_ratio else None,
                    "control_p99_ms_at_rate": p99,
                    "fleet_pass_wall_s": fleet_pass["pass_wall_s_max"] if fleet_pass else None,
                    "interval_s": settings.control.interval_s,
                    "probe_mode": probe["decision"]["mode"],
                    "model_error": health.get("model_error"),
                    "bench_s": round(time.monotonic() - started, 1),
                },
                default=str,
            )
        )
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
