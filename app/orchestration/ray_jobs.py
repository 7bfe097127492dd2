"""Run jobs through a Ray cluster's Jobs API: :class:`RayJobsRunner`, and :func:`submit_and_wait`
for any entrypoint command.

The same code serves ``greenhouse submit``, tests against a ``ray start --head`` cluster, and the
Airflow DAG (mode ``jobs-api``). ``submission_id`` should be deterministic (e.g. DAG run + task, see
:func:`deterministic_id`): submitting an id that already exists does not run the job twice, it
waits for the existing one.

Only the standard library is imported at module level (``ray.job_submission`` lazily), so the
Airflow environment can import this module with nothing but ``ray`` installed.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.orchestration.registry import job_spec
from app.orchestration.run_ids import submission_id_env
from app.orchestration.runner import TERMINAL, JobRequest, JobResult, JobRunner, LogsCallback, StatusCallback, Submission, last_json_line, on_change

__all__ = ["JobResult", "RayJobsRunner", "deterministic_id", "job_runtime_env", "last_json_line", "ray_auth_headers", "submit_and_wait"]

DEFAULT_EXCLUDES = [".venv", ".git", ".greenhouse", "**/__pycache__", ".pytest_cache", ".hypothesis", "bench/results"]
# Ray's own variables for the cluster token (RAY_AUTH_MODE=token): the token itself, or the file
# holding it. Clients send it as a bearer token.
RAY_AUTH_TOKEN_ENV = "RAY_AUTH_TOKEN"
RAY_AUTH_TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
# KubeRay caps RayJob names at 47 characters (53 for the cluster minus the suffix it appends).
MAX_ID_LENGTH = 47


def job_runtime_env(working_dir: str | Path | None = None, env_vars: Mapping[str, str] | None = None, excludes: list[str] | None = None) -> dict[str, Any]:
    """A runtime_env that ships the project (without venvs and local data) and settings env vars."""
    env: dict[str, Any] = {}
    if working_dir is not None:
        env["working_dir"] = str(working_dir)
        env["excludes"] = list(excludes if excludes is not None else DEFAULT_EXCLUDES)
    if env_vars:
        env["env_vars"] = {k: str(v) for k, v in env_vars.items()}
    return env


def ray_auth_headers(token: str | None = None, *, token_file: str | Path | None = None) -> dict[str, str]:
    """HTTP headers for a Ray cluster with token auth (``RAY_AUTH_MODE=token``).

    The token is, in this order: ``token``; the content of ``token_file`` (settings
    ``ray.auth_token_file``); ``$RAY_AUTH_TOKEN``; the content of the file ``$RAY_AUTH_TOKEN_PATH``
    (Ray's own variables, as its CLI reads them). Without any, the result is empty: a cluster
    without auth. A token file that cannot be read is an error (``ValueError``), never a silent
    unauthenticated request. The token is never logged.
    """
    if token is None and token_file is not None:
        token = _read_token(Path(token_file))
    if token is None:
        token = os.environ.get(RAY_AUTH_TOKEN_ENV)
    if token is None and os.environ.get(RAY_AUTH_TOKEN_PATH_ENV):
        token = _read_token(Path(os.environ[RAY_AUTH_TOKEN_PATH_ENV]))
    token = (token or "").strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def _read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read the Ray auth token file {path}: {exc.strerror}") from None
    if not token:
        raise ValueError(f"the Ray auth token file {path} is empty")
    return token


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


def make_client(address: str, headers: Mapping[str, str] | None = None) -> Any:
    """A ``ray.job_submission.JobSubmissionClient`` for ``address`` sending ``headers`` (None:
    :func:`ray_auth_headers` from Ray's environment variables; ``{}``: none).

    The token goes as an explicit header rather than through Ray's own loader, which decides once
    per process (from ``RAY_AUTH_MODE`` when Ray's config first loads) whether to send any."""
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address, headers=dict(ray_auth_headers() if headers is None else headers))


class RayJobsRunner(JobRunner):
    """:class:`JobRunner` on a running Ray cluster's Jobs API.

    - ``working_dir`` is shipped with every job (without venvs and local data, see
      :func:`job_runtime_env`); None when the cluster's image has the code.
    - ``rerun_failed``: when the latest attempt of an id FAILED or was STOPPED, submit the next
      attempt as ``<id>-r1``, ``<id>-r2``, ... (still deterministic: an Airflow retry re-runs a
      failed job once, and a retry of that retry re-attaches to it).
    - ``wait`` stops the job on timeout and, with ``stop_on_interrupt``, when the wait is
      interrupted by any exception (KeyboardInterrupt, Airflow's task timeout, ...).
    - ``headers`` go to every request (None: :func:`ray_auth_headers` from Ray's environment
      variables); ``client`` injects a ``JobSubmissionClient``-like object instead of building one.
    """

    def __init__(
        self,
        address: str,
        *,
        working_dir: str | Path | None = None,
        headers: Mapping[str, str] | None = None,
        rerun_failed: bool = False,
        stop_on_interrupt: bool = True,
        poll_s: float = 1.0,
        log_every_s: float = 10.0,
        client: Any | None = None,
    ) -> None:
        self.address = address
        self.working_dir = working_dir
        self.rerun_failed = rerun_failed
        self.stop_on_interrupt = stop_on_interrupt
        self.poll_s = poll_s
        self.log_every_s = log_every_s
        self.client = client if client is not None else make_client(address, headers)

    def submit(self, request: JobRequest) -> Submission:
        """Submit the registered job ``python -m jobs.<job> <args>`` (or attach to its id)."""
        entrypoint = job_spec(request.job).entrypoint(request.args)
        runtime_env = job_runtime_env(self.working_dir, request.env_vars)
        return self.submit_entrypoint(entrypoint, request.submission_id, runtime_env=runtime_env, metadata=request.metadata)

    def submit_entrypoint(self, entrypoint: str, submission_id: str, *, runtime_env: dict[str, Any] | None = None, metadata: Mapping[str, str] | None = None) -> Submission:
        """Submit any shell ``entrypoint`` under ``submission_id`` unless it exists (see the class).

        The job's environment gets ``GH_LINEAGE_RAY_SUBMISSION_ID`` (the id it runs under, see
        :mod:`app.orchestration.run_ids`) besides ``runtime_env``'s ``env_vars``."""
        existing = {j.submission_id for j in self.client.list_jobs() if j.submission_id}
        attempts = _attempt_ids(submission_id, existing)
        sid = attempts[-1] if attempts else submission_id
        if attempts and self.rerun_failed and self.status(sid) in ("FAILED", "STOPPED"):
            sid = f"{submission_id}-r{len(attempts)}"
            attempts = []
        if attempts:
            return Submission(sid, False, entrypoint)
        # the job records the id it runs under (lineage), whatever the runtime_env says
        env = dict(runtime_env or {})
        env["env_vars"] = {**(env.get("env_vars") or {}), **submission_id_env(sid)}
        kwargs: dict[str, Any] = {"entrypoint": entrypoint, "submission_id": sid, "runtime_env": env}
        if metadata:
            kwargs["metadata"] = dict(metadata)
        self.client.submit_job(**kwargs)
        return Submission(sid, True, entrypoint)

    def status(self, submission_id: str) -> str:
        """The Jobs API status (``PENDING``, ``RUNNING``, ``SUCCEEDED``, ``FAILED``, ``STOPPED``)."""
        return str(self.client.get_job_status(submission_id).value)

    def wait(self, submission: Submission, *, timeout_s: float, on_status: StatusCallback | None = None, on_logs: LogsCallback | None = None) -> JobResult:
        """Poll until terminal; new log text goes to ``on_logs`` about every ``log_every_s``."""
        sid = submission.submission_id
        logs = wait_for_job(
            self.client, sid, timeout_s=timeout_s, poll_s=self.poll_s, on_status=on_change(on_status), on_logs=on_logs, log_every_s=self.log_every_s, stop_on_interrupt=self.stop_on_interrupt
        )
        return JobResult(sid, self.status(sid), logs, last_json_line(logs), submission.submitted)

    def logs(self, submission_id: str) -> str:
        """The job's whole log so far."""
        return str(self.client.get_job_logs(submission_id))

    def stop(self, submission_id: str) -> bool:
        """Ask the cluster to stop the job; never raises (it may be gone, the cluster unreachable)."""
        return _stop_quietly(self.client, submission_id)


def submit_and_wait(
    address: str,
    entrypoint: str,
    *,
    submission_id: str,
    runtime_env: dict[str, Any] | None = None,
    timeout_s: float = 1800.0,
    poll_s: float = 1.0,
    headers: Mapping[str, str] | None = None,
    on_status: StatusCallback | None = None,
    on_logs: LogsCallback | None = None,
    log_every_s: float = 10.0,
    rerun_failed: bool = False,
    stop_on_interrupt: bool = True,
    metadata: Mapping[str, str] | None = None,
    client: Any | None = None,
) -> JobResult:
    """Submit (or re-attach to) any shell ``entrypoint`` as ``submission_id`` and wait until it is
    terminal or ``timeout_s``; the options are :class:`RayJobsRunner`'s. A finished job with this
    id is returned as it ended (``JobResult.submitted`` is False)."""
    runner = RayJobsRunner(address, headers=headers, rerun_failed=rerun_failed, stop_on_interrupt=stop_on_interrupt, poll_s=poll_s, log_every_s=log_every_s, client=client)
    submission = runner.submit_entrypoint(entrypoint, submission_id, runtime_env=runtime_env, metadata=metadata)
    return runner.wait(submission, timeout_s=timeout_s, on_status=on_status, on_logs=on_logs)


def wait_for_job(
    client: Any,
    submission_id: str,
    *,
    timeout_s: float = 1800.0,
    poll_s: float = 1.0,
    on_status: StatusCallback | None = None,
    on_logs: LogsCallback | None = None,
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
            _stop_quietly(client, submission_id)
        raise
    return client.get_job_logs(submission_id)


def _attempt_ids(base: str, existing: set[str]) -> list[str]:
    """``base``, ``base-r1``, ``base-r2``, ... as far as they exist (in order)."""
    ids = [base] if base in existing else []
    n = 1
    while f"{base}-r{n}" in existing:
        ids.append(f"{base}-r{n}")
        n += 1
    return ids


def _stop_quietly(client: Any, submission_id: str) -> bool:
    try:
        return bool(client.stop_job(submission_id))
    except Exception:  # the job may be gone or the cluster unreachable: nothing left to stop
        return False
