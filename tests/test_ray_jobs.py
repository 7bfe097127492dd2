"""submit_and_wait's contract with an injected in-memory Jobs API client: deterministic ids,
re-attach instead of resubmit, rerun of failed attempts, log streaming, stop on interrupt."""

from __future__ import annotations

import re

import pytest

from app.orchestration.ray_jobs import deterministic_id, ray_auth_headers, submit_and_wait
from tests.helpers.fake_ray_jobs import FakeJobs


def test_deterministic_id_is_stable_valid_and_distinct():
    a = deterministic_id("train", "manual__2026-06-01T00:00:00+00:00", "greenhouse_pipeline")
    assert a == deterministic_id("train", "manual__2026-06-01T00:00:00+00:00", "greenhouse_pipeline")
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", a) and len(a) <= 47 and a.startswith("train-manual-2026-06-01")
    assert a != deterministic_id("train", "manual__2026-06-01T00:00:00+00:00", "other_dag")  # hashed, even when cut
    assert a != deterministic_id("train", "manual__2026-06-01T00:00:00.000001+00:00", "greenhouse_pipeline")
    assert deterministic_id("9lives").startswith("j-9lives-")


def test_submits_once_then_reattaches():
    jobs = FakeJobs()
    first = submit_and_wait("http://ray", "python -m jobs.x", submission_id="x-1", poll_s=0, client=jobs)
    again = submit_and_wait("http://ray", "python -m jobs.x", submission_id="x-1", poll_s=0, client=jobs)
    assert first.ok and first.submitted and first.summary == {"job": "x", "ok": True, "n": 3}
    assert again.ok and not again.submitted and len(jobs.submitted) == 1


def test_rerun_failed_submits_the_next_attempt_only_when_asked():
    jobs = FakeJobs(script=("RUNNING", "FAILED"))
    failed = submit_and_wait("http://ray", "e", submission_id="x-2", poll_s=0, client=jobs)
    assert failed.status == "FAILED"
    assert submit_and_wait("http://ray", "e", submission_id="x-2", poll_s=0, client=jobs).submission_id == "x-2"
    jobs.script = ["SUCCEEDED"]
    retry = submit_and_wait("http://ray", "e", submission_id="x-2", poll_s=0, rerun_failed=True, client=jobs)
    assert retry.submission_id == "x-2-r1" and retry.ok and retry.submitted
    # a later retry attaches to the attempt that succeeded
    assert submit_and_wait("http://ray", "e", submission_id="x-2", poll_s=0, rerun_failed=True, client=jobs).submitted is False
    assert [s["submission_id"] for s in jobs.submitted] == ["x-2", "x-2-r1"]


def test_logs_stream_and_interruption_stops_the_job():
    jobs = FakeJobs(script=("RUNNING", "RUNNING", "RUNNING", "SUCCEEDED"))
    chunks: list[str] = []
    submit_and_wait("http://ray", "e", submission_id="x-3", poll_s=0, log_every_s=0, on_logs=chunks.append, client=jobs)
    assert "".join(chunks) == jobs.logs_text  # every byte once

    jobs = FakeJobs(script=("RUNNING", "RUNNING", "RUNNING", "SUCCEEDED"))

    def interrupt(status: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        submit_and_wait("http://ray", "e", submission_id="x-4", poll_s=0, on_status=interrupt, client=jobs)
    assert jobs.stopped == ["x-4"]


def test_timeout_stops_the_job():
    jobs = FakeJobs(script=("RUNNING",))
    with pytest.raises(TimeoutError):
        submit_and_wait("http://ray", "e", submission_id="x-5", poll_s=0, timeout_s=0, client=jobs)
    assert jobs.stopped == ["x-5"]


def test_auth_header_from_token_or_environment(monkeypatch):
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)  # a job main run in-process earlier may have set it
    assert ray_auth_headers("abc") == {"Authorization": "Bearer abc"}
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert ray_auth_headers() == {"Authorization": "Bearer from-env"}
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    assert ray_auth_headers() == {}
