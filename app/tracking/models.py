"""Forecast models in MLflow: log and register one, load one back, warm the imports loading needs.

Every call names its tracking URL (used as the registry URL too); nothing sets mlflow's global
URIs. A model is logged as an MLflow 3 *logged model* of the training run (``models:/m-...``) and
registered as a version of a named model, so ``models:/<name>/<version>`` and
``models:/<name>@<alias>`` both load it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from app.tracking.client import quiet_telemetry

if TYPE_CHECKING:
    import pandas as pd

PIP_REQUIREMENTS = ["xgboost-cpu>=3,<4", "pandas", "numpy", "pydantic>=2"]


def warm_imports() -> None:
    """Import mlflow's modules that loading a model and resolving an alias need (several seconds
    on a cold process), so the first request of a serving replica does not pay for them."""
    quiet_telemetry()
    import mlflow.artifacts  # noqa: F401
    import mlflow.pyfunc  # noqa: F401
    from mlflow.store.artifact.utils.models import get_model_name_and_version  # noqa: F401
    from mlflow.tracking import MlflowClient  # noqa: F401

    import app.tracking.pyfunc  # noqa: F401


def _save_pyfunc(path: Path, mlflow_model: Any, model_dir: str | Path, load: Callable[[str], Any], input_example: pd.DataFrame, output_example: pd.DataFrame) -> None:
    """Write the pyfunc (wrapper, boosters, ``app`` code, signature, example) to ``path``."""
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    import app
    from app.tracking.pyfunc import ForecastPyfunc

    mlflow.pyfunc.save_model(
        path=str(path),
        mlflow_model=mlflow_model,
        python_model=ForecastPyfunc(load),
        artifacts={"model_dir": str(model_dir)},
        code_paths=[str(Path(app.__file__).parent)],
        signature=infer_signature(input_example, output_example),
        input_example=input_example,
        pip_requirements=PIP_REQUIREMENTS,
    )


def log_forecast_model(tracking_url: str, run_id: str, model_dir: str | Path, *, load: Callable[[str], Any], input_example: pd.DataFrame, output_example: pd.DataFrame, registered_name: str) -> str:
    """Log the model saved in ``model_dir`` to run ``run_id`` as a pyfunc named ``model`` and
    register it as a new version of ``registered_name``; return the version.

    ``load`` turns a saved model directory back into the model (e.g.
    ``app.train.model.load_saved_model``); it travels with the pyfunc (pickled by reference: a
    module-level function) and :func:`load_forecast_model` calls it."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model

    from app.tracking.client import Tracking

    tracking = Tracking(tracking_url)
    client = tracking.client
    run = client.get_run(run_id)
    # as mlflow's log_model does: the logged model carries the run's params
    logged = client.create_logged_model(run.info.experiment_id, name="model", source_run_id=run_id, params=dict(run.data.params))
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    mlflow_model = Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id, run_id=run_id, model_id=logged.model_id)
    with tempfile.TemporaryDirectory() as tmp:
        _save_pyfunc(Path(tmp) / "model", mlflow_model, model_dir, load, input_example, output_example)
        client.log_model_artifacts(logged.model_id, str(Path(tmp) / "model"))
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    tracking.ensure_registered_model(registered_name)
    version = client.create_model_version(registered_name, source=_version_source(tracking_url, logged), run_id=run_id, model_id=logged.model_id)
    return str(version.version)


def _version_source(tracking_url: str, logged: Any) -> str:
    """The source of a registered version of a logged model: ``models:/<model id>`` as
    ``log_model`` registers it; a local store resolves that URI through the global tracking URI
    (never set here), so it gets the logged model's artifact location, the same files."""
    if urlparse(tracking_url).scheme in ("http", "https"):
        return f"models:/{logged.model_id}"
    return logged.artifact_location


def artifact_location(tracking_url: str, model_uri: str) -> str:
    """Where the model at ``model_uri`` keeps its files. A ``models:/`` URI (``<name>/<version>``,
    ``<name>@<alias>``, ``<logged model id>``) is resolved on ``tracking_url``'s registry: MLflow's
    own resolver reads the global registry URI, which this project never sets. Other URIs
    (``runs:/...``, a path) are returned as they are."""
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    from app.tracking.client import Tracking

    if not model_uri.startswith("models:/"):
        return model_uri
    client = Tracking(tracking_url).client
    found = get_model_name_and_version(client, model_uri)
    if len(found) == 1:
        return client.get_logged_model(found[0]).artifact_location
    return client.get_model_version_download_uri(*found)


def registered_version(tracking_url: str, model_uri: str) -> tuple[str, str] | None:
    """``(name, version)`` of a ``models:/<name>/<version>`` or ``models:/<name>@<alias>`` URI (the
    alias resolved on ``tracking_url`` now; ``LookupError`` when it names nothing); ``None`` for
    other URIs (a logged model id, ``runs:/...``, a path)."""
    from app.tracking.client import resolve_alias

    if not model_uri.startswith("models:/"):
        return None
    rest = model_uri.removeprefix("models:/")
    if "@" in rest:
        name, alias = rest.rsplit("@", 1)
        version = resolve_alias(tracking_url, name, alias)
        if version is None:
            raise LookupError(f"model {name!r} has no alias {alias!r}")
        return name, version
    name, _, version = rest.rpartition("/")
    return (name, version) if name and version.isdigit() else None


def _download(tracking_url: str, model_uri: str, dst: Path) -> Path:
    """Fetch the files of the model at ``model_uri`` into ``dst``; the local directory."""
    import mlflow.artifacts

    from app.tracking.client import Tracking

    server = Tracking(tracking_url).url  # without ca_file (Tracking made the CA trusted)
    source = artifact_location(tracking_url, model_uri)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst), tracking_uri=server, registry_uri=server))


def _load_local(local: Path) -> Any:
    """The pyfunc in the local directory ``local``."""
    import mlflow.pyfunc

    try:
        return mlflow.pyfunc.load_model(str(local))
    finally:
        # loading prepends the model's code copy to sys.path; this process runs its own copy of
        # ``app`` (already imported), and the directory may go (a temporary download)
        code = os.path.join(str(local), "code")
        sys.path[:] = [p for p in sys.path if p != code]


def load_pyfunc(tracking_url: str, model_uri: str, *, cache_dir: str | Path | None = None) -> Any:
    """The MLflow pyfunc at ``model_uri`` (``models:/<name>/<version>``, ``models:/<name>@<alias>``,
    ``runs:/...``) on ``tracking_url``.

    With ``cache_dir`` (settings ``model_cache_path``: a directory on this node) a registered
    version is fetched once per node and loaded from the cache afterwards
    (:mod:`app.tracking.cache`; an alias is resolved to its version first); without it, or for
    other URIs, the files go to a temporary directory that is removed after loading."""
    from app.tracking.cache import cached_version
    from app.tracking.client import Tracking

    quiet_telemetry()
    found = registered_version(tracking_url, model_uri) if cache_dir is not None else None
    if cache_dir is not None and found is not None:
        name, version = found
        exact = f"models:/{name}/{version}"
        local, _ = cached_version(cache_dir, Tracking(tracking_url).url, name, version, lambda dst: _download(tracking_url, exact, dst))
        return _load_local(local)
    with tempfile.TemporaryDirectory(prefix="gh-model-") as tmp:
        return _load_local(_download(tracking_url, model_uri, Path(tmp)))


def load_forecast_model(tracking_url: str, model_uri: str, *, cache_dir: str | Path | None = None) -> Any:
    """The forecast model (``app.train.model.ForecastModel``) registered at ``model_uri`` on
    ``tracking_url``, e.g. ``models:/greenhouse-forecaster@champion`` or
    ``models:/greenhouse-forecaster/3``: loaded by the loader it was logged with (from the
    node-local ``cache_dir`` when given, see :func:`load_pyfunc`). Models logged by earlier
    versions of the code load too."""
    return load_pyfunc(tracking_url, model_uri, cache_dir=cache_dir).unwrap_python_model().model
