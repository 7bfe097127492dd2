"""One way to run a registered job on a cluster: the :class:`JobRunner` interface.

Two implementations, chosen by where the job should run:

- :class:`app.orchestration.ray_jobs.RayJobsRunner`: a running Ray cluster's Jobs API (a local
  ``ray start --head``, the shared KubeRay RayCluster);
- :class:`app.kuberay.runner.KubeRayRunner`: a KubeRay ``RayJob`` made from the job's
  template, which brings up its own Ray cluster.

Submission ids are the caller's and deterministic (see
:func:`app.orchestration.ray_jobs.deterministic_id`): submitting an id that exists attaches to that
job instead of running it twice. Only the standard library is imported here.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.orchestration.run_ids import submission_id_env

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
StatusCallback = Callable[[str], None]
LogsCallback = Callable[[str], None]


@dataclass(frozen=True)
class JobRequest:
    """What to run: a registered ``job`` with ``args``, under ``submission_id``.

    ``env_vars`` go into the job's environment (``GH_*`` settings, and the DAG's lineage ids:
    :func:`app.orchestration.run_ids.lineage_env`); ``metadata`` is attached to the job where the
    backend keeps metadata (the Ray Jobs API) or labels.
    """

    job: str
    submission_id: str
    args: Sequence[str] = ()
    env_vars: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)

    def job_env(self, submission_id: str | None = None) -> dict[str, str]:
        """The job's environment: ``env_vars`` and ``GH_LINEAGE_RAY_SUBMISSION_ID``, the id the job
        really runs under (``submission_id``; a re-run's ``<id>-r1`` differs from the request's)."""
        return {**{str(k): str(v) for k, v in self.env_vars.items()}, **submission_id_env(submission_id or self.submission_id)}


@dataclass(frozen=True)
class Submission:
    """A submitted (or found) job: the id it runs under and whether this call created it.

    ``submission_id`` may differ from the request's: a re-run of a failed job is ``<id>-r1``, ...
    """

    submission_id: str
    submitted: bool
    entrypoint: str = ""


@dataclass
class JobResult:
    """How a job ended; ``summary`` is its last JSON line (the jobs' one-line summary).

    ``status`` is one of :data:`TERMINAL`; ``submitted`` is False when the caller re-attached to a
    job that already existed. ``detail`` holds what the backend adds (e.g. a RayJob's deployment
    status).
    """

    submission_id: str
    status: str
    logs: str
    summary: dict[str, Any] | None
    submitted: bool = True
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the job succeeded."""
        return self.status == "SUCCEEDED"

    def tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the job's log."""
        return "\n".join(self.logs.splitlines()[-lines:])

    def as_dict(self) -> dict[str, Any]:
        """``{"submission_id", "status", "submitted", "summary"}``: what a DAG task returns."""
        return {"submission_id": self.submission_id, "status": self.status, "submitted": self.submitted, "summary": self.summary}


class JobRunner(ABC):
    """Submit registered jobs to a cluster, follow them, stop them."""

    @abstractmethod
    def submit(self, request: JobRequest) -> Submission:
        """Start ``request`` unless a job with its id exists (then attach to it); never runs it twice."""

    @abstractmethod
    def status(self, submission_id: str) -> str:
        """The job's status now: ``PENDING``, ``RUNNING`` or one of :data:`TERMINAL`."""

    @abstractmethod
    def wait(self, submission: Submission, *, timeout_s: float, on_status: StatusCallback | None = None, on_logs: LogsCallback | None = None) -> JobResult:
        """Wait until the job is terminal; ``TimeoutError`` after ``timeout_s``.

        ``on_status`` sees each change of state (a short description), ``on_logs`` new log text.
        """

    @abstractmethod
    def logs(self, submission_id: str) -> str:
        """The job's log so far (empty when the backend cannot give it)."""

    @abstractmethod
    def stop(self, submission_id: str) -> bool:
        """Stop the job (a RayJob is deleted with its cluster); True when a stop was requested."""


def on_change(callback: StatusCallback | None) -> StatusCallback | None:
    """``callback`` called only when the value differs from the previous call's."""
    if callback is None:
        return None
    last: list[str] = []

    def changed(value: str) -> None:
        if not last or last[-1] != value:
            last[:] = [value]
            callback(value)

    return changed


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
