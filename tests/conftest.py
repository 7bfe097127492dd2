"""Shared fixtures: fresh settings per test, one Ray + Serve instance per session (num_cpus=2)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from app.config import Settings
from app.serve.tuning import free_port


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded-default settings rooted in a fresh temporary directory."""
    return Settings(data_dir=tmp_path / "gh")


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for the whole session (num_cpus=2), never a `ray start` head."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        from app.serve.tuning import apply_serve_process_env

        apply_serve_process_env()  # the Serve settings the product ships with
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def ray_serve(ray_local):
    """Serve's HTTP ingress on a free port of the session's Ray instance; yields the base URL."""
    from ray import serve

    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
    except (ray_local.exceptions.GetTimeoutError, ray_local.exceptions.ActorDiedError) as exc:
        # Serve gives its proxy 60 s to start and then kills it; on a loaded 2-core machine the
        # proxy's worker process can miss that once. Start again, once, on a fresh port.
        warnings.warn(f"Serve's proxy did not start in time ({type(exc).__name__}); starting Serve again", stacklevel=1)
        serve.shutdown()
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
