"""Job outcomes in the monitor: against the stack's real Ray head (marked ``stack``), a tiny
succeeding and a failing job are exported with their outcome, end time, duration and rows, each
counted once; and how a submission is mapped to its registered job."""

from __future__ import annotations

import shlex
import uuid

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from app.config import Settings
from app.observability.job_outcomes import JobOutcomes, job_name_of
from app.observability.monitor import Monitor, jobs_api_url
from app.orchestration.ray_jobs import make_client, ray_auth_headers, submit_and_wait
from tests.helpers.engines import engine_url, ray_token_file
from tests.observability.test_monitor import parse


def test_a_submission_maps_to_the_registered_job_its_entrypoint_runs():
    assert job_name_of("python -m jobs.sink --follow", None) == "sink"
    assert job_name_of("cd /srv/app && python -m jobs.batch_predict --window test", {}) == "batch_predict"
    assert job_name_of("python -m jobs.nothing", None) is None and job_name_of('python -c "print(1)"', None) is None
    assert job_name_of("python wrapper.py", {"job_name": "train"}) == "train"  # metadata names a wrapped job


def test_the_jobs_api_address_comes_from_the_monitor_or_the_ray_settings(tmp_path):
    assert jobs_api_url(Settings(data_dir=tmp_path)) == "http://127.0.0.1:8265"
    assert jobs_api_url(Settings(data_dir=tmp_path, ray_address="http://head:8265")) == "http://head:8265"
    assert jobs_api_url(Settings(data_dir=tmp_path, ray_address="ray://head:10001")) == "http://127.0.0.1:8265"  # not the Jobs API
    assert jobs_api_url(Settings(data_dir=tmp_path, ray_address="http://head:8265", monitor={"ray_jobs_url": "https://jobs:443"})) == "https://jobs:443"


@pytest.mark.stack
@pytest.mark.timeout(400)
def test_succeeded_and_failed_runs_are_exported_once_each(tmp_path):
    head = engine_url("ray")
    headers = ray_auth_headers(token_file=ray_token_file())
    name = f"monitor-test-{uuid.uuid4().hex[:8]}"  # a job name of its own: the stack's real jobs are untouched
    say = "import json; print('working'); print(json.dumps({'job': 'probe', 'ok': True, 'rows': 7}))"
    ok = submit_and_wait(head, shlex.join(["python", "-c", say]), submission_id=f"{name}-ok", metadata={"job_name": name}, headers=headers, poll_s=0.5, timeout_s=240)
    bad = submit_and_wait(head, shlex.join(["python", "-c", "import sys; sys.exit(3)"]), submission_id=f"{name}-bad", metadata={"job_name": name}, headers=headers, poll_s=0.5, timeout_s=240)
    assert (ok.status, bad.status) == ("SUCCEEDED", "FAILED")

    settings = Settings(data_dir=tmp_path / "gh", monitor={"ray_jobs_url": head}, ray={"auth_token_file": ray_token_file()})
    monitor = Monitor(settings, job_names=[name])
    registry = CollectorRegistry()
    registry.register(monitor)
    monitor.refresh()
    monitor.refresh()  # a second look counts nothing twice
    metrics = parse(generate_latest(registry).decode())

    assert metrics["gh_monitor_source_up"][(("source", "ray"),)] == 1.0
    runs = metrics["gh_job_runs_total"]
    assert runs[(("job_name", name), ("outcome", "succeeded"))] == 1.0
    assert runs[(("job_name", name), ("outcome", "failed"))] == 1.0
    assert runs[(("job_name", name), ("outcome", "stopped"))] == 0.0
    client = make_client(head, headers)
    for sid, outcome in ((ok.submission_id, "succeeded"), (bad.submission_id, "failed")):
        info = client.get_job_info(sid)
        labels = (("job_name", name), ("outcome", outcome))
        assert metrics["gh_job_last_finished_timestamp_seconds"][labels] == pytest.approx(info.end_time / 1000.0)
        assert metrics["gh_job_last_duration_seconds"][labels] == pytest.approx((info.end_time - info.start_time) / 1000.0)
    assert metrics["gh_job_last_rows"][(("job_name", name),)] == 7.0  # from its summary line
    assert (("job_name", name), ("outcome", "stopped")) not in metrics["gh_job_last_finished_timestamp_seconds"]


def _details(sid: str, status: str, end_ms: int | None, entrypoint: str = "python -m jobs.sink"):
    from ray.job_submission import JobDetails, JobStatus, JobType

    return JobDetails(type=JobType.SUBMISSION, submission_id=sid, status=JobStatus(status), entrypoint=entrypoint, start_time=(end_ms or 0) - 2500 if end_ms else 1000, end_time=end_ms)


def test_outcomes_count_each_finished_submission_once_and_keep_the_newest():
    outcomes = JobOutcomes(["sink", "train"])
    logs = {"s2": 'x\n{"job": "sink", "ok": true, "rows_written": 40}\n'}
    listed = [
        _details("s1", "SUCCEEDED", 10_000),
        _details("s2", "SUCCEEDED", 20_000),
        _details("f1", "FAILED", 15_000),
        _details("r1", "RUNNING", None),
        _details("o1", "FAILED", 30_000, "python -m other"),
    ]
    outcomes.update(listed, logs=logs.__getitem__)
    outcomes.update(listed, logs=logs.__getitem__)  # listed again: counted once
    assert outcomes.runs_total[("sink", "succeeded")] == 2 and outcomes.runs_total[("sink", "failed")] == 1 and outcomes.runs_total[("train", "failed")] == 0
    newest = outcomes.newest[("sink", "succeeded")]
    assert (newest.submission_id, newest.end_s, newest.duration_s) == ("s2", 20.0, 2.5)
    assert outcomes.rows == {"sink": 40}

    def unreadable(submission_id: str) -> str:
        raise ConnectionError("log gone")

    outcomes.update([_details("s3", "SUCCEEDED", 40_000)], logs=unreadable)  # counted; rows read later
    assert outcomes.runs_total[("sink", "succeeded")] == 3 and outcomes.rows == {"sink": 40}
    outcomes.update([], logs=lambda sid: '{"rows_written": 5}')
    assert outcomes.rows == {"sink": 5}
