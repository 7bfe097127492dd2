"""Runs, metrics, artifacts and registered-model aliases on one MLflow tracking URL.

:class:`Tracking` wraps an explicit ``MlflowClient`` (no global mlflow state):
``sqlite:///<file>`` for the embedded default, ``http(s)://host:5000`` for a tracking server.
Registry stages are deprecated in MLflow 3, so promotion is by alias (``champion``,
``challenger``).

A server behind TLS signed by a private CA names that CA in its URL, so that it travels with the
settings to every job and replica: ``https://host:5000?ca_file=/path/ca.crt``. MLflow's client
takes a CA only from the process environment (``MLFLOW_TRACKING_SERVER_CERT_PATH``, read on every
request by its REST stores and artifact repositories alike), so :class:`Tracking` sets that variable
when it is unset and refuses a URL naming another CA than the one already set: one process trusts
one CA bundle for MLflow, and never silently the wrong one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlparse, urlunparse

SERVER_CERT_ENV = "MLFLOW_TRACKING_SERVER_CERT_PATH"

LINEAGE_TAG_PREFIX = "lineage."
"""Run tags naming the orchestration a run was started by (``lineage.airflow_dag_run_id``,
``lineage.ray_submission_id``, ...)."""


def quiet_telemetry() -> None:
    """Turn MLflow's usage telemetry off unless the environment already chose (before mlflow loads)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def server_url(url: str) -> tuple[str, Path | None]:
    """``https://host:5000?ca_file=/ca.crt`` -> ``("https://host:5000", Path("/ca.crt"))``: the URL
    MLflow is given and the CA its server is verified with (None: the system's CAs). Other URLs
    (``sqlite:///...``) come back as they are. ``ValueError`` for another query parameter, a CA
    on a plain ``http://`` URL, or a CA file that does not exist."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.query:
        return url, None
    params = dict(parse_qsl(parsed.query, keep_blank_values=True))
    unknown = sorted(set(params) - {"ca_file"})
    if unknown or len(parse_qsl(parsed.query, keep_blank_values=True)) != len(params):
        raise ValueError(f"tracking URL parameters: only ca_file (once) is understood, got {parsed.query!r}")
    if parsed.scheme != "https":
        raise ValueError("ca_file in a tracking URL needs https://")
    ca_file = Path(params["ca_file"])
    if not ca_file.is_file():
        raise ValueError(f"tracking URL ca_file: no such file {ca_file}")
    return urlunparse(parsed._replace(query="")), ca_file


def trust_server_ca(ca_file: Path) -> None:
    """Make MLflow's client verify tracking servers with ``ca_file`` (see the module docstring)."""
    current = os.environ.get(SERVER_CERT_ENV)
    if current is None:
        os.environ[SERVER_CERT_ENV] = str(ca_file)
    elif Path(current).resolve() != ca_file.resolve():
        raise ValueError(f"this process already verifies MLflow servers with {SERVER_CERT_ENV}={current}; the tracking URL names another CA ({ca_file})")


class Tracking:
    """Runs, metrics, artifacts and registered models on one MLflow tracking URL."""

    def __init__(self, url: str, *, artifact_root: str | Path | None = None) -> None:
        quiet_telemetry()
        from mlflow.tracking import MlflowClient

        self.url, ca_file = server_url(url)  # what MLflow is given (without ca_file)
        if ca_file is not None:
            trust_server_ca(ca_file)
        self.client = MlflowClient(tracking_uri=self.url, registry_uri=self.url)
        scheme = urlparse(url).scheme
        # A server keeps artifacts itself (proxied mlflow-artifacts:/); a local store needs a
        # directory next to the database instead of MLflow's cwd-relative ./mlruns default.
        if artifact_root is None and scheme == "sqlite":
            artifact_root = Path(urlparse(url).path).parent / "mlartifacts"
        self.artifact_root = Path(artifact_root).resolve().as_uri() if artifact_root else None

    def ensure_experiment(self, name: str) -> str:
        """The id of experiment ``name``, created when missing."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        return self.client.create_experiment(name, artifact_location=f"{self.artifact_root}/{name}" if self.artifact_root else None)

    @contextmanager
    def run(self, experiment: str, run_name: str, tags: Mapping[str, str] | None = None) -> Iterator[str]:
        """A run in ``experiment``; yields its id, ends FINISHED (or FAILED on an exception)."""
        run = self.client.create_run(self.ensure_experiment(experiment), run_name=run_name, tags=dict(tags or {}))
        run_id = run.info.run_id
        try:
            yield run_id
        except BaseException:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id, status="FINISHED")

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Log ``params`` (values as strings) to the run."""
        from mlflow.entities import Param

        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log ``metrics`` to the run at ``step``, stamped now."""
        import time

        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now_ms, step) for k, v in metrics.items()])

    def log_artifact(self, run_id: str, local_path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a local file (or directory) into the run's artifacts, under ``artifact_path``."""
        self.client.log_artifact(run_id, str(local_path), artifact_path)

    def download_artifact(self, run_id: str, path: str, dst: str | Path) -> Path:
        """Download the run's artifact ``path`` into ``dst``; return the local path."""
        return Path(self.client.download_artifacts(run_id, path, str(dst)))

    def get_run(self, run_id: str) -> dict[str, Any]:
        """Params, metrics, tags and status of a run as plain dicts."""
        run = self.client.get_run(run_id)
        return {"status": run.info.status, "params": dict(run.data.params), "metrics": dict(run.data.metrics), "tags": dict(run.data.tags)}

    def find_run(self, run_id: str) -> dict[str, Any] | None:
        """A run's name, experiment, status, start/end times (epoch ms), params, metrics and tags
        (without MLflow's own ``mlflow.*`` tags), or ``None`` when no such run exists."""
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return None
        info = run.info
        return {
            "run_id": info.run_id,
            "run_name": info.run_name,
            "experiment_id": info.experiment_id,
            "status": info.status,
            "start_time_ms": info.start_time,
            "end_time_ms": info.end_time,
            "params": dict(run.data.params),
            "metrics": dict(run.data.metrics),
            "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
        }

    def model_version(self, name: str, version: str) -> dict[str, Any] | None:
        """Registered version ``version`` of model ``name``: its ``run_id``, ``source``, ``aliases``,
        ``tags``, ``status`` and creation time (epoch ms); ``None`` when the model or version does
        not exist."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version(name, str(version))
        except MlflowException:
            return None
        return {
            "name": mv.name,
            "version": str(mv.version),
            "run_id": mv.run_id,
            "source": mv.source,
            "aliases": sorted(mv.aliases or []),
            "tags": dict(mv.tags or {}),
            "status": mv.status,
            "created_at_ms": mv.creation_timestamp,
        }

    def ensure_registered_model(self, name: str) -> None:
        """Create registered model ``name`` unless it exists."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name)
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                raise

    def register(self, name: str, run_id: str, artifact_path: str) -> str:
        """Register ``runs:/<run_id>/<artifact_path>`` as a new version of model ``name``."""
        self.ensure_registered_model(name)
        source = f"runs:/{run_id}/{artifact_path}"
        return str(self.client.create_model_version(name, source=source, run_id=run_id).version)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``alias`` of model ``name`` at ``version``."""
        self.client.set_registered_model_alias(name, alias, version)

    def version_by_alias(self, name: str, alias: str) -> str | None:
        """The version an alias points at, or ``None`` when the model or alias does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None


def resolve_alias(tracking_url: str, name: str, alias: str) -> str | None:
    """The version of registered model ``name`` that ``alias`` points at on ``tracking_url``, or
    ``None`` when the model or the alias does not exist (e.g. ``champion`` -> ``"3"``)."""
    return Tracking(tracking_url).version_by_alias(name, alias)
