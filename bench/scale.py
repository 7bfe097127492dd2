"""Scale benchmark: the pipeline at 1x and 10x the fleet over the same simulated time, on the
real stack and a multi-node Ray cluster, reporting the cost per reading of each stage.

For each scale (``--scales 1,10``: ``--greenhouses`` x scale greenhouses, one device each, every
``--step-s`` seconds for ``--hours`` simulated hours) on a fresh topic, lake folder and database:

- ``gateway``: devices post their readings (``--batch`` per request, ``--clients`` at once) to the
  ingest gateway on a Ray head + two worker nodes (``tests/helpers/ray_cluster.py``; two replicas,
  one per worker, behind the head's HAProxy); the clock stops when the last one is answered;
- ``sink``: ``python -m jobs.sink`` as a Ray job on that cluster, until the topic is drained into
  the lake (HDFS) with its metadata (FerretDB);
- ``features``: ``python -m jobs.preprocess`` as a Ray job (Ray Data over the lake);
- ``batch_predict``: the hook for ``jobs.batch_predict`` (``--batch-predict "ARGS"`` runs it as a
  job with those arguments; off by default while that job is being built).

Wall time per stage, and CPU-seconds: the CPU every process of the cluster's nodes used meanwhile
(from /proc, the nodes' sessions, sampled every 0.25 s so that a process that exits within the
stage counts up to its last sample) plus this process's own. Per stage it prints both per reading at each
scale and the ratio 10x/1x per reading (the target: within 1.2x). Start the stack first
(``stack/stack up``); progress goes to stderr, the last line is one JSON document::

    python bench/scale.py [--greenhouses 20] [--scales 1,10] [--hours 6] [--step-s 60]
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
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.metadata import open_metadata  # noqa: E402
from app.orchestration.ray_jobs import submit_and_wait  # noqa: E402
from app.security.credentials import DeviceRegistry  # noqa: E402
from tests.helpers.ray_cluster import WORKER_RESOURCE, LocalRayCluster, session_pids  # noqa: E402
from tests.helpers.stack import stack_settings  # noqa: E402

START = datetime(2026, 6, 1, tzinfo=timezone.utc)
JSON_V2 = "application/vnd.kafka.json.v2+json"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[scale] {msg}", file=sys.stderr, flush=True)


def cluster_cpu(cluster: LocalRayCluster) -> dict[tuple[int, int], float]:
    """CPU-seconds (user + system) of every live process of the cluster's nodes, by (pid, start time)."""
    seen = {}
    for node in cluster.nodes.values():
        for pid in session_pids(node.sid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            seen[(pid, int(fields[19]))] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime; starttime
    return seen


class Meter:
    """Wall and CPU of one stage: the cluster's processes plus this one. The cluster's are sampled
    every ``every_s`` so that processes that exit within the stage (a job's driver, Data workers)
    count up to their last sample."""

    def __init__(self, cluster: LocalRayCluster, every_s: float = 0.25) -> None:
        self.cluster, self.every_s = cluster, every_s

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            self._last.update(cluster_cpu(self.cluster))

    def __enter__(self) -> Meter:
        self._first = cluster_cpu(self.cluster)
        self._last = dict(self._first)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self._wall, self._own = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self._wall
        own = time.process_time() - self._own
        self._stop.set()
        self._thread.join()
        self._last.update(cluster_cpu(self.cluster))
        self.cpu_s = own + sum(cpu - self._first.get(key, 0.0) for key, cpu in self._last.items())


def deploy_gateway(cluster: LocalRayCluster, name: str, settings_data: dict[str, Any]) -> str:
    """The gateway as ``serve deploy`` does it, two replicas (one per worker node); its URL prefix."""
    config = {
        "proxy_location": "EveryNode",
        "http_options": {"host": "127.0.0.1", "port": cluster.serve_http_port},
        "applications": [
            {
                "name": name,
                "route_prefix": f"/{name}",
                "import_path": "app.serve.ingest:build_app",
                "args": {"settings": settings_data},
                "deployments": [{"name": "IngestGateway", "num_replicas": 2, "ray_actor_options": {"num_cpus": 0.25, "resources": {WORKER_RESOURCE: 1}}}],
            }
        ],
    }
    url = f"{cluster.dashboard_url}/api/serve/applications/"
    httpx.put(url, json=config, headers=cluster.headers, timeout=120).raise_for_status()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        app = httpx.get(url, headers=cluster.headers, timeout=30).json()["applications"].get(name) or {}
        if app.get("status") == "RUNNING":
            return f"{cluster.serve_url}/{name}"
        time.sleep(2)
    raise TimeoutError(f"gateway {name} not RUNNING after 300 s")


def measurements(i: int) -> dict[str, float]:
    """What one climate device reports at step ``i`` (every measurement the features use)."""
    wave = (i % 120) / 120
    return {
        "air_temp_c": round(18 + 6 * wave, 2),
        "rh_pct": round(80 - 20 * wave, 1),
        "co2_ppm": 450 + i % 50,
        "par_umol_m2_s": round(800 * wave, 1),
        "outside_temp_c": round(10 + 5 * wave, 2),
        "outside_rh_pct": 75.0,
        "solar_w_m2": round(500 * wave, 1),
        "wind_m_s": 2.5,
        "vent_pct": round(30 * wave, 1),
        "heat_pct": round(40 * (1 - wave), 1),
        "screen_pct": 0.0,
    }


async def post_all(base_url: str, topic: str, tokens: dict[str, str], steps: int, step_s: float, batch: int, clients: int) -> tuple[int, int]:
    """Every greenhouse's readings in requests of ``batch``; (accepted, failed requests)."""
    work = [(gh, first) for gh in tokens for first in range(0, steps, batch)]
    queue = iter(work)
    accepted, failed = 0, 0

    async def client() -> None:
        nonlocal accepted, failed
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
            for gh, first in queue:
                values = [
                    {"greenhouse_id": gh, "device_id": f"{gh}-climate", "ts": (START + timedelta(seconds=step_s * i)).isoformat().replace("+00:00", "Z"), "measurements": measurements(i)}
                    for i in range(first, min(first + batch, steps))
                ]
                r = await http.post(f"/topics/{topic}", content=orjson.dumps({"records": [{"value": v} for v in values]}), headers={"content-type": JSON_V2, "authorization": f"Bearer {tokens[gh]}"})
                if r.status_code == 200:
                    accepted += sum(1 for o in r.json()["offsets"] if o["error_code"] is None)
                else:
                    failed += 1

    await asyncio.gather(*(client() for _ in range(clients)))
    return accepted, failed


def run_job(cluster: LocalRayCluster, entrypoint: str, config_file: Path, name: str) -> dict[str, Any]:
    result = submit_and_wait(
        cluster.dashboard_url,
        entrypoint,
        submission_id=f"{name}-{os.urandom(3).hex()}",
        runtime_env={"env_vars": {"GH_CONFIG_FILE": str(config_file)}},
        headers=cluster.headers,
        poll_s=0.5,
        timeout_s=1800,
    )
    if not result.ok:
        raise RuntimeError(f"{entrypoint} ended {result.status}:\n{result.logs[-3000:]}")
    return result.summary or {}


def one_scale(cluster: LocalRayCluster, scale: int, args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    greenhouses = args.greenhouses * scale
    steps = int(args.hours * 3600 / args.step_s)
    run, settings = stack_settings(data_dir / f"x{scale}", f"scale{scale}", partitions=args.partitions, sink_batch_records=5000)
    settings_data = settings.for_replicas()
    settings_data["ray"]["auth_token_file"] = str(cluster.token_file)  # the jobs' ray.init(): this cluster's token
    config_file = data_dir / f"settings-x{scale}.json"
    config_file.write_text(json.dumps(settings_data))
    store = open_metadata(settings.metadata_url)
    registry = DeviceRegistry(store)
    tokens = {f"gh-{scale}x-{g:04d}": "" for g in range(greenhouses)}
    for gh in tokens:
        tokens[gh] = registry.add(f"{gh}-climate", gh)
    prefix = deploy_gateway(cluster, f"scale{scale}x", settings_data)
    readings = greenhouses * steps
    log(f"{scale}x: {greenhouses} greenhouses x {steps} steps = {readings} readings")
    stages: dict[str, dict[str, Any]] = {}
    try:
        with Meter(cluster) as m:
            accepted, failed = asyncio.run(post_all(prefix, settings.topics.sensors, tokens, steps, args.step_s, args.batch, args.clients))
        stages["gateway"] = {"wall_s": m.wall_s, "cpu_s": m.cpu_s, "accepted": accepted, "failed_requests": failed}
        log(f"{scale}x gateway: {accepted} accepted in {m.wall_s:.1f} s, {m.cpu_s:.1f} CPU-s")
        with Meter(cluster) as m:
            summary = run_job(cluster, "python -m jobs.sink --idle-polls 3", config_file, f"sink-{scale}x")
        stages["sink"] = {"wall_s": m.wall_s, "cpu_s": m.cpu_s, "summary": summary}
        log(f"{scale}x sink: {m.wall_s:.1f} s, {m.cpu_s:.1f} CPU-s")
        with Meter(cluster) as m:
            summary = run_job(cluster, "python -m jobs.preprocess", config_file, f"features-{scale}x")
        stages["features"] = {"wall_s": m.wall_s, "cpu_s": m.cpu_s, "summary": summary}
        log(f"{scale}x features: {m.wall_s:.1f} s, {m.cpu_s:.1f} CPU-s")
        if args.batch_predict is not None:
            with Meter(cluster) as m:
                summary = run_job(cluster, f"python -m jobs.batch_predict {args.batch_predict}", config_file, f"predict-{scale}x")
            stages["batch_predict"] = {"wall_s": m.wall_s, "cpu_s": m.cpu_s, "summary": summary}
    finally:
        httpx.delete(f"{cluster.dashboard_url}/api/serve/applications/", headers=cluster.headers, timeout=60)
        store.client.drop_database(f"gh_scale{scale}_{run}")  # type: ignore[attr-defined]
    for s in stages.values():
        s["wall_ms_per_reading"] = 1000 * s["wall_s"] / readings
        s["cpu_ms_per_reading"] = 1000 * s["cpu_s"] / readings
    return {"scale": scale, "greenhouses": greenhouses, "readings": readings, "stages": stages}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--greenhouses", type=int, default=20, help="the 1x fleet (default 20)")
    parser.add_argument("--scales", default="1,10", help="fleet multiples, comma-separated (default 1,10)")
    parser.add_argument("--hours", type=float, default=6.0, help="simulated hours per greenhouse (default 6; the features job finds no complete rows in 2)")
    parser.add_argument("--step-s", type=float, default=60.0, help="seconds between a device's readings (default 60)")
    parser.add_argument("--batch", type=int, default=60, help="readings per request (default 60)")
    parser.add_argument("--clients", type=int, default=8, help="requests in flight (default 8)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--batch-predict", default=None, metavar="ARGS", help="also run `python -m jobs.batch_predict ARGS` as the last stage")
    args = parser.parse_args(argv)
    scales = [int(s) for s in args.scales.split(",")]
    log("starting a Ray head and two worker nodes")
    with LocalRayCluster(workers=2) as cluster, tempfile.TemporaryDirectory(prefix="gh-scale-") as tmp:
        results = [one_scale(cluster, scale, args, Path(tmp)) for scale in scales]
    base = results[0]
    header = "stage".ljust(14)
    for r in results:
        header += f"{r['scale']}x wall ms/rd".rjust(16) + f"{r['scale']}x CPU ms/rd".rjust(16)
    for r in results[1:]:
        header += f"{r['scale']}x/{base['scale']}x CPU".rjust(14)
    print(header)
    ratios: dict[str, dict[str, float]] = {}
    for stage in base["stages"]:
        row = f"{stage:<14}"
        for r in results:
            s = r["stages"].get(stage, {})
            row += f"{s.get('wall_ms_per_reading', float('nan')):>16.3f}{s.get('cpu_ms_per_reading', float('nan')):>16.3f}"
        for r in results[1:]:
            s, b = r["stages"].get(stage), base["stages"][stage]
            ratio_cpu = s["cpu_ms_per_reading"] / b["cpu_ms_per_reading"] if s and b["cpu_ms_per_reading"] else float("nan")
            ratio_wall = s["wall_ms_per_reading"] / b["wall_ms_per_reading"] if s and b["wall_ms_per_reading"] else float("nan")
            ratios[f"{stage}_{r['scale']}x_over_{base['scale']}x"] = {"cpu_per_reading": ratio_cpu, "wall_per_reading": ratio_wall}
            row += f"{ratio_cpu:>14.2f}"
        print(row)
    print(json.dumps({"results": results, "ratios": ratios}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
