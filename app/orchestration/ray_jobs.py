"""Submit ``python -m jobs.<name>`` to a Ray cluster through the Jobs API and wait for the result.

The same call serves the CLI, tests against a ``ray start --head`` cluster, and the Airflow DAG.
``submission_id`` should be deterministic (e.g. DAG run + task, see :func:`deterministic_id`):
submitting an id that already exists does not run the job twice, it waits for the existing one.

Only the standard library is imported at module level (``ray.job_submission`` lazily), so the
Airflow environment can import this module with nothing but ``ray`` installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
DEFAULT_EXCLUDES = [".venv", ".git", ".greenhouse", "**/__pycache__", ".pytest_cache", ".hypothesis", "bench/results"]
# Ray's own variable for the cluster token (RAY_AUTH_MODE=token); clients send it as a bearer token.
RAY_AUTH_TOKEN_ENV = "RAY_AUTH_TOKEN"
# KubeRay caps RayJob names at 47 characters (53 for the cluster minus the suffix it appends).
MAX_ID_LENGTH = 47


@dataclass
class JobResult:
    """How a submitted job ended; ``summary`` is its last JSON line (the jobs' one-line summary).

    ``submitted`` is False when this call re-attached to a job that already existed (a retry or a
    second run of the same DAG run), True when it submitted a new one.
    """

    submission_id: str
    status: str
    logs: str
    summary: dict[str, Any] | None
    submitted: bool = True

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


def ray_auth_headers(token: str | None = None) -> dict[str, str]:
    """HTTP headers for a Ray cluster with token auth (``RAY_AUTH_MODE=token``).

    ``token`` defaults to ``$RAY_AUTH_TOKEN``; without a token the result is empty (a cluster
    without auth, or Ray's own token loader, which reads ``~/.ray/auth_token``, does the rest).
    """
    token = os.environ.get(RAY_AUTH_TOKEN_ENV, "") if token is None else token
    token = token.strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def deterministic_id(*parts: str, max_length: int = MAX_ID_LENGTH) -> str:
    """A stable id made of ``parts`` (e.g. DAG id, run id, task id) that is valid everywhere a job
    id goes: a Ray submission id and a KubeRay RayJob name (DNS-1035 label, at most 47 characters).

    The readable part is lower-cased with runs of other characters turned into ``-``; an 8-digit
    hash of the raw parts is always appended, so distinct inputs never collide after cleaning.
    """
    if not parts or max_length < 12:
        raise ValueError("deterministic_id needs at least one part and max_length >= 12")
    raw = "\x1f".join(parts)
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    readable = re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")
    if not readable or not readable[0].isalpha():
        readable = f"j-{readable}".rstrip("-")
    readable = readable[: max_length - len(digest) - 1].rstrip("-")
    return f"{readable}-{digest}"


def _make_client(address: str, headers: Mapping[str, str] | None) -> Any:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address, headers=dict(headers or {}))


def _attempt_ids(base: str, existing: set[str]) -> list[str]:
    """``base``, ``base-r1``, ``base-r2``, ... as far as they exist (in order)."""
    ids = [base] if base in existing else []
    n = 1
    while f"{base}-r{n}" in existing:
        ids.append(f"{base}-r{n}")
        n += 1
    return ids


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
    on_logs: Callable[[str], None] | None = None,
    log_every_s: float = 10.0,
    rerun_failed: bool = False,
    stop_on_interrupt: bool = True,
    metadata: Mapping[str, str] | None = None,
    client: Any | None = None,
) -> JobResult:
    """Submit (or re-attach to) ``submission_id`` and wait until it is terminal or ``timeout_s``.

    - An existing job with this id is never submitted again: a running one is waited for, a
      finished one is returned as it ended (``JobResult.submitted`` is False).
    - ``rerun_failed``: when the latest attempt FAILED or was STOPPED, submit the next attempt as
      ``<id>-r1``, ``<id>-r2``, ... (still deterministic: an Airflow retry re-runs a failed job once,
      and a retry of that retry re-attaches to it).
    - ``on_logs`` receives new log text about every ``log_every_s`` while waiting.
    - On timeout the job is stopped and a ``TimeoutError`` raised. Any other interruption of the
      wait (KeyboardInterrupt, Airflow's task timeout or termination, ...) also stops the job when
      ``stop_on_interrupt``, then propagates.
    - ``headers`` go to every request (e.g. :func:`ray_auth_headers`); ``client`` injects a
      ``JobSubmissionClient``-like object instead of building one.
    """
    client = client if client is not None else _make_client(address, headers)
    existing = {j.submission_id for j in client.list_jobs() if j.submission_id}
    attempts = _attempt_ids(submission_id, existing)
    sid = attempts[-1] if attempts else submission_id
    submitted = False
    if attempts and rerun_failed and str(client.get_job_status(sid).value) in ("FAILED", "STOPPED"):
        sid = f"{submission_id}-r{len(attempts)}"
        attempts = []
    if not attempts:
        kwargs: dict[str, Any] = {"entrypoint": entrypoint, "submission_id": sid, "runtime_env": runtime_env or {}}
        if metadata:
            kwargs["metadata"] = dict(metadata)
        client.submit_job(**kwargs)
        submitted = True
    logs = wait_for_job(
        client, sid, timeout_s=timeout_s, poll_s=poll_s, on_status=on_status, on_logs=on_logs,
        log_every_s=log_every_s, stop_on_interrupt=stop_on_interrupt,
    )
    status = str(client.get_job_status(sid).value)
    return JobResult(sid, status, logs, last_json_line(logs), submitted)


def wait_for_job(
    client: Any,
    submission_id: str,
    *,
    timeout_s: float = 1800.0,
    poll_s: float = 1.0,
    on_status: Callable[[str], None] | None = None,
    on_logs: Callable[[str], None] | None = None,
    log_every_s: float = 10.0,
    stop_on_interrupt: bool = True,
) -> str:
    """Poll ``submission_id`` until it is terminal and return its whole log.

    Stops the job on timeout (then raises ``TimeoutError``) and, with ``stop_on_interrupt``, when
    the wait is interrupted by any exception (then re-raises it).
    """
    deadline = time.monotonic() + timeout_s
    next_logs = time.monotonic() + log_every_s
    shown = 0
    try:
        while True:
            status = str(client.get_job_status(submission_id).value)
            if on_status:
                on_status(status)
            if on_logs and (status in TERMINAL or time.monotonic() >= next_logs):
                text = client.get_job_logs(submission_id)
                if len(text) > shown:
                    on_logs(text[shown:])
                    shown = len(text)
                next_logs = time.monotonic() + log_every_s
            if status in TERMINAL:
                break
            if time.monotonic() > deadline:
                client.stop_job(submission_id)
                raise TimeoutError(f"job {submission_id} still {status} after {timeout_s:.0f} s; stopped it")
            time.sleep(poll_s)
    except TimeoutError:
        raise
    except BaseException:
        if stop_on_interrupt:
            stop_job_quietly(client, submission_id)
        raise
    return client.get_job_logs(submission_id)


def stop_job_quietly(client: Any, submission_id: str) -> bool:
    """Ask the cluster to stop ``submission_id``; True when a stop was requested, never raises."""
    try:
        return bool(client.stop_job(submission_id))
    except Exception:  # the job may be gone or the cluster unreachable: nothing left to stop
        return False


def stop_job(address: str, submission_id: str, *, headers: Mapping[str, str] | None = None) -> bool:
    """Stop a submitted job (e.g. from an Airflow ``on_kill``); True when a stop was requested."""
    return stop_job_quietly(_make_client(address, headers), submission_id)
