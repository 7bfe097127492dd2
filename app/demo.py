"""The end-to-end demo on embedded defaults: simulate -> HTTP ingest on Ray Serve -> bus -> lake sink.

``greenhouse demo`` (the README's first command) calls :func:`run_demo`. It starts local Ray and
the ingest gateway on Serve, simulates a fleet of greenhouses from real TMY3 weather, posts every
reading over HTTP (with a few deliberately faulty devices), sinks the bus into the lake with the
lake sink running alongside, and checks that the lake holds exactly the accepted readings.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from app.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoOptions:
    """What the demo simulates."""

    greenhouses: int = 2
    days: float = 1.0
    step_s: float = 60.0
    seed: int = 0
    batch_size: int = 100
    # Share of readings a faulty device corrupts (to show per-record rejection and dead-lettering).
    fault_rate: float = 0.003
    start: datetime | None = None  # default: midnight UTC, `days` (rounded up) + 1 days ago


@dataclass
class DemoSummary:
    """The demo's result; ``ok`` is the exactly-once check (lake rows == accepted readings)."""

    greenhouses: int
    simulated_days: float
    readings_generated: int = 0
    readings_accepted: int = 0
    readings_rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    request_p50_ms: float = 0.0
    request_p99_ms: float = 0.0
    lake_rows: int = 0
    lake_files: int = 0
    batch_documents: int = 0
    dead_letters: int = 0
    sink_duplicates: int = 0
    elapsed_s: float = 0.0
    data_dir: str = ""
    gateway_url: str = ""
    ok: bool = False


def corrupt(reading: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """One of the ways a faulty device breaks a reading (each is rejected by the contract)."""
    kind = rng.randrange(4)
    bad = {**reading, "measurements": dict(reading["measurements"])}
    name = next(iter(bad["measurements"]))
    if kind == 0:
        bad["measurements"][name] = 1e6  # a stuck ADC
    elif kind == 1:
        bad["measurements"][name] = -1e3
    elif kind == 2:
        bad["ts"] = bad["ts"].rstrip("Z")  # firmware lost its timezone
    else:
        del bad["device_id"]
    return bad


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _lake_counts(settings: Settings) -> dict[str, int]:
    """Rows and files in the raw lake, committed batch documents, dead-lettered records."""
    from app.bus import open_bus
    from app.lake import Lake
    from app.metadata import LAKE_BATCHES, open_metadata

    lake = Lake.from_url(settings.lake_url)
    files = lake.list_files("raw/sensors")
    bus = open_bus(settings.bus_url)
    try:
        dead = sum(bus.end_offsets(settings.topics.deadletter).values())
    finally:
        bus.close()
    return {
        "rows": lake.read_raw_sensors(columns=["device_id"]).num_rows if files else 0,
        "files": len(files),
        "batches": open_metadata(settings.metadata_url).collection(LAKE_BATCHES).count_documents({"status": "committed"}),
        "dead_letters": dead,
    }


def run_demo(
    settings: Settings,
    options: DemoOptions,
    *,
    on_progress: Callable[[str, float, float], None] | None = None,
) -> DemoSummary:
    """Run the data path end to end; ``on_progress(stage, done, total)`` reports progress."""
    import ray
    from ray import serve

    from app.bus import open_bus
    from app.ingest.client import GatewayClient
    from app.ingest.sink import LakeSink
    from app.lake import Lake
    from app.metadata import open_metadata
    from app.serve.ingest import IngestAppArgs, build_app
    from app.sim.fleet import FleetSimulator

    progress = on_progress or (lambda stage, done, total: None)
    started = time.monotonic()
    summary = DemoSummary(greenhouses=options.greenhouses, simulated_days=options.days, data_dir=str(settings.data_dir))
    settings.data_dir.mkdir(parents=True, exist_ok=True)

    progress("starting Ray and the ingest gateway", 0, 1)
    # address="local": always a fresh in-process cluster, even when a `ray start` head runs here.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    sink_thread: threading.Thread | None = None
    stop = threading.Event()
    try:
        serve.start(http_options={"host": settings.serve.host, "port": settings.serve.port})
        serve.run(build_app(IngestAppArgs(settings=settings.for_replicas())), name="ingest", route_prefix="/")
        url = f"http://{settings.serve.host}:{settings.serve.port}"
        summary.gateway_url = url
        progress("starting Ray and the ingest gateway", 1, 1)

        # Real engines keep data between runs: the checks compare what this run added.
        before = _lake_counts(settings)

        # The sink runs alongside ingestion, as it would in production.
        sink = LakeSink(settings, open_bus(settings.bus_url), Lake.from_url(settings.lake_url), open_metadata(settings.metadata_url))
        sink_result: dict[str, Any] = {}

        def sink_loop() -> None:
            try:
                sink_result["stats"] = sink.run(until_idle=False, should_stop=stop.is_set)
            except BaseException as exc:  # surfaced below
                sink_result["error"] = exc

        sink_thread = threading.Thread(target=sink_loop, name="lake-sink", daemon=True)
        sink_thread.start()

        midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        start = options.start or midnight - timedelta(days=int(options.days + 0.999) + 1)
        fleet = FleetSimulator(options.greenhouses, start, step_s=options.step_s, seed=options.seed)
        duration_s = options.days * 86_400
        total_steps = int(duration_s // options.step_s)
        rng = random.Random(f"faults:{options.seed}")
        with GatewayClient(url, topic=settings.topics.sensors, batch_size=options.batch_size) as client:
            pending: list[dict[str, Any]] = []
            for step, readings in enumerate(fleet.iter_steps(duration_s), start=1):
                for reading in readings:
                    pending.append(corrupt(reading, rng) if rng.random() < options.fault_rate else reading)
                summary.readings_generated += len(readings)
                if len(pending) >= options.batch_size:
                    full = len(pending) - len(pending) % options.batch_size
                    client.post(pending[:full])
                    pending = pending[full:]
                if step % 10 == 0 or step == total_steps:
                    progress("simulating and posting readings over HTTP", step, total_steps)
            client.post(pending)
            tally = client.tally
        summary.readings_accepted = tally.accepted
        summary.readings_rejected = tally.rejected
        summary.rejected_by_reason = dict(tally.rejected_by_reason)
        summary.requests = tally.requests
        summary.request_p50_ms = round(_percentile(tally.latencies_s, 0.50) * 1000, 2)
        summary.request_p99_ms = round(_percentile(tally.latencies_s, 0.99) * 1000, 2)

        # Drain: wait until the sink has committed every accepted record, then stop it.
        bus = open_bus(settings.bus_url)
        end = sum(bus.end_offsets(settings.topics.sensors).values())
        deadline = time.monotonic() + 600
        while True:
            committed = sink.committed_offsets_total()
            progress("sinking the bus into the lake", committed, end)
            if committed >= end or "error" in sink_result or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        stop.set()
        sink_thread.join(timeout=60)
        if "error" in sink_result:
            raise RuntimeError(f"lake sink failed: {sink_result['error']}") from sink_result["error"]
        stats = sink_result.get("stats")
        summary.sink_duplicates = stats.duplicates if stats else 0

        after = _lake_counts(settings)
        summary.lake_rows = after["rows"] - before["rows"]
        summary.lake_files = after["files"] - before["files"]
        summary.batch_documents = after["batches"] - before["batches"]
        summary.dead_letters = after["dead_letters"] - before["dead_letters"]
        summary.ok = (
            # a re-run with the same seed re-sends readings the lake already has: they are dropped
            # as duplicates, which is exactly-once working, so they count on the lake's side
            summary.lake_rows + summary.sink_duplicates == summary.readings_accepted
            and summary.readings_accepted + summary.readings_rejected == summary.readings_generated
            and summary.batch_documents == summary.lake_files
        )
    finally:
        stop.set()
        if sink_thread is not None:
            sink_thread.join(timeout=60)
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    summary.elapsed_s = round(time.monotonic() - started, 1)
    return summary
