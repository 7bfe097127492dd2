"""The two JobRunner implementations behave alike: submit a registered job once (a second submit
of the id attaches), wait for its end, say how it ended, stop it. Ray Jobs API through an in-memory
client; KubeRay through the fake Kubernetes API over HTTP. Plus both CLIs on top of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from app.cli.main import app
from app.kuberay.client import KubeRayClient, KubeTarget, RayJobStatus
from app.kuberay.runner import KubeRayRunner, job_state
from app.orchestration import ray_jobs
from app.orchestration.ray_jobs import RayJobsRunner
from app.orchestration.runner import JobRequest, JobRunner
from tests.helpers.fake_kube import FakeKubeAPI
from tests.helpers.fake_ray_jobs import FakeJobs

REPO = Path(__file__).resolve().parents[2]
NS = "greenhouse-test"
DONE = {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED", "jobId": "j-1"}


@pytest.fixture
def fake():
    api = FakeKubeAPI().start()
    yield api
    api.stop()


def templates() -> list[dict]:
    return [yaml.safe_load(p.read_text()) for p in sorted((REPO / "kuberay" / "base").glob("rayjob-*.yaml"))]


def test_ray_jobs_runner_submits_the_registered_entrypoint_once():
    jobs = FakeJobs()
    runner = RayJobsRunner("http://ray", working_dir="/src", poll_s=0, client=jobs)
    assert isinstance(runner, JobRunner)
    request = JobRequest("train", "train-1", ("--num-workers", "2"), env_vars={"GH_BUS_URL": "kafka://k:9092"}, metadata={"who": "test"})
    first = runner.submit(request)
    assert first.submitted and first.entrypoint == "python -m jobs.train --num-workers 2"
    sent = jobs.submitted[0]
    assert sent["runtime_env"]["working_dir"] == "/src" and sent["runtime_env"]["env_vars"] == {"GH_BUS_URL": "kafka://k:9092", "GH_LINEAGE_RAY_SUBMISSION_ID": "train-1"}
    assert sent["metadata"] == {"who": "test"}
    statuses: list[str] = []
    result = runner.wait(first, timeout_s=10, on_status=statuses.append)
    assert result.ok and result.submitted and result.summary == {"job": "x", "ok": True, "n": 3}
    assert statuses == ["RUNNING", "SUCCEEDED"]
    again = runner.submit(request)
    assert not again.submitted and len(jobs.submitted) == 1
    assert runner.stop("train-1") and jobs.stopped == ["train-1"]
    with pytest.raises(LookupError):
        runner.submit(JobRequest("nope", "x"))


def test_kuberay_runner_creates_once_waits_and_deletes(fake):
    with KubeRayClient.connect(KubeTarget(namespace=NS, server=fake.url)) as client:
        runner = KubeRayRunner(client, templates(), poll_s=0.05)
        assert isinstance(runner, JobRunner)
        request = JobRequest("promote", "greenhouse-promote-r-1", ("--min-improvement", "0.1"), env_vars={"GH_LAKE_URL": "webhdfs://nn:9870/x"})
        first = runner.submit(request)
        assert first.submitted and first.entrypoint == "python -m jobs.promote --min-improvement 0.1"
        body = fake.calls("POST", "/rayjobs")[0].body
        assert body["metadata"]["namespace"] == NS and yaml.safe_load(body["spec"]["runtimeEnvYAML"]) == {"env_vars": {"GH_LAKE_URL": "webhdfs://nn:9870/x"}}
        assert not runner.submit(request).submitted
        fake.script("rayjobs", "greenhouse-promote-r-1", [{"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}, DONE])
        seen: list[str] = []
        result = runner.wait(first, timeout_s=30, on_status=seen.append)
        assert result.ok and result.status == "SUCCEEDED" and result.detail["job_id"] == "j-1" and result.summary is None
        assert seen[-1] == "Complete SUCCEEDED" and runner.status("greenhouse-promote-r-1") == "SUCCEEDED"
        assert runner.stop("greenhouse-promote-r-1") and not runner.stop("greenhouse-promote-r-1")


def test_kuberay_runner_reports_failure_and_deletes_on_timeout_when_asked(fake):
    with KubeRayClient.connect(KubeTarget(namespace=NS, server=fake.url)) as client:
        runner = KubeRayRunner(client, templates(), poll_s=0.05, stop_on_interrupt=True)
        failed = runner.submit(JobRequest("sink", "greenhouse-sink-r-2"))
        fake.script("rayjobs", "greenhouse-sink-r-2", [{"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "reason": "AppFailed"}])
        result = runner.wait(failed, timeout_s=30)
        assert not result.ok and result.status == "FAILED" and result.detail["reason"] == "AppFailed"
        stuck = runner.submit(JobRequest("tune", "greenhouse-tune-r-3"))
        fake.script("rayjobs", "greenhouse-tune-r-3", [{"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}])
        with pytest.raises(TimeoutError):
            runner.wait(stuck, timeout_s=0.3)
        assert client.get("RayJob", "greenhouse-tune-r-3") is None  # deleted


def test_rayjob_states_in_jobs_api_words():
    def state(**status) -> str:
        return job_state(RayJobStatus.from_object({"metadata": {"name": "j"}, "status": status}))

    assert state(jobDeploymentStatus="Complete", jobStatus="SUCCEEDED") == "SUCCEEDED"
    assert state(jobDeploymentStatus="Failed", jobStatus="SUCCEEDED") == "FAILED"
    assert state(jobDeploymentStatus="Complete", jobStatus="STOPPED") == "STOPPED"
    assert state(jobDeploymentStatus="Suspended") == "FAILED"
    assert state(jobDeploymentStatus="Running", jobStatus="SUCCEEDED") == "RUNNING"
    assert state(jobDeploymentStatus="Initializing") == "PENDING"


def test_greenhouse_submit_goes_through_the_ray_jobs_runner(monkeypatch):
    jobs = FakeJobs()
    monkeypatch.setattr(ray_jobs, "make_client", lambda address, headers=None: jobs)
    monkeypatch.setenv("GH_LAKE_URL", "file:///tmp/lake")
    done = CliRunner().invoke(app, ["submit", "preprocess", "--submission-id", "pre-1", "--", "--horizons", "15,60"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"job": "x", "ok": True, "n": 3}
    sent = jobs.submitted[0]
    assert sent["entrypoint"] == "python -m jobs.preprocess --horizons 15,60" and sent["submission_id"] == "pre-1"
    assert sent["runtime_env"]["env_vars"]["GH_LAKE_URL"] == "file:///tmp/lake" and sent["runtime_env"]["working_dir"]
    unknown = CliRunner().invoke(app, ["submit", "nope"])
    assert unknown.exit_code == 2 and "choose one of" in unknown.output
