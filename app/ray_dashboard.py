"""The Ray dashboard wherever this product starts Ray for a person (the demo, ``greenhouse serve``).

It binds loopback only (the dashboard has no login of its own; the Jobs API behind it runs
code), on Ray's port 8265 or, when that is taken (a ``ray start`` head, another demo), the next
free port, as Ray itself does for a bare ``ray.init()``. Its metrics pages read Prometheus at
``RAY_PROMETHEUS_HOST`` and embed Grafana panels from ``RAY_GRAFANA_HOST``; both are environment
variables the dashboard process reads when it starts, set here from the settings' ``prometheus_url``
(``GH_PROMETHEUS_URL``, which ``stack/stack env`` exports) and ``grafana_url`` (``GH_GRAFANA_URL``).
A variable already set in the environment wins. Ray 2.60 protects a new local cluster with a
token (``~/.ray/auth_token``, made once); the dashboard's page asks for it, and the line printed
at start says where it is.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from app.config import Settings

DASHBOARD_HOST = "127.0.0.1"
DEFAULT_DASHBOARD_PORT = 8265
# Ray's own search for a bare ray.init(): the default port and the next 50
PORT_RETRIES = 50
# The dashboard agent's HTTP port, which takes the Jobs API's submissions; ray.init() cannot
# choose another (`ray start --dashboard-agent-listen-port` can, as stack/stack does).
RAY_INIT_AGENT_PORT = 52365


@dataclass(frozen=True)
class DashboardPort:
    """Where the dashboard will listen, and why not on the preferred port when it is not."""

    port: int
    note: str = ""

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{DASHBOARD_HOST}:{self.port}"


def port_is_free(port: int, host: str = DASHBOARD_HOST) -> bool:
    """Whether ``host:port`` can be bound now (it may be taken a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def choose_port(preferred: int = DEFAULT_DASHBOARD_PORT) -> DashboardPort:
    """``preferred`` when free, else the first free port after it (Ray's order), else one the OS
    picks; a note says so when it is not ``preferred``."""
    for port in range(preferred, preferred + PORT_RETRIES + 1):
        if port_is_free(port):
            return DashboardPort(port, "" if port == preferred else f"port {preferred} is taken, by another Ray perhaps, so it listens on {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((DASHBOARD_HOST, 0))
        port = probe.getsockname()[1]
    return DashboardPort(port, f"ports {preferred}-{preferred + PORT_RETRIES} are taken, so it listens on {port}")


def jobs_api_note() -> str:
    """Why the Jobs API of a Ray that ``ray.init()`` starts here will refuse submissions, or ""."""
    if port_is_free(RAY_INIT_AGENT_PORT, "0.0.0.0"):
        return ""
    return f"another Ray holds port {RAY_INIT_AGENT_PORT}, so this one's Jobs API takes no submissions"


def monitoring_env(settings: Settings) -> dict[str, str]:
    """``RAY_PROMETHEUS_HOST`` / ``RAY_GRAFANA_HOST`` for the configured Prometheus and Grafana
    (none for what is not configured)."""
    env = {}
    if settings.prometheus_url:
        env["RAY_PROMETHEUS_HOST"] = settings.prometheus_url.rstrip("/")
    if settings.grafana_url:
        env["RAY_GRAFANA_HOST"] = settings.grafana_url.rstrip("/")
    return env


def apply_monitoring_env(settings: Settings) -> dict[str, str]:
    """Put :func:`monitoring_env` into this process's environment (a value already there wins), for
    the dashboard Ray starts from here; returns the values in effect."""
    for name, value in monitoring_env(settings).items():
        os.environ.setdefault(name, value)
    return {name: os.environ[name] for name in ("RAY_PROMETHEUS_HOST", "RAY_GRAFANA_HOST") if os.environ.get(name)}


def ray_init_kwargs(port: DashboardPort) -> dict[str, Any]:
    """The ``ray.init`` arguments that start the dashboard on loopback at ``port``."""
    return {"include_dashboard": True, "dashboard_host": DASHBOARD_HOST, "dashboard_port": port.port}


def choose_metrics_port(settings: Settings) -> int:
    """The port of the metrics a new local Ray's node exports to Prometheus: ``ray.metrics_export_port``
    when set, else one free now. Chosen here rather than by Ray so that it can be announced (and
    put in a Prometheus's targets) before Ray starts."""
    if settings.ray.metrics_export_port:
        return settings.ray.metrics_export_port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((DASHBOARD_HOST, 0))
        return int(probe.getsockname()[1])


def metrics_init_kwargs(metrics_port: int) -> dict[str, Any]:
    """The ``ray.init`` argument that puts the node's Prometheus metrics on ``metrics_port``."""
    return {"_metrics_export_port": metrics_port}


def describe_metrics(metrics_port: int) -> str:
    """The line printed at start: where Prometheus scrapes this Ray's metrics (all of the node's
    processes: Serve replicas, the driver, Ray's own)."""
    return f"Ray metrics: http://{DASHBOARD_HOST}:{metrics_port}/metrics (a Prometheus scrape target; dashboards in stack/grafana read it)"


def describe(url: str, note: str = "", monitoring: dict[str, str] | None = None) -> str:
    """The line printed at start, ``Ray dashboard: http://127.0.0.1:8265``, with what a person
    should know about it in parentheses (another port, token sign-in, Prometheus and Grafana)."""
    details = [note] if note else []
    # Ray 2.60 turns token auth on for a new local cluster unless RAY_AUTH_MODE=disabled (and
    # ray.init sets RAY_AUTH_MODE=token in this process when it does): the page asks for the token
    if os.environ.get("RAY_AUTH_MODE") == "token":
        where = os.environ.get("RAY_AUTH_TOKEN_PATH")
        details.append(f"sign in with the token in {where}" if where else "sign in with the token `ray get-auth-token` prints")
    if monitoring:
        details.append("metrics from " + ", ".join(f"{k.removeprefix('RAY_').removesuffix('_HOST').title()} {v}" for k, v in monitoring.items()))
    return f"Ray dashboard: {url}" + (f" ({'; '.join(details)})" if details else "")
