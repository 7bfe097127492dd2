"""``greenhouse serve CONFIG [SERVE RUN OPTIONS]``: Ray's ``serve run`` with the fast ingress.

``serve run serve_configs/ingest.yaml`` starts a local Ray cluster whose processes read the Serve
settings from their environment when they start, so run bare it gets Serve's Python proxy actor.
This command puts the product's settings (:func:`app.serve.tuning.apply_serve_process_env`: HAProxy
on the Serve port, throughput mode, free side ports for HAProxy's stats and metrics) into the
environment and then becomes ``serve run`` with the same arguments. A variable already set wins
(``RAY_SERVE_ENABLE_HA_PROXY=0 greenhouse serve ...`` brings the Python proxy back). On a Ray
cluster that is already running (``--address``, ``RAY_ADDRESS``) the settings must be in the
environment its head and workers were started with (``stack/stack`` and the RayService do that).
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


def serve(ctx: typer.Context, config: Path = typer.Argument(..., exists=True, dir_okay=False, help="A Serve config file (serve_configs/ingest.yaml, serve_configs/control.yaml).")) -> None:
    """Run a Serve config (``serve run CONFIG``) with the fast ingress: HAProxy straight to the
    ingress replicas and Ray's throughput mode. Other arguments go to ``serve run``."""
    from app.serve.tuning import apply_serve_process_env

    settings = apply_serve_process_env()
    ingress = "HAProxy" if settings["RAY_SERVE_ENABLE_HA_PROXY"] == "1" else "Serve's Python proxy"
    print(f"greenhouse serve: {ingress} ingress, throughput mode {settings['RAY_SERVE_THROUGHPUT_OPTIMIZED']}", file=sys.stderr)
    executable = serve_executable()
    os.execv(executable, [executable, "run", str(config), *ctx.args])
