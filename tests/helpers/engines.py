"""Real engines for tests: where each one is, whether it answers, and what to do when it does not.

Outside CI a missing engine skips its tests with a message saying how to start it. Under
``CI=true`` (or ``GH_REQUIRE_ENGINES=1``) a missing engine fails the test: the test command starts
the stack itself, so an engine that is not there is a failure, never a silent skip.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import pytest

# name -> (env var overriding the URL, default URL of the engine `stack/stack up` starts, service)
ENGINES: dict[str, tuple[str, str, str]] = {
    "kafka": ("GH_TEST_KAFKA_URL", "kafka://127.0.0.1:9092", "kafka"),
    "mongodb": ("GH_TEST_MONGODB_URL", "mongodb://127.0.0.1:27017", "ferretdb"),
    "webhdfs": ("GH_TEST_WEBHDFS_URL", "webhdfs://127.0.0.1:9870", "hdfs"),
    "mlflow": ("GH_TEST_MLFLOW_URL", "http://127.0.0.1:5000", "mlflow"),
    "prometheus": ("GH_TEST_PROMETHEUS_URL", "http://127.0.0.1:9090", "prometheus"),
    "ray": ("GH_TEST_RAY_URL", "http://127.0.0.1:8265", "ray"),
}


def engines_required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("GH_REQUIRE_ENGINES") == "1"


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    host_port = (parsed.netloc or parsed.path).split(",")[0].rsplit("@", 1)[-1]
    host, _, port = host_port.partition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=2):
            return True
    except (OSError, ValueError):
        return False


def engine_url(name: str) -> str:
    """The engine's base URL, or skip (fail under CI) when nothing answers there."""
    env_var, default, service = ENGINES[name]
    url = os.environ.get(env_var, default)
    if _reachable(url):
        return url
    missing(f"{name} is not reachable at {url}; start it with `stack/stack up {service}` (or set {env_var})")
    raise AssertionError("unreachable")  # missing() always leaves the test


def missing(message: str) -> None:
    """A prerequisite (engine, tool, file) is missing: skip the test, or fail it under CI."""
    if engines_required():
        pytest.fail(message + " [CI=true: a missing prerequisite is a failure]", pytrace=False)
    pytest.skip(message)
