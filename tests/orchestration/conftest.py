"""Fixtures shared by the orchestration tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers.engines import missing

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def k8s_tools() -> Path:
    """The k8s-tools binary, built by the project's script when missing (quick when built)."""
    try:
        done = subprocess.run([str(REPO / "stack" / "k8s-tools" / "build")], capture_output=True, text=True, timeout=900)
    except FileNotFoundError as exc:
        missing(f"stack/k8s-tools/build could not run: {exc}")
    if done.returncode != 0:
        missing(f"stack/k8s-tools/build failed (Go >= 1.24 and the Go module proxy are needed): {done.stderr[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1])
