"""What every job entrypoint shares: logging, one JSON summary line, non-zero exit on failure."""

from __future__ import annotations

import logging
from typing import Any, Callable

import orjson


def run_job(name: str, body: Callable[[], dict[str, Any]]) -> int:
    """Run ``body``; print ``{"job": name, "ok": ..., ...}`` as the last line; return the exit code.

    ``body`` returns the summary fields; a returned ``ok: False`` also exits 1.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        summary = body()
    except Exception as exc:  # one line for the operator, the traceback in the log
        logging.getLogger(f"jobs.{name}").exception("%s failed", name)
        print(orjson.dumps({"job": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"}, default=str).decode())
        return 1
    ok = bool(summary.pop("ok", True))
    print(orjson.dumps({"job": name, "ok": ok, **summary}, default=str).decode())
    return 0 if ok else 1


def init_ray() -> None:
    """Join the cluster the job runs on (``ray job submit`` sets RAY_ADDRESS), else start a local one
    (``RAY_ADDRESS=auto`` joins a head running on this machine)."""
    import os

    import ray

    # Starting a Train worker group can take long on a loaded 2-core machine; 60 s is Ray's default.
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")
    if not ray.is_initialized():
        # RAY_ADDRESS is set by `ray job submit`; without it, a fresh local cluster (not whatever
        # head happens to run on this machine).
        ray.init(address=os.environ.get("RAY_ADDRESS") or "local", log_to_driver=False)
