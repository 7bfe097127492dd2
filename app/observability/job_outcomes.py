"""How the registered jobs ended, from a Ray cluster's Jobs API.

Every terminal submission (``SUCCEEDED``, ``FAILED``, ``STOPPED``) of a registered job is counted
once per :class:`JobOutcomes` (``gh_job_runs_total{job_name, outcome}``), and the newest run of
each outcome gives ``gh_job_last_finished_timestamp_seconds`` and ``gh_job_last_duration_seconds``.
A submission's job is the one whose module its entrypoint runs (``python -m jobs.<name> ...``, what
every runner of the product submits: :mod:`app.orchestration.registry`), or the ``job_name`` of its
metadata (a wrapped entrypoint). The rows a job handled come from its one-line JSON summary, the
last JSON line of its log (:func:`app.orchestration.runner.last_json_line`): read once per newest
success. Jobs that ran on a RayJob's own cluster are not in the shared cluster's Jobs API.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from app.orchestration.registry import job_of_module
from app.orchestration.runner import last_json_line

log = logging.getLogger(__name__)

OUTCOMES: dict[str, str] = {"SUCCEEDED": "succeeded", "FAILED": "failed", "STOPPED": "stopped"}
JOB_NAME_METADATA_KEY = "job_name"

# The summary fields that count a job's rows (their sum); other jobs: a top-level ``rows``, if any.
ROWS_FIELDS: dict[str, tuple[str, ...]] = {
    "sink": ("rows_written",),
    "preprocess": ("rows_train", "rows_validation", "rows_test"),
    "train": ("train_rows", "validation_rows", "test_rows"),
    "tune": ("train_rows", "validation_rows", "test_rows"),
    "batch_predict": ("rows",),
}

LogsReader = Callable[[str], str]
"""A submission id's whole log (``JobSubmissionClient.get_job_logs``)."""


@dataclass(frozen=True)
class JobRun:
    """One terminal submission of a registered job; times in Unix seconds."""

    submission_id: str
    job_name: str
    outcome: str
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return max(0.0, self.end_s - self.start_s)


def job_name_of(entrypoint: str, metadata: Mapping[str, str] | None) -> str | None:
    """The job a submission runs: its metadata's ``job_name``, else the registered job whose
    module follows ``-m`` in ``entrypoint`` (None: neither)."""
    named = (metadata or {}).get(JOB_NAME_METADATA_KEY)
    if named:
        return named
    try:
        words = shlex.split(entrypoint or "")
    except ValueError:
        return None
    for flag, module in zip(words, words[1:]):
        if flag == "-m":
            spec = job_of_module(module)
            if spec is not None:
                return spec.name
    return None


def terminal_run(details: Any) -> JobRun | None:
    """A Jobs API ``JobDetails`` as a :class:`JobRun` (None: not a finished submission, or no job of ours)."""
    outcome = OUTCOMES.get(str(getattr(details.status, "value", details.status)))
    if outcome is None or not details.submission_id or details.end_time is None:
        return None
    name = job_name_of(details.entrypoint, details.metadata)
    if name is None:
        return None
    end_s = details.end_time / 1000.0
    start_s = details.start_time / 1000.0 if details.start_time is not None else end_s
    return JobRun(details.submission_id, name, outcome, start_s, end_s)


def summary_rows(job_name: str, summary: Mapping[str, Any] | None) -> int | None:
    """The rows a job's summary line says it handled (None: no such figure)."""
    fields = ROWS_FIELDS.get(job_name, ("rows",))
    if not summary:
        return None
    values = [summary.get(f) for f in fields]
    numbers = [int(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return sum(numbers) if numbers else None


class JobOutcomes:
    """What is known about the runs of ``job_names`` (default: every registered job), fed the
    Jobs API's list again and again (:meth:`update`); each submission counts once."""

    def __init__(self, job_names: Collection[str]) -> None:
        self.job_names = tuple(job_names)
        self.runs_total: dict[tuple[str, str], int] = {(job, outcome): 0 for job in self.job_names for outcome in OUTCOMES.values()}
        self.newest: dict[tuple[str, str], JobRun] = {}
        self.rows: dict[str, int] = {}
        self._seen: set[str] = set()
        self._rows_of: dict[str, str] = {}  # job -> the submission its rows were read from

    def update(self, jobs: Iterable[Any], logs: LogsReader | None = None) -> None:
        """Count the terminal submissions in ``jobs`` (``JobDetails``) not counted yet; with
        ``logs``, read the rows of each job's newest success when it changed."""
        for details in jobs:
            run = terminal_run(details)
            if run is None or run.job_name not in self.job_names or run.submission_id in self._seen:
                continue
            self._seen.add(run.submission_id)
            key = (run.job_name, run.outcome)
            self.runs_total[key] += 1
            if key not in self.newest or run.end_s >= self.newest[key].end_s:
                self.newest[key] = run
        if logs is not None:
            self._read_rows(logs)

    def _read_rows(self, logs: LogsReader) -> None:
        for job in self.job_names:
            newest = self.newest.get((job, "succeeded"))
            if newest is None or self._rows_of.get(job) == newest.submission_id:
                continue
            try:
                text = logs(newest.submission_id)
            except Exception as exc:  # a log the cluster cannot give now: the outcomes still count
                log.warning("monitor: the log of %s cannot be read (%s: %s); its rows are read next time", newest.submission_id, type(exc).__name__, exc)
                continue
            rows = summary_rows(job, last_json_line(text))
            self._rows_of[job] = newest.submission_id
            if rows is None:
                self.rows.pop(job, None)
            else:
                self.rows[job] = rows
