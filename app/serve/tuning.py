"""Process settings the Ray cluster needs for Serve to be fast on small machines.

Ray reads these variables when its processes start, so they belong in the environment of
``ray.init`` / ``ray start`` (the demo, the tests and the bench apply them; ``stack/stack`` exports
them for its head, and the RayService manifests set them in the Ray containers):

- ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``: Ray's throughput mode. User code and the handle router
  share the replica's event loop instead of hopping threads, replicas talk to each other over
  gRPC, logs are not copied to stderr. On 2 cores, in one pair of 15-s runs of the same code, it
  cut ``/control``'s p99 at 50 requests/s from 570 to 142 ms (``bench/serve.py`` load).
- ``RAY_SERVE_ENABLE_DIRECT_INGRESS=0``: that mode would also let each ingress replica serve HTTP
  itself, which needs HAProxy in front of several applications; we keep Serve's proxy, so the
  ingest gateway and the control app share one port as before.

A value already in the environment wins (set ``RAY_SERVE_THROUGHPUT_OPTIMIZED=0`` to compare).
"""

from __future__ import annotations

import os
from typing import MutableMapping

SERVE_PROCESS_ENV: dict[str, str] = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
}


def apply_serve_process_env(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set :data:`SERVE_PROCESS_ENV` in ``environ`` (default ``os.environ``) where unset; call it
    before ``ray.init``. Returns the values in effect."""
    env = os.environ if environ is None else environ
    for name, value in SERVE_PROCESS_ENV.items():
        env.setdefault(name, value)
    return {name: env[name] for name in SERVE_PROCESS_ENV}
