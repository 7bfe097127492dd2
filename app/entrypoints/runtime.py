"""What every job entrypoint shares: logging (JSON lines on stderr unless it is a terminal, each
with the job's name: app.log_format), one JSON summary line on stdout, non-zero exit on failure, and
joining the Ray cluster the job runs on."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from app.config import LogSettings, load_settings
from app.log_format import setup_logging
from app.orchestration.registry import job_spec

# Starting a Train worker group can take long on a loaded 2-core machine; 60 s is Ray's default.
TRAIN_WORKER_GROUP_START_TIMEOUT_S = "600"


def run_job(name: str, body: Callable[[], dict[str, Any]]) -> int:
    """Run ``body``; print ``{"job": name, "ok": ..., ...}`` as the last line; return the exit code.

    ``body`` returns the summary fields; a returned ``ok: False`` also exits 1.
    """
    setup_logging(_log_settings(), default_level="INFO", fields={"job": name})
    try:
        summary = body()
    except Exception as exc:  # one line for the operator, the traceback in the log
        logging.getLogger(f"jobs.{name}").exception("%s failed", name)
        print(orjson.dumps({"job": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"}, default=str).decode())
        return 1
    ok = bool(summary.pop("ok", True))
    print(orjson.dumps({"job": name, "ok": ok, **summary}, default=str).decode())
    return 0 if ok else 1


def _log_settings() -> LogSettings:
    """The log settings of the environment (``GH_LOG__FORMAT``, ``GH_LOG__LEVEL``, a YAML file in
    ``GH_CONFIG_FILE``); logging starts before the job reads its ``--config``. Settings that do not
    load get the defaults here: the job's own loading reports what is wrong."""
    try:
        return load_settings().log
    except (ValueError, FileNotFoundError):
        return LogSettings()


def init_ray(auth_token_file: Path | None = None) -> None:
    """Join the cluster the job runs on (``ray job submit`` sets RAY_ADDRESS), else start a local one
    (``RAY_ADDRESS=auto`` joins a head running on this machine).

    A job submitted to a cluster with token auth inherits the token from the cluster's processes.
    A job started elsewhere that joins such a cluster names the token file: ``auth_token_file``
    (settings ``ray.auth_token_file``) switches this process to ``RAY_AUTH_MODE=token`` with
    ``RAY_AUTH_TOKEN_PATH`` set, before Ray reads its configuration."""
    if auth_token_file is not None:
        if not Path(auth_token_file).is_file():
            raise FileNotFoundError(f"ray.auth_token_file {auth_token_file} does not exist")
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(auth_token_file)
    import ray

    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", TRAIN_WORKER_GROUP_START_TIMEOUT_S)
    if not ray.is_initialized():
        # RAY_ADDRESS is set by `ray job submit`; without it, a fresh local cluster (not whatever
        # head happens to run on this machine).
        ray.init(address=os.environ.get("RAY_ADDRESS") or "local", log_to_driver=False)


def job_parser(job: str, description: str) -> argparse.ArgumentParser:
    """An argument parser for ``job`` (its ``--help`` shows ``python -m jobs.<job>``) with ``--config``."""
    parser = argparse.ArgumentParser(prog=f"python -m {job_spec(job).module}", description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML settings file (env GH_* overrides it)")
    return parser


def add_model_name(parser: argparse.ArgumentParser) -> None:
    """``--model-name``: the registered model; without it, the settings' ``control.model_name``."""
    parser.add_argument("--model-name", default=None, help="registered model name (default: settings control.model_name)")
