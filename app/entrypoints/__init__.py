"""The code behind the job entrypoints: one module per job (``jobs/<name>.py`` is a shim that runs
``main`` of the module here with the same name).

Each ``main(argv)`` parses its arguments, builds settings, calls the stage in ``app``, prints one JSON
summary line and returns the exit code. ``greenhouse preprocess|train|tune|promote|sink|drift|batch_predict`` call them
in-process; ``python -m jobs.<name>`` (a Ray job, a RayJob, Airflow) runs them in the job's process.
"""

from __future__ import annotations

from collections.abc import Callable

from app.entrypoints import batch_predict, drift, preprocess, promote, sink, train, tune
from app.orchestration.registry import job_spec

Main = Callable[[list[str] | None], int]
MAINS: dict[str, Main] = {"sink": sink.main, "preprocess": preprocess.main, "train": train.main, "tune": tune.main, "promote": promote.main, "drift": drift.main, "batch_predict": batch_predict.main}


def main_of(job: str) -> Main:
    """The entrypoint of the registered ``job`` (``LookupError`` for an unknown one)."""
    job_spec(job)
    return MAINS[job]
