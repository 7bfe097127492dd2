"""Submit ``python -m jobs.<name>`` to a Ray cluster through the Jobs API and wait for the result.

The same call serves the CLI, tests against a ``ray start --head`` cluster, and the Airflow DAG.
``submission_id`` should be deterministic (e.g. DAG run + task): submitting an id that already
exists does not run the job twice, it waits for the existing one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
DEFAULT_EXCLUDES = [".venv", ".git", ".greenhouse", "**/__pycache__", ".pytest_cache", ".hypothesis", "bench/results"]


@dataclass
class JobResult:
    """How a submitted job ended; ``summary`` is its last JSON line (the jobs' one-line summary)."""

    submission_id: str
    status: str
    logs: str
    summary: dict[str, Any] | None

    @property
    def ok(self) -> bool:
        return self.status == "SUCCEEDED"


def last_json_line(logs: str) -> dict[str, Any] | None:
    """The last line of ``logs`` that parses as a JSON object."""
    for line in reversed(logs.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def job_runtime_env(
    working_dir: str | Path | None = None, env_vars: Mapping[str, str] | None = None, excludes: list[str] | None = None
) -> dict[str, Any]:
    """A runtime_env that ships the project (without venvs and local data) and settings env vars."""
    env: dict[str, Any] = {}
    if working_dir is not None:
        env["working_dir"] = str(working_dir)
        env["excludes"] = list(excludes if excludes is not None else DEFAULT_EXCLUDES)
    if env_vars:
        env["env_vars"] = {k: str(v) for k, v in env_vars.items()}
    return env


def submit_and_wait(
    address: str,
    entrypoint: str,
    *,
    submission_id: str,
    runtime_env: dict[str, Any] | None = None,
    timeout_s: float = 1800.0,
    poll_s: float = 1.0,
    headers: Mapping[str, str] | None = None,
    on_status: Callable[[str], None] | None = None,
) -> JobResult:
    """Submit (or re-attach to) ``submission_id`` and wait until it is terminal or ``timeout_s``.

    On timeout the job is stopped and a ``TimeoutError`` raised.
    """
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address, headers=dict(headers or {}))
    existing = {j.submission_id for j in client.list_jobs() if j.submission_id}
    if submission_id not in existing:
        client.submit_job(entrypoint=entrypoint, submission_id=submission_id, runtime_env=runtime_env or {})
    deadline = time.monotonic() + timeout_s
    status = ""
    while True:
        status = str(client.get_job_status(submission_id).value)
        if on_status:
            on_status(status)
        if status in TERMINAL:
            break
        if time.monotonic() > deadline:
            client.stop_job(submission_id)
            raise TimeoutError(f"job {submission_id} still {status} after {timeout_s:.0f} s; stopped it")
        time.sleep(poll_s)
    logs = client.get_job_logs(submission_id)
    return JobResult(submission_id, status, logs, last_json_line(logs))
