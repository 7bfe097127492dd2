"""The product's jobs, written once: name, ``python -m`` module, description.

Both CLIs (``greenhouse submit``, ``greenhouse kuberay submit``), the KubeRay manifest checks and the
Airflow DAG read this registry. A job's module is a *string*: the library never imports ``jobs/``
(the module runs in the job's own process, on the cluster). The code behind each module lives in
:mod:`app.entrypoints`. Only the standard library is imported here, so Airflow can import it.

A new job: add its :class:`JobSpec` here, its entrypoint under ``app/entrypoints/``, a shim
``jobs/<name>.py`` and a RayJob template ``kuberay/base/rayjob-<name>.yaml``.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class JobSpec:
    """One job of the product.

    ``module`` is what ``python -m`` runs (``jobs.train``); ``takes_model_name`` says whether the job
    accepts ``--model-name`` (the registered model it writes or promotes).
    """

    name: str
    module: str
    description: str
    takes_model_name: bool = False

    def entrypoint(self, args: Iterable[str] = ()) -> str:
        """The shell command that runs this job with ``args``: ``python -m jobs.<name> ...``."""
        return shlex.join(["python", "-m", self.module, *args])


JOBS: dict[str, JobSpec] = {
    spec.name: spec
    for spec in (
        JobSpec("sink", "jobs.sink", "Sink the sensor topic into the lake with batch metadata."),
        JobSpec("preprocess", "jobs.preprocess", "Build a feature set from the raw lake with Ray Data."),
        JobSpec("train", "jobs.train", "Train the forecaster with Ray Train, log to MLflow, register a challenger.", takes_model_name=True),
        JobSpec("tune", "jobs.tune", "Search hyperparameters with Ray Tune, then train the best.", takes_model_name=True),
        JobSpec("promote", "jobs.promote", "Move alias champion to the challenger if it forecasts better.", takes_model_name=True),
        JobSpec("drift", "jobs.drift", "Compare the newest lake days with the feature set's baseline (PSI) and the online error."),
        JobSpec("batch_predict", "jobs.batch_predict", "Run a registered model over a feature set window with Ray Data; predictions to the lake.", takes_model_name=True),
    )
}


def job_spec(name: str) -> JobSpec:
    """The registered job called ``name``; ``LookupError`` naming the known jobs otherwise."""
    try:
        return JOBS[name]
    except KeyError:
        raise LookupError(f"unknown job {name!r}; choose one of {', '.join(JOBS)}") from None


def job_of_module(module: str) -> JobSpec | None:
    """The registered job whose entrypoint module is ``module`` (None when there is none)."""
    return next((spec for spec in JOBS.values() if spec.module == module), None)
