"""The `greenhouse` CLI as a user meets it: help, bad input, and a short demo run end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.serve.tuning import free_port

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "app.cli.main"]


def run(args: list[str], timeout: float = 60, **env) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + args, cwd=REPO, capture_output=True, text=True, timeout=timeout, env={**os.environ, **env})


def test_help_explains_commands():
    out = run(["--help"])
    assert out.returncode == 0
    for command in ("demo", "sink", "simulate", "config", "lake"):
        assert command in out.stdout
    demo_help = run(["demo", "--help"])
    assert "--greenhouses" in demo_help.stdout and "--days" in demo_help.stdout


def test_bad_input_gets_a_message_and_nonzero_exit(tmp_path):
    out = run(["demo", "--greenhouses", "0"])
    assert out.returncode == 2 and "greenhouses" in (out.stderr + out.stdout)
    out = run(["config", "--config", str(tmp_path / "missing.yaml")])
    assert out.returncode == 2 and "config file not found" in out.stderr
    out = run(["config"], GH_TOPICS__PARTITIONS="zero")
    assert out.returncode == 2 and "invalid settings" in out.stderr


def test_config_shows_effective_settings_with_url_credentials_masked(tmp_path):
    out = run(["config"], GH_DATA_DIR=str(tmp_path), GH_METADATA_URL="mongodb://gh:s3cret@db:27017/gh?tls=true&tlsCertificateKeyFilePassword=p4ss")
    assert out.returncode == 0
    data = json.loads(out.stdout)
    assert data["bus_url"] == f"file://{tmp_path}/bus"
    assert data["metadata_url"] == "mongodb://gh:***@db:27017/gh?tls=true&tlsCertificateKeyFilePassword=***"
    assert "s3cret" not in out.stdout and "p4ss" not in out.stdout


@pytest.mark.serve
def test_short_demo_puts_exactly_the_accepted_readings_in_the_lake(tmp_path):
    out = run(["demo", "--data-only", "--days", "0.1", "--fault-rate", "0.02", "--data-dir", str(tmp_path / "demo"), "--port", str(free_port())], timeout=300, GH_SECURITY__HTTPS_PORT=str(free_port()))
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True
    assert summary["readings_generated"] == 2 * 3 * 144  # 2 greenhouses x 3 devices x 144 steps
    assert summary["lake_rows"] == summary["readings_accepted"] > 0
    assert summary["readings_rejected"] == sum(summary["rejected_by_reason"].values()) > 0
    assert summary["dead_letters"] == summary["readings_rejected"]
    assert "Demo summary" in out.stderr and "sinking the bus into the lake" in out.stderr
    lake = run(["lake"], GH_DATA_DIR=str(tmp_path / "demo"))
    assert lake.returncode == 0 and "gh-01" in lake.stderr and f"total rows: {summary['lake_rows']}" in lake.stderr


def test_full_demo_learns_serves_and_controls_in_a_closed_loop(tmp_path):
    """The whole demo at a small size: 2 days of data, a 2-trial search, 2 simulated hours of
    closed-loop control through Serve next to the thermostat, the table and the report."""
    data_dir = tmp_path / "full"
    out = run(["demo", "--days", "2", "--tune-samples", "2", "--control-days", "0.1", "--data-dir", str(data_dir), "--port", str(free_port())], timeout=900, GH_SECURITY__HTTPS_PORT=str(free_port()))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True and summary["promoted"] is True and summary["model_version"] == "1"
    assert summary["tune_trials"] == 2 and summary["forecast_skill_15min"] is not None
    control = summary["control"]
    # 0.1 day = 144 one-minute steps -> 28 control intervals x 2 greenhouses, all applied (the hour
    # of warm-up before it runs both twins under the thermostat and asks Serve nothing)
    assert control["control_requests"] == 56 and control["commands_applied"] == 56
    assert control["control_modes"].get("mpc", 0) >= 50
    for key in ("model_in_band_pct", "thermostat_in_band_pct", "model_rh_above_max_pct", "thermostat_rh_above_max_pct"):
        assert 0 <= control[key] <= 100
    assert control["model_heating_kwh"] >= 0 and control["thermostat_heating_kwh"] >= 0
    assert summary["control_verdict"].startswith(("better", "not better"))
    report = Path(summary["report"])
    assert report.exists() and (report.parent / "controllers.png").stat().st_size > 10_000
    assert "Demo summary" in out.stderr and "closed-loop control, model vs thermostat" in out.stderr
