"""submit_and_wait against the stack's real Ray head: an interrupted wait stops the job; a failed
job is re-run as the next attempt only with rerun_failed; the head's token goes along (explicitly,
or from RAY_AUTH_TOKEN_PATH)."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from app.orchestration.ray_jobs import make_client, ray_auth_headers, submit_and_wait
from tests.helpers.engines import engine_url, ray_token_file
from tests.helpers.stack import RAY_CLIENT_ENV

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def head():
    old = {k: os.environ.get(k) for k in RAY_CLIENT_ENV}
    os.environ.update(RAY_CLIENT_ENV)
    yield engine_url("ray")
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_interrupted_wait_stops_the_job(head):
    sid = f"sleep-{uuid.uuid4().hex[:8]}"
    seen: list[str] = []

    def interrupt_when_running(status: str) -> None:
        seen.append(status)
        if status == "RUNNING":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        submit_and_wait(head, 'python -c "import time; time.sleep(300)"', submission_id=sid, poll_s=0.5, timeout_s=120, on_status=interrupt_when_running)
    client = make_client(head)  # the token from RAY_AUTH_TOKEN_PATH
    deadline = time.monotonic() + 60
    while str(client.get_job_status(sid).value) != "STOPPED" and time.monotonic() < deadline:
        time.sleep(1)
    assert str(client.get_job_status(sid).value) == "STOPPED"


def test_failed_job_reruns_as_next_attempt(head):
    sid = f"fail-{uuid.uuid4().hex[:8]}"
    headers = ray_auth_headers(token_file=ray_token_file())
    failed = submit_and_wait(head, "python -c \"import sys; print('boom'); sys.exit(3)\"", submission_id=sid, poll_s=0.5, timeout_s=120, headers=headers)
    assert failed.status == "FAILED" and "boom" in failed.logs
    same = submit_and_wait(head, "python -c 'print(1)'", submission_id=sid, poll_s=0.5, timeout_s=120)
    assert same.status == "FAILED" and not same.submitted
    rerun = submit_and_wait(head, 'python -c "print(\'{\\"ok\\": true}\')"', submission_id=sid, poll_s=0.5, timeout_s=120, rerun_failed=True)
    assert rerun.submission_id == f"{sid}-r1" and rerun.ok and rerun.submitted and rerun.summary == {"ok": True}
