"""Real engines for tests: where each one is, whether it answers, and what to do when it does not.

Outside CI a missing engine skips its tests with a message saying how to start it. Under
``CI=true`` (or ``GH_REQUIRE_ENGINES=1``) a missing engine fails the test: the test command starts
the stack itself, so an engine that is not there is a failure, never a silent skip.

Where the engines are: ``GH_TEST_<ENGINE>_URL`` when set (``stack/with-stack`` exports them), else
what ``stack/stack env --tests`` prints for the stack's run dir. The stack's URLs carry the client
side of its TLS and credentials (CA, client certificate, password file) as query parameters, the
way the product's settings do: Kafka over SASL_SSL, FerretDB with mutual TLS, MLflow over HTTPS.
"""

from __future__ import annotations

import functools
import os
import shlex
import socket
import subprocess
from pathlib import Path
from urllib.parse import urlparse, urlsplit, urlunsplit

import pytest

STACK_SCRIPT = Path(__file__).resolve().parents[2] / "stack" / "stack"

# name -> (env var overriding the URL, fallback URL when the stack script cannot say, service)
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


@functools.cache
def _stack_test_env() -> dict[str, str]:
    """The ``export NAME=value`` lines of ``stack/stack env --tests`` (environment values win there)."""
    try:
        done = subprocess.run(["bash", str(STACK_SCRIPT), "env", "--tests"], capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return {}
    found: dict[str, str] = {}
    for line in done.stdout.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, value = words[1].split("=", 1)
            found[name] = value
    return found


def stack_setting(name: str) -> str | None:
    """A ``GH_TEST_*`` value: from the environment, else from the stack script (None: neither)."""
    return os.environ.get(name) or _stack_test_env().get(name)


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    host_port = (parsed.netloc or parsed.path).split(",")[0].rsplit("@", 1)[-1]
    host, _, port = host_port.partition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=2):
            return True
    except (OSError, ValueError):
        return False


def answering_engine_url(name: str) -> str | None:
    """The engine's base URL when something answers there, else None (for a test that only adds
    to what it checks when the engine runs; the test that needs it calls :func:`engine_url`)."""
    env_var, fallback, _ = ENGINES[name]
    url = stack_setting(env_var) or fallback
    return url if _reachable(url) else None


def engine_url(name: str) -> str:
    """The engine's base URL, or skip (fail under CI) when nothing answers there."""
    env_var, fallback, service = ENGINES[name]
    url = stack_setting(env_var) or fallback
    if _reachable(url):
        return url
    missing(f"{name} is not reachable at {url}; start it with `stack/stack up {service}` (or set {env_var})")
    raise AssertionError("unreachable")  # missing() always leaves the test


def with_database(mongodb_url: str, database: str) -> str:
    """``mongodb://h:p/?tls=true&...`` with ``database`` as its path (its TLS options kept)."""
    parts = urlsplit(mongodb_url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def ray_token_file() -> str | None:
    """The file holding the stack's Ray head token (``RAY_AUTH_MODE=token``)."""
    return stack_setting("GH_TEST_RAY_TOKEN_FILE")


def missing(message: str) -> None:
    """A prerequisite (engine, tool, file) is missing: skip the test, or fail it under CI."""
    if engines_required():
        pytest.fail(message + " [CI=true: a missing prerequisite is a failure]", pytrace=False)
    pytest.skip(message)
