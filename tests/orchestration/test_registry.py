"""One registry of jobs: every registered job has its entrypoint in ``app.entrypoints`` and a thin
``jobs/<name>.py`` shim; the library never imports ``jobs/``; the model name defaults to settings."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli.main import app
from app.entrypoints import MAINS, main_of
from app.orchestration.registry import JOBS, job_of_module, job_spec

REPO = Path(__file__).resolve().parents[2]


def test_every_registered_job_has_an_entrypoint_and_a_thin_shim():
    assert set(MAINS) == set(JOBS) == {"sink", "preprocess", "train", "tune", "promote", "drift", "batch_predict"}
    for name, spec in JOBS.items():
        assert spec.module == f"jobs.{name}" and job_of_module(spec.module) is spec
        shim = ast.parse((REPO / "jobs" / f"{name}.py").read_text())
        imports = [node for node in ast.walk(shim) if isinstance(node, ast.ImportFrom)]
        assert [(i.module, [a.name for a in i.names]) for i in imports] == [(f"app.entrypoints.{name}", ["main"])]
        assert not [node for node in shim.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
    assert job_spec("train").entrypoint(["--num-workers", "2", "a b"]) == "python -m jobs.train --num-workers 2 'a b'"
    with pytest.raises(LookupError, match="choose one of sink, preprocess"):
        main_of("nope")


def test_the_library_never_imports_jobs():
    offenders = []
    for path in (REPO / "app").rglob("*.py"):
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("import_module", "find_spec"):
                names = [ast.get_source_segment(source, arg) or "" for arg in node.args[:1]]  # dynamic: look at the text
                names = ["jobs"] if any("jobs" in n for n in names) else []
            else:
                continue
            if any(n == "jobs" or n.startswith("jobs.") for n in names):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def test_shim_runs_as_a_module_and_the_cli_runs_the_same_entrypoint():
    done = subprocess.run([sys.executable, "-m", "jobs.promote", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("usage: python -m jobs.promote")
    via_cli = CliRunner().invoke(app, ["promote", "--help"])
    assert via_cli.exit_code == 0 and via_cli.stdout == done.stdout
    listed = CliRunner().invoke(app, ["--help"])
    assert all(name in listed.stdout for name in JOBS)


def test_model_name_defaults_to_the_settings(monkeypatch, tmp_path):
    import app.train.promotion as pipeline

    seen: list[str] = []

    class Decision:
        def summary(self) -> dict:
            return {"promoted": False}

    def fake_promotion(settings, model_name, **kwargs):
        seen.append(model_name)
        return Decision()

    monkeypatch.setattr(pipeline, "run_promotion", fake_promotion)
    monkeypatch.setenv("GH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GH_CONTROL__MODEL_NAME", "gh-from-settings")
    assert main_of("promote")([]) == 0
    assert main_of("promote")(["--model-name", "explicit"]) == 0
    assert seen == ["gh-from-settings", "explicit"]
