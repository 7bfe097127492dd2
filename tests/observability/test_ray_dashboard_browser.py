"""The Ray dashboard as a person sees it: a real headless Chromium (Debian's chromium and
chromium-driver, through selenium) on the dashboard of a short demo-like run, finding the product's
Serve application on the Serve page and a job submitted through the Jobs API on the Jobs page.

The run is a separate process (this module's ``__main__``): the demo's :func:`app.demo.start_ray`
(its dashboard on loopback, the next free port when 8265 is taken, as by the stack's Ray head), the
ingest gateway on Serve as the demo deploys it, and ``python -m jobs.sink`` submitted to its Jobs
API. A separate process because the session's shared Ray runs without the dashboard.

The browser comes from ``stack/browser`` (installs the Debian packages when missing, as root with
apt). Without it the test skips, except under ``CI=true``, where a missing browser fails it.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 180.0  # per page; the dashboard on a loaded 2-core machine is slow


def test_the_dashboard_port_falls_back_to_the_next_free_one():
    import socket

    from app.ray_dashboard import DASHBOARD_HOST, choose_port, port_is_free

    with socket.socket() as taken:
        taken.bind((DASHBOARD_HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        chosen = choose_port(port)
        assert chosen.port != port and port_is_free(chosen.port)
        assert f"port {port} is taken" in chosen.note and chosen.url == f"http://127.0.0.1:{chosen.port}"


def test_prometheus_and_grafana_are_wired_only_when_configured(monkeypatch, tmp_path):
    from app.config import Settings
    from app.ray_dashboard import apply_monitoring_env, describe

    for name in ("RAY_PROMETHEUS_HOST", "RAY_GRAFANA_HOST", "RAY_AUTH_MODE"):
        monkeypatch.setenv(name, "")  # recorded, so that the variables set below are removed afterwards
        monkeypatch.delenv(name)
    assert apply_monitoring_env(Settings(data_dir=tmp_path)) == {}
    wired = apply_monitoring_env(Settings(data_dir=tmp_path, prometheus_url="http://127.0.0.1:9090/", grafana_url="http://127.0.0.1:3000"))
    assert wired == {"RAY_PROMETHEUS_HOST": "http://127.0.0.1:9090", "RAY_GRAFANA_HOST": "http://127.0.0.1:3000"}
    assert os.environ["RAY_PROMETHEUS_HOST"] == "http://127.0.0.1:9090"
    line = describe("http://127.0.0.1:8265", "", wired)
    assert line == "Ray dashboard: http://127.0.0.1:8265 (metrics from Prometheus http://127.0.0.1:9090, Grafana http://127.0.0.1:3000)"


@pytest.fixture(scope="session")
def browser_paths() -> dict[str, str]:
    """CHROMIUM and CHROMEDRIVER paths from ``stack/browser`` (which installs them if it can)."""
    pytest.importorskip("selenium", reason="selenium is in the test extra: pip install -e '.[test]'")
    done = subprocess.run([str(REPO / "stack" / "browser")], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        message = f"no headless browser: stack/browser failed: {done.stderr.strip()[-500:]}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


@pytest.fixture
def chromium(browser_paths):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser_paths["CHROMIUM"]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1600,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=browser_paths["CHROMEDRIVER"]), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def demo_run(tmp_path):
    """The short run in its own process; yields what it printed: dashboard URL, app, submission id."""
    # a clean Ray environment: no cluster to join, no token auth inherited from `stack env`
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "GH_"))}
    token_path = tmp_path / "ray-token"
    token_path.write_text(secrets.token_hex(32))  # Ray's token auth, as a new local cluster has it, with this test's token
    env |= {"GH_DATA_DIR": str(tmp_path / "gh"), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.observability.test_ray_dashboard_browser"], cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        info = _read_ready_line(proc)
        yield info | {"token": token_path.read_text(), "token_path": str(token_path)}
    finally:
        if proc.stdin:
            proc.stdin.close()  # the run shuts Serve and Ray down
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _read_ready_line(proc: subprocess.Popen) -> dict:
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # ends when the run exits
        lines.append(line)
        if line.startswith("{"):
            return orjson.loads(line)
    proc.wait()
    pytest.fail(f"the run exited ({proc.returncode}) before it was ready:\n{''.join(lines)[-2000:]}\n{(proc.stderr.read() if proc.stderr else '')[-4000:]}")


def _sign_in(driver, token: str) -> None:
    """What a person does on the dashboard's token prompt: type the token, press Submit."""
    from selenium.webdriver.common.by import By

    fields = [f for f in driver.find_elements(By.CSS_SELECTOR, "[role=dialog] input, input[type=password]") if f.is_displayed()]
    assert fields, "the token prompt has no field to type into"
    fields[0].send_keys(token)
    [submit] = [b for b in driver.find_elements(By.TAG_NAME, "button") if b.is_displayed() and b.text.strip().upper() == "SUBMIT"]
    submit.click()


def _wait_for_text(driver, url: str, texts: list[str], token: str) -> str:
    """Open ``url`` and wait (signing in when asked, reloading now and then) until the rendered
    page shows every text."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + DEADLINE_S
    body = ""
    driver.get(url)
    last_load = time.monotonic()
    while time.monotonic() < deadline:
        body = driver.find_element(By.TAG_NAME, "body").text
        if all(text in body for text in texts):
            return body
        if "Authentication Token Required" in body:
            _sign_in(driver, token)
            time.sleep(1)
            driver.get(url)
            last_load = time.monotonic()
            continue
        if time.monotonic() - last_load > 15:  # the page polls, but a reload costs nothing here
            driver.get(url)
            last_load = time.monotonic()
        time.sleep(1)
    pytest.fail(f"{url} never showed {texts} within {DEADLINE_S:.0f} s; it showed:\n{body[:3000]}")


@pytest.mark.serve
def test_the_dashboard_shows_the_serve_app_and_the_submitted_job(demo_run, chromium):
    url = demo_run["dashboard"]
    assert url.startswith("http://127.0.0.1:")
    announced = demo_run["announced"]  # what the person reads first: where, and how to sign in
    assert demo_run["metrics_line"].startswith("Ray metrics: http://127.0.0.1:")  # then where Prometheus scrapes
    assert announced.startswith(f"Ray dashboard: {url} (") and announced.endswith(f"sign in with the token in {demo_run['token_path']})")

    serve_page = _wait_for_text(chromium, f"{url}/#/serve", [demo_run["app"]], demo_run["token"])
    assert "RUNNING" in serve_page or "HEALTHY" in serve_page

    # the submitted job's row: its submission id and entrypoint (its status is whatever it is by then)
    _wait_for_text(chromium, f"{url}/#/jobs", [demo_run["submission_id"], "-m jobs.sink"], demo_run["token"])


def _submit(client, **job) -> None:
    """Submit, again while the node's job agent has not registered yet (a fresh cluster answers 500
    "No available agent to submit job" for a few seconds)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            client.submit_job(**job)
            return
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1)


def _agent_on_a_free_port() -> None:
    """Give this run's dashboard agent (which serves the Jobs API's submissions) a free port.

    ``ray.init`` cannot choose it: every cluster it starts puts its agent on 52365, and a second
    cluster on the machine (the test session's own shared Ray, in the pytest process) then runs
    without a job agent ("No available agent to submit job"). ``ray start`` has
    ``--dashboard-agent-listen-port``, which the stack uses; this is the same for ``ray.init``.
    """
    from ray._private import parameter

    from app.serve.tuning import free_port

    original = parameter.RayParams.__init__
    port = free_port()

    def init(self, *args, **kwargs) -> None:
        kwargs.setdefault("dashboard_agent_listen_port", port)
        original(self, *args, **kwargs)

    parameter.RayParams.__init__ = init  # type: ignore[method-assign]


def _run() -> None:
    """The short demo-like run (``python -m tests.observability.test_ray_dashboard_browser``):
    prints one JSON line once the app runs and the job is submitted, then serves until stdin closes."""
    import ray
    from ray import serve
    from ray.job_submission import JobSubmissionClient

    from app.config import Settings
    from app.demo import start_ray
    from app.serve.args import AppArgs
    from app.serve.ingest import build_app
    from app.serve.tuning import apply_serve_process_env, free_port

    settings = Settings()
    apply_serve_process_env()
    _agent_on_a_free_port()
    announced: list[str] = []
    url = start_ray(settings, announced.append)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
        serve.run(build_app(AppArgs(settings=settings.for_replicas())), name="ingest", route_prefix="/")
        submission_id = f"gh-browser-sink-{uuid.uuid4().hex[:8]}"
        env_vars = {"GH_DATA_DIR": str(settings.data_dir)}
        _submit(JobSubmissionClient(url), entrypoint=f"{sys.executable} -m jobs.sink", submission_id=submission_id, runtime_env={"env_vars": env_vars})
        print(orjson.dumps({"dashboard": url, "announced": announced[0], "metrics_line": announced[1], "app": "ingest", "submission_id": submission_id}).decode(), flush=True)
        sys.stdin.read()
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    _run()
