"""Scale benchmark: the pipeline at 1x and 10x the fleet over the same simulated time, on the
real stack and a multi-node Ray cluster, reporting the cost per reading of each stage.

For each scale (``--scales 1,10``: ``--greenhouses`` x scale greenhouses, one device each, every
``--step-s`` seconds for ``--hours`` simulated hours), ``--rounds`` times, on a fresh topic, lake
folder and database each time:

- ``gateway``: devices post their readings (``--batch`` per request, ``--clients`` at once) to the
  ingest gateway on a Ray head + two worker nodes (``tests/helpers/ray_cluster.py``; two replicas,
  one per worker, behind the head's HAProxy); the clock stops when the last one is answered;
- ``sink``: ``python -m jobs.sink --workers 1`` as a Ray job on that cluster, until the topic is
  drained into the lake (HDFS) with its metadata (FerretDB);
- ``sink_x2``: the same topic drained again by ``jobs.sink --workers 2`` (``--sink-workers``) into
  a lake folder, database and consumer group of its own: the sink's scaling efficiency from 1 to 2
  workers is rows/s of 2 over twice rows/s of 1, both from the job's whole wall time (start-up,
  and the idle polls that end it, included);
- ``features``: ``python -m jobs.preprocess`` as a Ray job (Ray Data over the lake);
- ``batch_predict``: ``python -m jobs.batch_predict --model-name M --version V --feature-set-id <the
  one the features stage wrote>`` as a job, the gateway taken down first (its replicas' quarter
  CPUs would leave no node the whole CPU the job's file listing asks for). The model forecasts the
  feature set's test window (its last 20 % of the time range) and the predictions go to the lake;
  the rows it predicted are reported, and its per-reading figures are, like the other stages',
  over every reading posted.

The model the ``batch_predict`` stage runs is trained by the bench, once, as setup (not measured,
not in the table; its wall time is logged and in the JSON under ``setup``): right after the first
scale's first features stage, ``python -m jobs.train`` runs as a job on that feature set (one Ray
Train worker, 20 boosting rounds: every forecast and interval edge of the product's model, on
small trees) and registers it under a name of this bench run's own (``gh-scale-bench-<time>-<hex>``,
experiment ``gh-scale-bench``) on the stack's MLflow, so a user's models are never touched. The
12-hour default gives the training its train, validation and test windows (60/20/20 % of the
time). ``--batch-predict "ARGS"`` runs a registered model of yours instead (ARGS name it and leave
the feature set to the bench, e.g. ``--model-name M --alias champion``; its features must match);
``--no-batch-predict`` skips the stage and the training.

How CPU is counted. This process moves itself into a cgroup of its own (v1 ``cpuacct``) before it
starts the Ray nodes, so every process of the cluster (raylets, GCS, dashboard and agents, Ray
workers and actors, job drivers, Data workers, Serve replicas, HAProxy) and this process (the
devices' HTTP client) are charged there by the kernel while they run: a stage's CPU-seconds are the
group's ``cpuacct.usage`` after minus before, and a process that exits within the stage counts in
full. What it misses: Kafka, HDFS and FerretDB (the stack's processes, shared with other work on
the machine), so the sink's and the gateway's cost on the engines is not in the figure;
``machine_cpu_s`` (every core's busy time from /proc/stat over the stage) bounds it from above,
other tenants of the machine included. ``cpu_sampled_s`` is the earlier count, kept as a
cross-check: each cluster process's own CPU from /proc every 0.25 s, so a process that exits
loses what it used after its last sample, and a job's driver is not seen at all (Ray's job
supervisor starts the entrypoint in a session of its own): a lower bound, about half the cgroup's
figure for the one-worker sink, whose work runs in the driver (the whole CPU figure where no
cgroup can be made). Counting each node's process tree with its reaped children's times (``cutime``)
was tried and came out below the samples: the time of exited Ray workers did not reach a live
ancestor.

Per stage it prints wall time and CPU per reading at each scale (raw: the stage's whole cost over
its readings, start-up included), the ratio Nx/1x of those (the target: within 1.2x), and the
marginal cost (the cost at Nx minus the cost at 1x over the readings added: start-up cancels).
Start the stack first (``stack/stack up``); progress goes to stderr, the last line is one JSON
document::

    python bench/scale.py [--greenhouses 20] [--scales 1,10] [--hours 12] [--step-s 60] [--rounds 1]
                          [--batch-predict "ARGS" | --no-batch-predict]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
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
from tests.helpers.engines import with_database  # noqa: E402
from tests.helpers.ray_cluster import WORKER_RESOURCE, LocalRayCluster, session_pids  # noqa: E402
from tests.helpers.stack import stack_settings  # noqa: E402

START = datetime(2026, 6, 1, tzinfo=timezone.utc)
JSON_V2 = "application/vnd.kafka.json.v2+json"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[scale] {msg}", file=sys.stderr, flush=True)


CPUACCT = Path("/sys/fs/cgroup/cpuacct")


class CpuGroup:
    """A cgroup (v1 ``cpuacct``) of its own for this process and everything it starts from then
    on: the Ray nodes and every process they fork (raylets, workers, job drivers, Data workers,
    replicas, HAProxy). The kernel charges a process's CPU to its group as it runs, so a process
    that exits within a stage counts in full. ``usage_s()`` is None where no such cgroup can be
    made (no cgroup v1 ``cpuacct`` mount, or no permission)."""

    def __init__(self) -> None:
        self.path: Path | None = None

    def __enter__(self) -> CpuGroup:
        path = CPUACCT / f"gh-scale-{os.getpid()}"
        try:
            path.mkdir()
            (path / "cgroup.procs").write_text(str(os.getpid()))
        except OSError as exc:
            log(f"no cpuacct cgroup ({exc}): CPU from 0.25-s samples of /proc only (a lower bound)")
            return self
        self.path = path
        return self

    def usage_s(self) -> float | None:
        return int((self.path / "cpuacct.usage").read_text()) / 1e9 if self.path else None

    def __exit__(self, *exc: object) -> None:
        if self.path:
            (CPUACCT / "cgroup.procs").write_text(str(os.getpid()))
            try:
                self.path.rmdir()
            except OSError as err:  # a process of the cluster still alive: leave the group
                log(f"cgroup {self.path} not removed: {err}")


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


def machine_busy_s() -> float:
    """CPU-seconds the whole machine spent busy (every core, /proc/stat): an upper bound that
    includes Kafka, HDFS, FerretDB and whatever else runs on the machine."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


class Meter:
    """Wall and CPU of one stage (the module docstring says how CPU is counted): ``cpu_s`` from
    the cgroup (else ``cpu_sampled_s``), ``cpu_sampled_s`` each cluster process's CPU up to its last
    0.25-s sample plus this process's own (a lower bound, kept as a cross-check), ``machine_cpu_s``
    the whole machine's busy CPU (an upper bound)."""

    def __init__(self, cluster: LocalRayCluster, group: CpuGroup, every_s: float = 0.25) -> None:
        self.cluster, self.group, self.every_s = cluster, group, every_s

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            self._last.update(cluster_cpu(self.cluster))

    def __enter__(self) -> Meter:
        self._first = cluster_cpu(self.cluster)
        self._last = dict(self._first)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self._machine, self._group = machine_busy_s(), self.group.usage_s()
        self._wall, self._own = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self._wall
        self.own_cpu_s = time.process_time() - self._own
        group = self.group.usage_s()
        self.machine_cpu_s = machine_busy_s() - self._machine
        self._stop.set()
        self._thread.join()
        self._last.update(cluster_cpu(self.cluster))
        self.cpu_sampled_s = self.own_cpu_s + sum(cpu - self._first.get(key, 0.0) for key, cpu in self._last.items())
        self.cpu_s = group - self._group if group is not None and self._group is not None else self.cpu_sampled_s

    def stage(self, **extra: Any) -> dict[str, Any]:
        return {"wall_s": self.wall_s, "cpu_s": self.cpu_s, "cpu_sampled_s": self.cpu_sampled_s, "machine_cpu_s": self.machine_cpu_s, "own_cpu_s": self.own_cpu_s, **extra}


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


def remove_gateway(cluster: LocalRayCluster) -> None:
    """Shut Serve down on the cluster, the gateway's replicas with it (the call returns once they
    are gone; again is a no-op)."""
    httpx.delete(f"{cluster.dashboard_url}/api/serve/applications/", headers=cluster.headers, timeout=60)


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


# The bench's model is setup, not the product's: few rounds and one Train worker keep it cheap;
# early stopping still needs the validation window; its own experiment keeps the users' clean.
BENCH_TRAIN_FLAGS = "--num-workers 1 --num-boost-round 20 --early-stopping-rounds 5 --experiment gh-scale-bench"


class PredictModel:
    """The registered model the ``batch_predict`` stage runs: the one ``--batch-predict`` ARGS
    name, or else one the bench trains and registers under a name of its own the first time the
    stage runs (``setup``: that training's wall time and job summary)."""

    def __init__(self, given_args: str | None) -> None:
        self.args = given_args
        self.name = f"gh-scale-bench-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(2).hex()}"
        self.setup: dict[str, Any] | None = None

    def predict_args(self, cluster: LocalRayCluster, config_file: Path, feature_set: str, name: str) -> str:
        if self.args is None:
            self.args = self._train(cluster, config_file, feature_set, name)
        return self.args

    def _train(self, cluster: LocalRayCluster, config_file: Path, feature_set: str, name: str) -> str:
        log(f"setup: training {self.name} on feature set {feature_set} (not measured)")
        started = time.perf_counter()
        summary = run_job(cluster, f"python -m jobs.train --feature-set-id {feature_set} --model-name {self.name} {BENCH_TRAIN_FLAGS}", config_file, f"train-{name}")
        self.setup = {"train_wall_s": time.perf_counter() - started, "train_summary": summary}
        log(f"setup: {self.name} version {summary['model_version']} trained on {summary['train_rows']} rows in {self.setup['train_wall_s']:.1f} s")
        return f"--model-name {self.name} --version {summary['model_version']}"


def batch_predict_stage(cluster: LocalRayCluster, group: CpuGroup, model: PredictModel, features: dict[str, Any], config_file: Path, name: str) -> dict[str, Any]:
    """``jobs.batch_predict`` with the model over the feature set the features stage wrote, measured."""
    feature_set = features["feature_set_id"]
    extra = model.predict_args(cluster, config_file, feature_set, name)
    if "--feature-set-id" not in extra:
        extra += f" --feature-set-id {feature_set}"
    with Meter(cluster, group) as m:
        summary = run_job(cluster, f"python -m jobs.batch_predict {extra}", config_file, f"predict-{name}")
    log(f"{name} batch_predict: {summary.get('rows')} rows predicted ({summary.get('window')} window, {summary.get('files')} files) in {m.wall_s:.1f} s, {m.cpu_s:.1f} CPU-s")
    return m.stage(summary=summary, rows_predicted=summary.get("rows", 0))


def one_scale(cluster: LocalRayCluster, group: CpuGroup, scale: int, args: argparse.Namespace, data_dir: Path, round_: int, model: PredictModel | None) -> dict[str, Any]:
    greenhouses = args.greenhouses * scale
    steps = int(args.hours * 3600 / args.step_s)
    name = f"scale{scale}r{round_}"
    run, settings = stack_settings(data_dir / name, name, partitions=args.partitions, sink_batch_records=5000)
    settings_data = settings.for_replicas()
    settings_data["ray"]["auth_token_file"] = str(cluster.token_file)  # the jobs' ray.init(): this cluster's token
    config_file = data_dir / f"settings-{name}.json"
    config_file.write_text(json.dumps(settings_data))
    # the same topic sunk again by two workers: a sink group, lake folder and database of their own
    database2 = f"gh_{name}_{run}_w2"
    settings2 = json.loads(json.dumps(settings_data))
    settings2["sink"]["group_id"] += "-w2"
    settings2["lake_url"] += "-w2"
    settings2["metadata_url"] = with_database(settings_data["metadata_url"], database2)
    config_file2 = data_dir / f"settings-{name}-w2.json"
    config_file2.write_text(json.dumps(settings2))
    store = open_metadata(settings.metadata_url)
    registry = DeviceRegistry(store)
    tokens = {f"gh-{scale}x-{g:04d}": "" for g in range(greenhouses)}
    for gh in tokens:
        tokens[gh] = registry.add(f"{gh}-climate", gh)
    prefix = deploy_gateway(cluster, name, settings_data)
    readings = greenhouses * steps
    log(f"{scale}x round {round_}: {greenhouses} greenhouses x {steps} steps = {readings} readings")
    stages: dict[str, dict[str, Any]] = {}
    try:
        with Meter(cluster, group) as m:
            accepted, failed = asyncio.run(post_all(prefix, settings.topics.sensors, tokens, steps, args.step_s, args.batch, args.clients))
        stages["gateway"] = m.stage(accepted=accepted, failed_requests=failed)
        log(f"{scale}x gateway: {accepted} accepted in {m.wall_s:.1f} s, {m.cpu_s:.1f} CPU-s")
        with Meter(cluster, group) as m:
            summary = run_job(cluster, "python -m jobs.sink --workers 1 --idle-polls 3", config_file, f"sink-{name}")
        stages["sink"] = m.stage(summary=summary, rows_per_s=readings / m.wall_s)
        log(f"{scale}x sink (1 worker): {m.wall_s:.1f} s, {m.cpu_s:.1f} CPU-s")
        if args.sink_workers > 1:
            with Meter(cluster, group) as m:
                summary = run_job(cluster, f"python -m jobs.sink --workers {args.sink_workers} --idle-polls 3", config_file2, f"sink{args.sink_workers}-{name}")
            stages[f"sink_x{args.sink_workers}"] = m.stage(summary=summary, rows_per_s=readings / m.wall_s)
            log(f"{scale}x sink ({args.sink_workers} workers): {m.wall_s:.1f} s, {m.cpu_s:.1f} CPU-s")
        with Meter(cluster, group) as m:
            summary = run_job(cluster, "python -m jobs.preprocess", config_file, f"features-{name}")
        stages["features"] = m.stage(summary=summary)
        log(f"{scale}x features: {m.wall_s:.1f} s, {m.cpu_s:.1f} CPU-s")
        if model is not None:
            # The jobs read their windows through a Ray Data ListFiles task that asks a whole CPU;
            # with the replicas' quarter CPUs on the 1-CPU workers and an inference actor's half
            # on the head, no node has one and the job waits forever. Nothing posts any more.
            remove_gateway(cluster)
            stages["batch_predict"] = batch_predict_stage(cluster, group, model, summary, config_file, name)
    finally:
        remove_gateway(cluster)
        store.client.drop_database(f"gh_{name}_{run}")  # type: ignore[attr-defined]
        store.client.drop_database(database2)  # type: ignore[attr-defined]
    return {"scale": scale, "round": round_, "greenhouses": greenhouses, "readings": readings, "stages": stages}


METRICS = ("wall_s", "cpu_s", "cpu_sampled_s", "machine_cpu_s", "own_cpu_s")


def median_of(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One scale's rounds folded into their medians per stage (and per-reading figures)."""
    readings = rounds[0]["readings"]
    stages: dict[str, dict[str, Any]] = {}
    for stage in rounds[0]["stages"]:
        runs = [r["stages"][stage] for r in rounds if stage in r["stages"]]
        s = {k: statistics.median(run[k] for run in runs) for k in METRICS}
        s["rounds"] = {k: [round(run[k], 3) for run in runs] for k in METRICS}
        if "rows_per_s" in runs[0]:
            s["rows_per_s"] = readings / s["wall_s"]
        if "rows_predicted" in runs[0]:
            s["rows_predicted"] = runs[0]["rows_predicted"]
        s["wall_ms_per_reading"] = 1000 * s["wall_s"] / readings
        s["cpu_ms_per_reading"] = 1000 * s["cpu_s"] / readings
        stages[stage] = s
    return {"scale": rounds[0]["scale"], "greenhouses": rounds[0]["greenhouses"], "readings": readings, "stages": stages, "runs": rounds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--greenhouses", type=int, default=20, help="the 1x fleet (default 20)")
    parser.add_argument("--scales", default="1,10", help="fleet multiples, comma-separated (default 1,10)")
    parser.add_argument("--hours", type=float, default=12.0, help="simulated hours per greenhouse (default 12; the features job finds no complete rows in 2)")
    parser.add_argument("--step-s", type=float, default=60.0, help="seconds between a device's readings (default 60)")
    parser.add_argument("--batch", type=int, default=60, help="readings per request (default 60)")
    parser.add_argument("--clients", type=int, default=8, help="requests in flight (default 8)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1, help="run every scale this many times (fresh topic each) and report the medians (default 1)")
    parser.add_argument("--sink-workers", type=int, default=2, help="also sink the same topic with this many workers, for the scaling efficiency (default 2; 1: skip)")
    predict = parser.add_mutually_exclusive_group()
    predict.add_argument(
        "--batch-predict",
        default=None,
        metavar="ARGS",
        help="run the batch_predict stage (`python -m jobs.batch_predict ARGS --feature-set-id <the features stage's>`) with a registered model of yours instead of the one the bench trains; ARGS name one whose features match, e.g. '--model-name M --alias champion'",
    )
    predict.add_argument("--no-batch-predict", action="store_true", help="skip the batch_predict stage (and the training it needs)")
    args = parser.parse_args(argv)
    scales = [int(s) for s in args.scales.split(",")]
    model = None if args.no_batch_predict else PredictModel(args.batch_predict)
    log("starting a Ray head and two worker nodes")
    with CpuGroup() as group, LocalRayCluster(workers=2) as cluster, tempfile.TemporaryDirectory(prefix="gh-scale-") as tmp:
        runs = [one_scale(cluster, group, scale, args, Path(tmp), round_, model) for round_ in range(args.rounds) for scale in scales]
    results = [median_of([r for r in runs if r["scale"] == scale]) for scale in scales]
    base = results[0]
    header = "stage".ljust(14)
    for r in results:
        header += f"{r['scale']}x wall ms/rd".rjust(16) + f"{r['scale']}x CPU ms/rd".rjust(16)
    for r in results[1:]:
        header += f"{r['scale']}x/{base['scale']}x wall".rjust(14) + f"{r['scale']}x/{base['scale']}x CPU".rjust(14) + "marg. CPU ms/rd".rjust(17) + "marg. wall ms/rd".rjust(18)
    print(f"per reading (raw: the stage's whole cost / readings), median of {args.rounds} round(s); marginal: (cost at Nx - cost at {base['scale']}x) / (readings at Nx - at {base['scale']}x)")
    print(header)
    ratios: dict[str, dict[str, float]] = {}
    nan = float("nan")
    for stage in base["stages"]:
        row = f"{stage:<14}"
        for r in results:
            s = r["stages"].get(stage, {})
            row += f"{s.get('wall_ms_per_reading', nan):>16.3f}{s.get('cpu_ms_per_reading', nan):>16.3f}"
        for r in results[1:]:
            s, b = r["stages"].get(stage), base["stages"][stage]
            ratio_cpu = s["cpu_ms_per_reading"] / b["cpu_ms_per_reading"] if s and b["cpu_ms_per_reading"] else nan
            ratio_wall = s["wall_ms_per_reading"] / b["wall_ms_per_reading"] if s and b["wall_ms_per_reading"] else nan
            extra = r["readings"] - base["readings"]
            marg_cpu = 1000 * (s["cpu_s"] - b["cpu_s"]) / extra if s and extra else nan
            marg_wall = 1000 * (s["wall_s"] - b["wall_s"]) / extra if s and extra else nan
            ratios[f"{stage}_{r['scale']}x_over_{base['scale']}x"] = {
                "cpu_per_reading": ratio_cpu,
                "wall_per_reading": ratio_wall,
                "marginal_cpu_ms_per_reading": marg_cpu,
                "marginal_wall_ms_per_reading": marg_wall,
            }
            row += f"{ratio_wall:>14.2f}{ratio_cpu:>14.2f}{marg_cpu:>17.3f}{marg_wall:>18.3f}"
        print(row)
    efficiency: dict[str, float] = {}
    key = f"sink_x{args.sink_workers}"
    for r in results:
        one, many = r["stages"].get("sink"), r["stages"].get(key)
        if one and many:
            efficiency[f"{r['scale']}x"] = many["rows_per_s"] / (args.sink_workers * one["rows_per_s"])
            print(f"sink {r['scale']}x: 1 worker {one['rows_per_s']:.0f} rows/s, {args.sink_workers} workers {many['rows_per_s']:.0f} rows/s, efficiency {efficiency[str(r['scale']) + 'x']:.2f}")
    for r in results:
        if "batch_predict" in r["stages"]:
            print(f"batch_predict {r['scale']}x: {r['stages']['batch_predict']['rows_predicted']} rows predicted (the feature set's test window) from {r['readings']} readings")
    setup = model.setup if model else None
    if setup:
        print(f"setup (not in the table): trained {model.name} version {setup['train_summary']['model_version']} in {setup['train_wall_s']:.1f} s")
    print(json.dumps({"args": vars(args), "results": results, "ratios": ratios, "sink_scaling_efficiency": efficiency, "setup": setup}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
