"""The end-to-end demo on embedded defaults, from sensors to closed-loop control.

``greenhouse demo`` (the README's first command) calls :func:`run_demo`:

1. data path: local Ray and the ingest gateway on Serve; a simulated fleet (real TMY3 weather) posts
   every reading over HTTP (a few devices deliberately faulty); the lake sink runs alongside; the
   lake must hold exactly the accepted readings;
2. learning path: Ray Data features, a Ray Tune search (ASHA), Ray Train with the best parameters,
   MLflow run + registered version, promotion to ``champion``;
3. control: the forecast/control Serve app loads the champion; one simulated day of closed-loop
   control through it, next to the same day under the rule-based thermostat; a summary table and
   an HTML/PNG report.

``--data-only`` stops after step 1. Ray runs with its dashboard (loopback, port 8265 or the next
free one, its URL announced at start) so that a person can watch the jobs, the Serve applications
and the metrics while the demo runs; it stops with the demo.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from app.closed_loop import percentile
from app.config import Settings
from app.demo_summary import DemoSummary, control_verdict, summary_rows
from app.security.credentials import CONTROL_SIMULATE, FORECAST_READ, CredentialError, OperatorRegistry
from app.security.signing import CommandSigner
from app.serve.tls_edge import TlsEdge

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoOptions:
    """What the demo simulates."""

    greenhouses: int = 4
    days: float = 1.0
    step_s: float = 60.0
    seed: int = 0
    batch_size: int = 100
    # Share of readings a faulty device corrupts (to show per-record rejection and dead-lettering).
    fault_rate: float = 0.003
    start: datetime | None = None  # default: midnight UTC, `days` (rounded up) + 1 days ago
    # learning and control (skipped with data_only)
    data_only: bool = False
    horizons_min: tuple[int, ...] = (5, 15, 60)
    tune_samples: int = 4
    tune_rounds: int = 120
    control_days: float = 1.0
    # the rollout drill: after the first champion, a degraded and a good version rolled out in turn
    rollouts: bool = True
    rollout_steps: tuple[float, ...] = (0.5, 1.0)


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


def _lake_counts(settings: Settings) -> dict[str, int]:
    """Rows and files in the raw lake, committed batch documents, dead-lettered records."""
    from app.bus import open_bus
    from app.lake import Lake
    from app.metadata import LAKE_BATCHES, open_metadata

    lake = Lake.from_url(settings.lake_url)
    files = lake.list_files("raw/sensors")
    bus = open_bus(settings.bus_url, topics=settings.topics)
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


class _SinkThread:
    """The lake sink running alongside ingestion, as it would in production."""

    def __init__(self, settings: Settings) -> None:
        from app.bus import open_bus
        from app.ingest.sink import LakeSink
        from app.lake import Lake
        from app.metadata import open_metadata

        self.settings = settings
        self.sink = LakeSink(settings, open_bus(settings.bus_url, topics=settings.topics), Lake.from_url(settings.lake_url), open_metadata(settings.metadata_url))
        self.result: dict[str, Any] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="lake-sink", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        try:
            self.result["stats"] = self.sink.run(until_idle=False, should_stop=self.stop.is_set)
        except BaseException as exc:  # surfaced by drain()
            self.result["error"] = exc

    def drain(self, progress: Callable[[str, float, float], None], timeout_s: float = 600) -> int:
        """Wait until the sink has committed every record on the bus, stop it; its duplicates."""
        from app.bus import open_bus

        end = sum(open_bus(self.settings.bus_url, topics=self.settings.topics).end_offsets(self.settings.topics.sensors).values())
        deadline = time.monotonic() + timeout_s
        while True:
            committed = self.sink.committed_offsets_total()
            progress("sinking the bus into the lake", committed, end)
            if committed >= end or "error" in self.result or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.close()
        if "error" in self.result:
            raise RuntimeError(f"lake sink failed: {self.result['error']}") from self.result["error"]
        stats = self.result.get("stats")
        return stats.duplicates if stats else 0

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


def _post_readings(url: str, verify: str, settings: Settings, options: DemoOptions, summary: DemoSummary, progress: Callable[[str, float, float], None]) -> datetime:
    """Simulate the fleet and post its readings (a few corrupted) over HTTP; the simulated end."""
    from app.ingest.client import GatewayClient
    from app.security.credentials import DeviceRegistry
    from app.sim.credentials import FleetCredentials
    from app.sim.fleet import FleetSimulator

    midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    start = options.start or midnight - timedelta(days=int(options.days + 0.999) + 1)
    fleet = FleetSimulator(options.greenhouses, start, step_s=options.step_s, seed=options.seed)
    registry = DeviceRegistry.from_settings(settings)  # the demo makes its own device credentials
    credentials = FleetCredentials.for_fleet(registry, fleet)
    registry.close()
    duration_s = options.days * 86_400
    total_steps = int(duration_s // options.step_s)
    rng = random.Random(f"faults:{options.seed}")
    summary.security += f"; {len(credentials.tokens)} device tokens"
    with GatewayClient(url, topic=settings.topics.sensors, batch_size=options.batch_size, token_for=credentials.token_for, verify=verify) as client:
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
                progress("simulating and posting readings over HTTPS", step, total_steps)
        client.post(pending)
        tally = client.tally
    summary.readings_accepted = tally.accepted
    summary.readings_rejected = tally.rejected
    summary.rejected_by_reason = dict(tally.rejected_by_reason)
    summary.requests = tally.requests
    summary.request_p50_ms = round(percentile(tally.latencies_s, 0.50) * 1000, 2)
    summary.request_p99_ms = round(percentile(tally.latencies_s, 0.99) * 1000, 2)
    return fleet.now


def _check_lake(summary: DemoSummary, before: dict[str, int], after: dict[str, int]) -> None:
    """What this run added to the lake, and whether it is exactly the accepted readings."""
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


def start_ray(settings: Settings, announce: Callable[[str], None]) -> str:
    """A fresh local Ray with its dashboard on loopback (app.ray_dashboard), wired to the configured
    Prometheus and Grafana, its metrics on a port chosen here; announces the dashboard's URL, then
    the metrics' URL, and returns the dashboard's ("" when it could not start: the demo goes on
    without it)."""
    import ray

    from app.ray_dashboard import apply_monitoring_env, choose_metrics_port, choose_port, describe, describe_metrics, jobs_api_note, metrics_init_kwargs, ray_init_kwargs

    monitoring = apply_monitoring_env(settings)
    port = choose_port()
    metrics_port = choose_metrics_port(settings)
    note = "; ".join(n for n in (port.note, jobs_api_note()) if n)
    # address="local": always a fresh in-process cluster, even when a `ray start` head runs here.
    common: dict[str, Any] = {"address": "local", "num_cpus": 2, "log_to_driver": False, "ignore_reinit_error": True, **metrics_init_kwargs(metrics_port)}
    try:
        context = ray.init(**common, **ray_init_kwargs(port))
    except Exception as exc:  # the port taken since it was chosen, a Ray without the dashboard's packages
        ray.shutdown()
        announce(f"Ray dashboard: not started ({type(exc).__name__}: {exc}); the demo goes on without it")
        ray.init(**common, include_dashboard=False)
        announce(describe_metrics(metrics_port))
        return ""
    url = f"http://{context.dashboard_url}" if context.dashboard_url else ""
    announce(describe(url, note, monitoring) if url else "Ray dashboard: not started (see Ray's log); the demo goes on without it")
    announce(describe_metrics(metrics_port))
    return url


def run_demo(settings: Settings, options: DemoOptions, *, on_progress: Callable[[str, float, float], None] | None = None, on_message: Callable[[str], None] | None = None) -> DemoSummary:
    """Run the data path end to end; ``on_progress(stage, done, total)`` reports progress,
    ``on_message(text)`` what a person should know at once (the Ray dashboard's URL)."""
    import ray
    from ray import serve

    from app.serve.args import AppArgs
    from app.serve.ingest import build_app
    from app.serve.tuning import apply_serve_process_env

    progress = on_progress or (lambda stage, done, total: None)
    started = time.monotonic()
    # the twin is a simulation: decisions at its instants are sent to its simulated actuators
    settings = settings.model_copy(update={"control": settings.control.model_copy(update={"simulated_plant": True})})
    summary = DemoSummary(greenhouses=options.greenhouses, simulated_days=options.days, data_dir=str(settings.data_dir))
    settings.data_dir.mkdir(parents=True, exist_ok=True)

    progress("starting Ray and the ingest gateway", 0, 1)
    # Ray Train's worker group may wait long for CPUs that Tune trials or Serve replicas hold.
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")
    apply_serve_process_env()
    start_ray(settings, on_message or log.info)
    sink: _SinkThread | None = None
    edge: TlsEdge | None = None
    try:
        serve.start(http_options={"host": settings.serve.host, "port": settings.serve.port})
        serve.run(build_app(AppArgs(settings=settings.for_replicas())), name="ingest", route_prefix="/")
        edge = TlsEdge(settings, settings.serve.port).start()  # devices and the loop speak HTTPS only
        url = summary.gateway_url = edge.url
        summary.security = f"HTTPS via the TLS edge (CA {edge.tls.ca_path})"
        progress("starting Ray and the ingest gateway", 1, 1)
        before = _lake_counts(settings)  # real engines keep data between runs: compare what this run added
        sink = _SinkThread(settings)
        end_of_data = _post_readings(url, str(edge.tls.ca_path), settings, options, summary, progress)
        summary.sink_duplicates = sink.drain(progress)
        _check_lake(summary, before, _lake_counts(settings))
        summary.stage_s["data path"] = round(time.monotonic() - started, 1)
        if summary.ok and not options.data_only:
            _learn_and_control(settings, options, summary, url, str(edge.tls.ca_path), end_of_data, progress)
    finally:
        if edge is not None:
            edge.stop()
        if sink is not None:
            sink.close()
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    summary.elapsed_s = round(time.monotonic() - started, 1)
    return summary


def _learn_and_control(settings: Settings, options: DemoOptions, summary: DemoSummary, url: str, verify: str, control_start: datetime, progress: Callable[[str, float, float], None]) -> None:
    """Steps 2 and 3 of the demo, on the running Ray and Serve."""
    _learn(settings, options, summary, progress)
    _control(settings, options, summary, url, verify, control_start, progress)


def _learn(settings: Settings, options: DemoOptions, summary: DemoSummary, progress: Callable[[str, float, float], None]) -> None:
    """Step 2: features, a Tune search, training the best, promotion."""
    from app.preprocess import PreprocessParams, read_feature_set_ray, run_preprocess
    from app.train.pipeline import TrainJobParams, run_training
    from app.train.promotion import run_promotion
    from app.train.tune import TuneParams, tune_boosters

    t0 = time.monotonic()
    progress("features with Ray Data", 0, 1)
    info = run_preprocess(settings, PreprocessParams(horizons_min=options.horizons_min))
    summary.feature_set_id = info.feature_set_id
    summary.feature_rows = info.rows_train + info.rows_validation + info.rows_test
    progress("features with Ray Data", 1, 1)

    progress("tuning with Ray Tune (ASHA)", 0, 1)
    best, search = tune_boosters(
        read_feature_set_ray(settings, info.feature_set_id, "train"),
        read_feature_set_ray(settings, info.feature_set_id, "validation"),
        info.feature_columns,
        TuneParams(num_samples=options.tune_samples, max_rounds=options.tune_rounds, grace_rounds=max(10, options.tune_rounds // 6), report_every_rounds=10, seed=options.seed),
        storage_path=settings.data_dir / "ray_results",
        name=f"demo-tune-{info.feature_set_id}",
        verbose=0,
    )
    summary.tune_trials = len(search["trials"])
    summary.tune_stopped_early = search["stopped_early"]
    progress("tuning with Ray Tune (ASHA)", 1, 1)

    progress("training the best with Ray Train, MLflow, promotion", 0, 1)
    trained = run_training(settings, TrainJobParams(feature_set_id=info.feature_set_id, booster=best), tags={"tuned": "true", "demo": "true"})
    summary.model_version = trained.model_version
    m = trained.metrics
    summary.forecast_skill_15min = m.get("skill_air_temp_c_15min")
    if "skill_air_temp_c_15min_ci_low" in m:
        summary.forecast_skill_15min_ci = (m["skill_air_temp_c_15min_ci_low"], m["skill_air_temp_c_15min_ci_high"])
    summary.validation_skill_15min = m.get("validation_skill_air_temp_c_15min")
    summary.interval_coverage_15min = m.get("coverage_air_temp_c_15min")
    summary.promoted = run_promotion(settings, trained.model_name).promoted
    progress("training the best with Ray Train, MLflow, promotion", 1, 1)
    if options.rollouts:
        _train_candidates(settings, info.feature_set_id, best, summary, progress)
    summary.stage_s["learning path"] = round(time.monotonic() - t0, 1)


def _train_candidates(settings: Settings, feature_set_id: str, best: Any, summary: DemoSummary, progress: Callable[[str, float, float], None]) -> None:
    """Two more versions for the rollout drill: one trained on shuffled targets (it must be rolled
    back) and one with the tuned parameters at half the learning rate and twice the rounds (it
    should be promoted)."""
    from app.train.pipeline import TrainJobParams, run_training

    stage = "training rollout candidates (a degraded and a good version)"
    progress(stage, 0, 2)
    degraded = run_training(settings, TrainJobParams(feature_set_id=feature_set_id, booster=best, shuffle_targets=True), tags={"demo": "true", "drill": "degraded"})
    progress(stage, 1, 2)
    # the tuned parameters learning half as fast for twice as long: the same capacity, smoother
    better = best.model_copy(update={"eta": best.eta / 2, "num_boost_round": 2 * best.num_boost_round})
    good = run_training(settings, TrainJobParams(feature_set_id=feature_set_id, booster=better), tags={"demo": "true", "drill": "good"})
    progress(stage, 2, 2)
    summary.candidates = {"degraded": degraded.model_version, "good": good.model_version}


def _control(settings: Settings, options: DemoOptions, summary: DemoSummary, url: str, verify: str, control_start: datetime, progress: Callable[[str, float, float], None]) -> None:
    """Step 3: the control app with its control loop deployed, a closed loop next to the
    thermostat (with the rollout drill), the report."""
    from ray import serve

    from app.closed_loop import run_closed_loop
    from app.serve.args import AppArgs
    from app.serve.control import application

    t0 = time.monotonic()
    settings = _loop_settings(settings, options)
    progress("deploying the forecast/control app and its control loop", 0, 1)
    serve.run(application(AppArgs(settings=settings.for_replicas()), with_loop=True), name="control", route_prefix="/climate")
    progress("deploying the forecast/control app and its control loop", 1, 1)
    token = _demo_operator(settings)
    summary.security += f"; operator {DEMO_OPERATOR!r} ({', '.join(DEMO_OPERATOR_SCOPES)}); commands signed (Ed25519, key {CommandSigner.from_settings(settings).key_id})"
    drill = _drill(settings, summary)
    counting_from = control_start + timedelta(minutes=WARMUP_MIN)
    try:
        loop = run_closed_loop(
            settings,
            url,
            greenhouses=options.greenhouses,
            start=counting_from,
            days=options.control_days,
            step_s=options.step_s,
            seed=options.seed,
            warmup_min=WARMUP_MIN,
            verify=verify,
            operator_token=token,
            on_progress=progress,
            on_interval=drill.on_interval if drill else None,
        )
        if drill is not None:
            summary.rollouts = drill.result().rollouts
    finally:
        if drill is not None:
            drill.close()
    _control_figures(settings, summary, loop, counting_from)
    summary.stage_s["control"] = round(time.monotonic() - t0, 1)
    _write_report(settings, summary, loop)


WARMUP_MIN = 60.0  # both twins settle this long before the comparison counts


def _loop_settings(settings: Settings, options: DemoOptions) -> Settings:
    """The demo's plant is a simulation: its control loop runs on the readings' clock, and its
    rollouts are judged over a few intervals of a small fleet (both versions' errors over 30 min,
    a 0.1 K margin: the shuffled-target version forecasts the opposite time of day's climate; a plain
    permutation of the targets forecast the climatology, which at night, with the greenhouse held
    near its setpoint, came within 0.02 K of the champion and was promoted)."""
    n = options.greenhouses
    loop = settings.loop.model_copy(update={"event_time": True, "poll_s": 0.02})
    rollout = settings.rollout.model_copy(
        update={"refresh_s": 0.2, "steps": list(options.rollout_steps), "min_errors_per_step": 6 * n, "min_decisions_per_step": 12, "settle_min": 20.0, "error_margin_c": 0.1}
    )
    return settings.model_copy(update={"loop": loop, "rollout": rollout})


def _drill(settings: Settings, summary: DemoSummary) -> Any:
    """The rollout drill over the candidates trained in step 2 (None when there are none)."""
    from app.rollout_drill import Candidate, RolloutDrill

    if not summary.candidates:
        return None
    candidates = [Candidate(summary.candidates["degraded"], "degraded", "rolled_back"), Candidate(summary.candidates["good"], "good", "promoted")]
    return RolloutDrill(settings, settings.control.model_name, candidates, steps=settings.rollout.steps, start_after_min=20.0)


def _control_figures(settings: Settings, summary: DemoSummary, loop: Any, counting_from: datetime) -> None:
    from app.rollout_drill import online_errors_by_version
    from app.tracking import resolve_alias

    m, t = loop.model, loop.thermostat
    summary.control = {
        "model_in_band_pct": m.in_band_pct,
        "thermostat_in_band_pct": t.in_band_pct,
        "model_heating_kwh": m.heating_kwh,
        "thermostat_heating_kwh": t.heating_kwh,
        "model_mean_temp_c": m.mean_temp_c,
        "thermostat_mean_temp_c": t.mean_temp_c,
        "model_rh_above_max_pct": m.rh_above_max_pct,
        "thermostat_rh_above_max_pct": t.rh_above_max_pct,
        "control_requests": loop.control_requests,
        "control_missed": loop.control_missed,
        "control_modes": loop.control_modes,
        "versions_serving": loop.versions_serving,
        "commands_applied": loop.commands_applied,
        "control_p50_ms": loop.control_p50_ms,
        "control_p99_ms": loop.control_p99_ms,
        "forecast_p50_ms": loop.forecast_p50_ms,
        "forecast_p99_ms": loop.forecast_p99_ms,
        "online_forecast_rmse_c": loop.online_forecast_rmse_c,
        "online_persistence_rmse_c": loop.online_persistence_rmse_c,
        "online_skill": None if loop.online_skill is None else round(loop.online_skill, 3),
    }
    summary.control_verdict = control_verdict(m.in_band_pct, m.heating_kwh, t.in_band_pct, t.heating_kwh, m.rh_above_max_pct, t.rh_above_max_pct)
    summary.version_errors = online_errors_by_version(settings, settings.control.model_name, counting_from)
    summary.champion_after = str(resolve_alias(settings.tracking_url, settings.control.model_name, settings.control.model_alias) or "")


def _write_report(settings: Settings, summary: DemoSummary, loop: Any) -> None:
    from app.closed_loop import write_report

    rows = summary_rows(summary)
    band = (settings.control.band_low_c, settings.control.band_high_c)
    summary.report = str(write_report(loop, settings.data_dir / "report", summary_rows=rows, band=band, rollouts=summary.rollouts, version_errors=summary.version_errors))


DEMO_OPERATOR = "demo-loop"
# the loop decides at the twin's simulated instants (as_of): that is control:simulate, dispatched
# only because the demo's plant is simulated (control.simulated_plant)
DEMO_OPERATOR_SCOPES = (FORECAST_READ, CONTROL_SIMULATE)


def _demo_operator(settings: Settings) -> str:
    """A token for the demo's control loop (a new one when the operator exists from a former run)."""
    operators = OperatorRegistry.from_settings(settings)
    try:
        try:
            return operators.add(DEMO_OPERATOR, DEMO_OPERATOR_SCOPES, valid_days=1)
        except CredentialError:
            return operators.rotate(DEMO_OPERATOR, valid_days=1)
    finally:
        operators.close()
