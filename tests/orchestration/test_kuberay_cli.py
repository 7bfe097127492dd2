"""``greenhouse kuberay`` against the fake Kubernetes API over HTTP: apply an overlay, status,
submit a RayJob run from its template and wait, delete."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from app.cli.main import app
from tests.helpers.fake_kube import FakeKubeAPI


@pytest.fixture
def fake():
    api = FakeKubeAPI().start()
    yield api
    api.stop()


def test_apply_status_submit_delete(fake, k8s_tools, monkeypatch):  # noqa: F811
    monkeypatch.setenv("GH_K8S_TOOLS", str(k8s_tools))
    runner = CliRunner()
    common = ["--namespace", "greenhouse-dev", "--server", fake.url]
    applied = runner.invoke(app, ["kuberay", "apply", "dev", *common])
    assert applied.exit_code == 0, applied.output
    assert "raycluster/greenhouse created" in applied.output and "rayjob/greenhouse-train created" in applied.output
    assert "secret/greenhouse-secrets created" in applied.output and "namespace/greenhouse-dev created" in applied.output
    again = runner.invoke(app, ["kuberay", "apply", "dev", *common])
    assert again.exit_code == 0 and "created" not in again.output and "rayservice/greenhouse-serve unchanged" in again.output

    status = runner.invoke(app, ["kuberay", "status", *common])
    assert status.exit_code == 0 and "greenhouse-serve" in status.output and "Suspended" in status.output

    fake.script(
        "rayjobs",
        "greenhouse-train-cli",
        [{"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}, {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED", "jobId": "greenhouse-train-cli-x"}],
    )
    submitted = runner.invoke(app, ["kuberay", "submit", "train", "--overlay", "dev", "--name", "greenhouse-train-cli", *common, "--", "--num-boost-round", "50"])
    assert submitted.exit_code == 0, submitted.output
    assert json.loads(submitted.stdout.strip().splitlines()[-1]) == {"rayjob": "greenhouse-train-cli", "deployment_status": "Complete", "job_status": "SUCCEEDED", "job_id": "greenhouse-train-cli-x"}
    body = fake.calls("POST", "/rayjobs")[-1].body
    assert body["spec"]["entrypoint"].endswith("--num-boost-round 50") and body["spec"]["suspend"] is False

    deleted = runner.invoke(app, ["kuberay", "delete", "rayjob", "greenhouse-train-cli", *common])
    assert deleted.exit_code == 0 and "deleted" in deleted.output
    missing = runner.invoke(app, ["kuberay", "status", "rayjob", "greenhouse-train-cli", *common])
    assert missing.exit_code == 1
