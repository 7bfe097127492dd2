"""Shared fixtures: fresh settings per test, one Ray + Serve instance per session (num_cpus=2)."""

from __future__ import annotations

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
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
