"""``greenhouse serve CONFIG``: ``serve run`` with the fast ingress in the environment Ray starts with."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import serve as serve_cli
from app.cli.main import app

CONFIG = Path(__file__).resolve().parents[2] / "serve_configs" / "ingest.yaml"


@pytest.fixture
def execs(monkeypatch):
    """What the command would become (``os.execv`` is recorded, not called), with a clean env
    (restored afterwards: the command sets variables in this process)."""
    seen: list[tuple[str, list[str], dict[str, str]]] = []
    saved = dict(os.environ)
    for name in ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_THROUGHPUT_OPTIMIZED", "RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(serve_cli.os, "execv", lambda path, argv: seen.append((path, argv, dict(os.environ))))
    yield seen
    os.environ.clear()
    os.environ.update(saved)


def test_serve_runs_the_config_with_haproxy_and_throughput_mode(execs):
    result = CliRunner().invoke(app, ["serve", str(CONFIG), "--non-blocking"])
    assert result.exit_code == 0, result.output
    ((path, argv, env),) = execs
    assert Path(path).name == "serve" and argv[1:] == ["run", str(CONFIG), "--non-blocking"]
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert env["RAY_SERVE_HAPROXY_STATS_PORT"] != env["RAY_SERVE_HAPROXY_METRICS_PORT"]


def test_a_proxy_chosen_in_the_environment_wins(execs, monkeypatch):
    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "0")
    assert CliRunner().invoke(app, ["serve", str(CONFIG)]).exit_code == 0
    assert execs[0][2]["RAY_SERVE_ENABLE_HA_PROXY"] == "0"


def test_a_missing_config_is_a_usage_error(execs):
    assert CliRunner().invoke(app, ["serve", "nope.yaml"]).exit_code == 2 and not execs
