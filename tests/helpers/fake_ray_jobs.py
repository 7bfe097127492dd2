"""An in-memory double of Ray's ``JobSubmissionClient`` (the calls the runner makes)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Status(Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"


@dataclass
class Info:
    submission_id: str


class FakeJobs:
    """Jobs API double: each submitted job goes through ``script`` (one status per poll)."""

    def __init__(self, script=("RUNNING", "SUCCEEDED"), logs='starting\n{"job": "x", "ok": true, "n": 3}\n'):
        self.script, self.logs_text = list(script), logs
        self.jobs: dict[str, list[str]] = {}
        self.submitted: list[dict] = []
        self.stopped: list[str] = []

    def list_jobs(self):
        return [Info(s) for s in self.jobs]

    def submit_job(self, **kwargs):
        self.submitted.append(kwargs)
        self.jobs[kwargs["submission_id"]] = list(self.script)
        return kwargs["submission_id"]

    def get_job_status(self, sid):
        steps = self.jobs[sid]
        if len(steps) > 1 and sid not in self.stopped:
            return Status(steps.pop(0))
        return Status("STOPPED" if sid in self.stopped else steps[0])

    def get_job_logs(self, sid):
        return self.logs_text

    def stop_job(self, sid):
        self.stopped.append(sid)
        return True
