"""``greenhouse`` CLI (typer). Every command reads settings from ``--config FILE``, ``GH_*``
environment variables and defaults, in that order of increasing priority for the environment."""

from __future__ import annotations

import json
import sys
from datetime import UTC
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app.orchestration.registry import JOBS, JobSpec
from app.security.redact import redact

app = typer.Typer(
    name="greenhouse",
    help=(
        "Ray-native MLOps for smart greenhouses.\n\n"
        "Sensors post readings (Kafka REST Proxy v2 shape) to an ingest gateway on Ray Serve; readings "
        "go to a durable bus, then to a Parquet lake with metadata. Backends are chosen by URL in "
        "settings (GH_BUS_URL, GH_LAKE_URL, GH_METADATA_URL, ...); the defaults are embedded and live "
        "under GH_DATA_DIR (./.greenhouse)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML settings file (GH_* environment variables override it).")


def _settings(config: Path | None, **overrides):
    """The command's settings; logging set up from them (warnings and errors only, unless
    ``log.level`` says otherwise: the commands print what a person needs themselves)."""
    from app.config import load_settings
    from app.log_format import setup_logging

    try:
        settings = load_settings(config, **{k: v for k, v in overrides.items() if v is not None})
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]error:[/red] invalid settings: {escape(str(exc))}")
        raise typer.Exit(2) from None
    setup_logging(settings, default_level="WARNING")
    return settings


@app.command()
def demo(
    greenhouses: int = typer.Option(4, min=1, max=50, help="How many greenhouses to simulate."),
    days: float = typer.Option(4.0, min=0.01, max=60, help="Simulated days of readings to ingest (the training data)."),
    step_s: float = typer.Option(60.0, min=1, max=3600, help="Simulation and reading interval in seconds."),
    seed: int = typer.Option(0, help="Seed: the same seed gives the same readings."),
    batch_size: int = typer.Option(100, min=1, max=5000, help="Readings per HTTP request."),
    fault_rate: float = typer.Option(0.003, min=0, max=1, help="Share of readings that faulty devices corrupt."),
    data_only: bool = typer.Option(False, "--data-only", help="Stop after the data path (ingest, sink, lake check)."),
    tune_samples: int = typer.Option(4, min=1, max=100, help="Ray Tune trials."),
    control_days: float = typer.Option(1.0, min=0.05, max=30, help="Simulated days of closed-loop control."),
    rollouts: bool = typer.Option(True, "--rollouts/--no-rollouts", help="Rollout drill: train a degraded and a good version after the first champion and roll each out as a canary during control."),
    data_dir: Path | None = typer.Option(None, help="Where embedded stores live (default: a fresh run directory under ./.greenhouse/runs)."),
    port: int | None = typer.Option(None, help="Serve HTTP port (default: GH_SERVE__PORT or 8000)."),
    config: Path | None = ConfigOpt,
) -> None:
    """The whole product on one machine: simulate greenhouses, ingest over HTTP, sink to the lake,
    build features (Ray Data), tune and train (Ray Tune + Train), register and promote (MLflow),
    serve forecasts and control (Ray Serve) with its control loop, roll a degraded and a good model
    version out as canaries (the first is rolled back, the second promoted), and run a simulated day
    of closed-loop control next to a thermostat. Prints a summary table and writes an HTML report
    with plots."""
    from datetime import datetime

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from app.demo import DemoOptions, run_demo

    if data_dir is None:
        data_dir = Path(".greenhouse") / "runs" / datetime.now().strftime("%Y%m%d-%H%M%S")
    overrides = {"data_dir": data_dir}
    if port is not None:
        overrides["serve"] = {"port": port}
    settings = _settings(config, **overrides)
    options = DemoOptions(
        greenhouses=greenhouses,
        days=days,
        step_s=step_s,
        seed=seed,
        batch_size=batch_size,
        fault_rate=fault_rate,
        data_only=data_only,
        tune_samples=tune_samples,
        control_days=control_days,
        rollouts=rollouts,
    )
    console.print(f"[bold]greenhouse demo[/bold]: {greenhouses} greenhouses x {days:g} simulated days, data in {settings.data_dir}")
    tasks: dict[str, int] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f}"), TimeElapsedColumn(), console=console) as bar:

        def on_progress(stage: str, done: float, total: float) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=max(total, 1))
            bar.update(tasks[stage], completed=done, total=max(total, 1))

        try:
            summary = run_demo(settings, options, on_progress=on_progress, on_message=lambda text: console.print(f"[bold]{escape(text)}[/bold]", highlight=False))
        except Exception as exc:
            console.print(f"[red]demo failed:[/red] {type(exc).__name__}: {escape(str(exc))}")
            raise typer.Exit(1) from None
    _print_demo_summary(summary)
    print(json.dumps({"job": "demo", **summary.__dict__}, default=str))
    if not summary.ok:
        console.print("[red]FAILED:[/red] the lake does not hold exactly the accepted readings")
        raise typer.Exit(1)
    if not data_only and not summary.control:
        console.print("[red]FAILED:[/red] the control stage did not run")
        raise typer.Exit(1)
    if summary.report:
        console.print(f"report: [bold]{summary.report}[/bold]")


def _print_demo_summary(s) -> None:
    from app.demo_summary import summary_rows

    table = Table(title="Demo summary", show_header=True)
    table.add_column("what")
    table.add_column("value", justify="right")
    for what, value in summary_rows(s):
        table.add_row(what, str(value))
    console.print(table)


def _job_command(spec: JobSpec) -> None:
    """``greenhouse <job> ARGS``: the job's entrypoint in this process (its own ``--help``)."""

    @app.command(
        spec.name,
        help=f"{spec.description.rstrip('.')} ({spec.entrypoint()}). Pass --help for its options.",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    )
    def run(ctx: typer.Context) -> None:
        from app.entrypoints import main_of

        raise typer.Exit(main_of(spec.name)(list(ctx.args)))


for _spec in JOBS.values():
    _job_command(_spec)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def submit(
    ctx: typer.Context,
    job: str = typer.Argument(..., help=f"One of: {', '.join(JOBS)}"),
    address: str = typer.Option("http://127.0.0.1:8265", envvar="RAY_API_SERVER_ADDRESS", help="Ray Jobs API address."),
    submission_id: str | None = typer.Option(None, help="Deterministic id: re-submitting an existing id waits for it instead of running twice."),
    timeout_s: float = typer.Option(3600, help="Give up (and stop the job) after this long."),
) -> None:
    """Submit a job to a Ray cluster through the Jobs API, ship this project and the GH_* settings
    of this shell with it, stream its status, and print its JSON summary."""
    import os
    import uuid

    from app.orchestration.ray_jobs import RayJobsRunner, ray_auth_headers
    from app.orchestration.registry import job_spec
    from app.orchestration.runner import JobRequest

    try:
        spec = job_spec(job)
    except LookupError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    env_vars = {k: v for k, v in os.environ.items() if k.startswith("GH_")}
    request = JobRequest(job, submission_id or f"{job}-{uuid.uuid4().hex[:8]}", tuple(ctx.args), env_vars)
    console.print(f"submitting [bold]{escape(spec.entrypoint(request.args))}[/bold] to {address} as {request.submission_id}")
    try:
        runner = RayJobsRunner(address, working_dir=Path.cwd(), headers=ray_auth_headers(token_file=_settings(None).ray.auth_token_file))
        submission = runner.submit(request)
        result = runner.wait(submission, timeout_s=timeout_s, on_status=lambda s: console.print(f"  {submission.submission_id}: {s}", highlight=False))
    except Exception as exc:
        console.print(f"[red]error:[/red] {type(exc).__name__}: {escape(redact(str(exc)))}")
        raise typer.Exit(1) from None
    print(json.dumps(result.summary or {"job": job, "status": result.status}))
    if not result.ok:
        console.print(f"[red]{result.submission_id} {result.status}[/red]; last log lines:\n" + escape(result.tail(20)))
        raise typer.Exit(1)


@app.command()
def simulate(
    url: str = typer.Option("https://localhost:8443", help="Base URL of a running ingest gateway (the TLS edge in front of `serve run`)."),
    greenhouses: int = typer.Option(2, min=1, max=50),
    hours: float = typer.Option(24.0, min=0.01, help="Simulated hours to post."),
    step_s: float = typer.Option(60.0, min=1),
    seed: int = typer.Option(0),
    batch_size: int = typer.Option(100, min=1, max=5000),
    ca_file: Path | None = typer.Option(None, help="CA the gateway's certificate is verified with (default: security.ca_file, else the local CA under GH_DATA_DIR/pki)."),
    token: str | None = typer.Option(
        None,
        envvar="GH_DEVICE_TOKEN",
        help="One device's token for every reading (readings of other devices are refused, 40303). Default: register the simulated devices in the settings' registry, each with its own token.",
    ),
    config: Path | None = ConfigOpt,
) -> None:
    """Post simulated fleet readings to a running gateway (e.g. one started by ``serve run``)."""
    from datetime import datetime, timedelta

    from app.ingest.client import GatewayClient
    from app.security.credentials import DeviceRegistry
    from app.sim.credentials import FleetCredentials
    from app.sim.fleet import FleetSimulator

    settings = _settings(config)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours + 1)
    fleet = FleetSimulator(greenhouses, start, step_s=step_s, seed=seed)
    verify = str(ca_file or settings.security.ca_file or settings.data_dir / "pki" / "ca.crt") if url.startswith("https") else True
    if token is None:
        registry = DeviceRegistry.from_settings(settings)
        token_for = FleetCredentials.for_fleet(registry, fleet).token_for
        registry.close()
    else:
        token_for = lambda reading: token  # noqa: E731
    with GatewayClient(url, token_for=token_for, batch_size=batch_size, verify=verify) as client:
        try:
            for readings in fleet.iter_steps(hours * 3600):
                client.post(readings)
        except Exception as exc:
            console.print(f"[red]error:[/red] posting to {url} failed: {escape(redact(str(exc)))}")
            raise typer.Exit(1) from None
        tally = client.tally
    print(json.dumps({"job": "simulate", "accepted": tally.accepted, "rejected": tally.rejected, "requests": tally.requests, "rejected_by_reason": dict(tally.rejected_by_reason)}))


@app.command()
def edge(upstream_port: int | None = typer.Option(None, min=1, max=65535, help="The Serve HTTP port on loopback (default: GH_SERVE__PORT or 8000)."), config: Path | None = ConfigOpt) -> None:
    """Run the TLS edge (HTTPS, optional device certificates) in front of the Serve port until Ctrl-C.

    Listens on security.https_host:https_port (default 127.0.0.1:8443) with security.tls_cert_file,
    or with a certificate from the local CA under GH_DATA_DIR/pki (loopback only). Clients verify it
    with the CA file printed here."""
    import signal
    import threading

    from app.security.startup import UnsafeDeployment
    from app.serve.tls_edge import TlsEdge

    settings = _settings(config)
    try:
        running = TlsEdge(settings, upstream_port or settings.serve.port).start()
    except (UnsafeDeployment, RuntimeError, ValueError, OSError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    console.print(f"TLS edge on {running.url} -> http://127.0.0.1:{running.upstream_port} (clients verify with {running.tls.ca_path}); Ctrl-C stops it")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()


@app.command("config")
def show_config(config: Path | None = ConfigOpt) -> None:
    """Print the effective settings (secrets masked) as JSON."""
    print(json.dumps(_settings(config).public_dict(), indent=2))


@app.command()
def lake(config: Path | None = ConfigOpt) -> None:
    """Summarise the raw lake: rows and files per greenhouse and date."""
    import pyarrow.compute as pc

    from app.lake import Lake

    settings = _settings(config)
    table = Lake.from_url(settings.lake_url).read_raw_sensors(columns=["device_id", "greenhouse_id", "date"])
    if table.num_rows == 0:
        console.print(f"the lake at {settings.lake_url} holds no readings yet")
        return
    grouped = table.group_by(["greenhouse_id", "date"]).aggregate([("device_id", "count")]).sort_by([("greenhouse_id", "ascending"), ("date", "ascending")])
    out = Table(title=f"Raw readings in {settings.lake_url}")
    for col in ("greenhouse_id", "date", "rows"):
        out.add_column(col)
    for row in grouped.to_pylist():
        out.add_row(str(row["greenhouse_id"]), str(row["date"]), str(row["device_id_count"]))
    console.print(out)
    console.print(f"total rows: {pc.sum(grouped['device_id_count']).as_py()}")


app.add_typer(__import__("app.kuberay.cli", fromlist=["app"]).app, name="kuberay")
app.add_typer(__import__("app.cli.credentials", fromlist=["devices_app"]).devices_app, name="devices")
app.add_typer(__import__("app.cli.credentials", fromlist=["operators_app"]).operators_app, name="operators")
app.add_typer(__import__("app.cli.keys", fromlist=["app"]).app, name="keys")
app.add_typer(__import__("app.cli.rollout", fromlist=["app"]).app, name="rollout")
app.add_typer(__import__("app.cli.lineage", fromlist=["app"]).app, name="lineage")
app.command("serve", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(__import__("app.cli.serve", fromlist=["serve"]).serve)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    sys.exit(main())
