"""``greenhouse serve CONFIG [SERVE RUN OPTIONS]``: Ray's ``serve run`` with the fast ingress.

``serve run serve_configs/ingest.yaml`` starts a local Ray cluster whose processes read the Serve
settings from their environment when they start, so run bare it gets Serve's Python proxy actor.
This command puts the product's settings (:func:`app.serve.tuning.apply_serve_process_env`: HAProxy
on the Serve port, throughput mode, free side ports for HAProxy's stats and metrics) into the
environment and then becomes ``serve run`` with the same arguments. A variable already set wins
(``RAY_SERVE_ENABLE_HA_PROXY=0 greenhouse serve ...`` brings the Python proxy back). On a Ray
cluster that is already running (``--address``, ``RAY_ADDRESS``) the settings must be in the
environment its head and workers were started with (``stack/stack`` and the RayService do that).

A Ray that ``serve run`` starts here runs its dashboard on loopback; this command prints its URL
("Ray dashboard: http://127.0.0.1:8265") and points it at the configured Prometheus and Grafana
(``GH_PROMETHEUS_URL``, ``GH_GRAFANA_URL``: app.ray_dashboard).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import typer


def serve_executable() -> str:
    """The ``serve`` CLI next to this Python (the project's venv), else the one on ``PATH``."""
    beside = Path(sys.executable).parent / "serve"
    found = str(beside) if beside.exists() else shutil.which("serve")
    if found is None:
        raise FileNotFoundError("Ray's `serve` command was not found; install ray[serve]")
    return found


def starts_local_ray(args: list[str]) -> bool:
    """Whether ``serve run ARGS`` starts a Ray of its own here (no ``--address``/``-a``, no
    ``RAY_ADDRESS``) rather than joining a running cluster."""
    joins = any(arg in ("--address", "-a") or arg.startswith("--address=") for arg in args)
    return not joins and not os.environ.get("RAY_ADDRESS")


def announce_dashboard() -> str:
    """Wire the dashboard ``serve run``'s ``ray.init()`` starts to the configured Prometheus and
    Grafana (app.ray_dashboard) and say where it will listen: Ray binds it to 127.0.0.1 on 8265 or
    the next free port, the one chosen here (Ray's own "View the dashboard at" line confirms it)."""
    from app.config import load_settings
    from app.ray_dashboard import apply_monitoring_env, choose_port, describe

    try:
        monitoring = apply_monitoring_env(load_settings())
    except ValueError as exc:  # GH_* settings that do not load: the dashboard still starts, unwired
        monitoring = {}
        print(f"greenhouse serve: settings not loaded ({exc}); the dashboard is not wired to Prometheus/Grafana", file=sys.stderr)
    port = choose_port()
    return describe(port.url, port.note, monitoring)


def serve(ctx: typer.Context, config: Path = typer.Argument(..., exists=True, dir_okay=False, help="A Serve config file (serve_configs/ingest.yaml, serve_configs/control.yaml).")) -> None:
    """Run a Serve config (``serve run CONFIG``) with the fast ingress: HAProxy straight to the
    ingress replicas and Ray's throughput mode. Other arguments go to ``serve run``."""
    from app.serve.tuning import apply_serve_process_env

    settings = apply_serve_process_env()
    ingress = "HAProxy" if settings["RAY_SERVE_ENABLE_HA_PROXY"] == "1" else "Serve's Python proxy"
    print(f"greenhouse serve: {ingress} ingress, throughput mode {settings['RAY_SERVE_THROUGHPUT_OPTIMIZED']}", file=sys.stderr)
    if starts_local_ray(ctx.args):
        print(f"greenhouse serve: {announce_dashboard()}", file=sys.stderr)
    executable = serve_executable()
    os.execv(executable, [executable, "run", str(config), *ctx.args])
