"""The batch prediction stage: a registered model over a window of a feature set, predictions to
the lake, a metadata record. Run by ``jobs.batch_predict`` and by the promotion gate.

Layout in the lake (Parquet, zstd; one directory per run, replaced when run again)::

    predictions/<model name>/<version>/<feature_set_id>/<window>/*.parquet

``<window>`` is ``train``, ``validation`` or ``test``, or ``<window>-<start>-<end>`` for a time
range inside it (``YYYYMMDDTHHMMSS``, UTC, end excluded). Each row is a forecast table row
(:func:`app.train.evaluate.forecast_table`): ``greenhouse_id``, ``ts`` (when the forecast is made),
the current value of each target variable, the window's target columns (``target_<key>``, the
outcomes), the forecasts ``<variable>_<h>min`` and their interval edges ``<key>_low``/``<key>_high``.
The metadata document (collection ``batch_predictions``, ``_id`` the directory) names the model
version, feature set, window, rows, files and the pooled scores against persistence.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from app.config import Settings
from app.contracts.vocabulary import target_column

if TYPE_CHECKING:
    import pandas as pd

PREDICTIONS = "predictions"
BATCH_PREDICTIONS = "batch_predictions"
"""The metadata collection of batch prediction runs."""


class BatchPredictParams(BaseModel):
    """Which model, over which rows, and how wide."""

    model_name: str | None = Field(default=None, description="registered model; default: settings.control.model_name")
    alias: str = Field(default="champion", description="alias to resolve when no version is given")
    version: str | None = Field(default=None, description="a registered version; wins over the alias")
    feature_set_id: str | None = Field(default=None, description="default: the newest feature set")
    window: str = Field(default="test", description="train, validation or test")
    start: datetime | None = Field(default=None, description="only rows with ts >= start (UTC)")
    end: datetime | None = Field(default=None, description="only rows with ts < end (UTC)")
    max_actors: int = Field(default=2, ge=1, le=256, description="inference actors at most (each loads the model once)")
    write: bool = Field(default=True, description="write the predictions to the lake")


@dataclass
class BatchPrediction:
    """What a batch prediction run did (:meth:`summary` is the job's JSON line)."""

    model_name: str
    model_version: str
    feature_set_id: str
    window: str
    rows: int
    relative_path: str | None
    files: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0
    table: pd.DataFrame | None = field(default=None, repr=False, compare=False)
    """The predictions as one forecast table in window order, when the caller asked to collect them."""

    def summary(self) -> dict[str, Any]:
        """A JSON-ready dict (without the table), metrics rounded."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "table"}
        return {**out, "metrics": {k: round(v, 5) for k, v in self.metrics.items()}}


def window_label(window: str, start: datetime | None, end: datetime | None) -> str:
    """The ``<window>`` directory name: the window, with the time range when there is one."""
    if start is None and end is None:
        return window

    def stamp(t: datetime | None) -> str:
        return "" if t is None else t.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S") if t.tzinfo else t.strftime("%Y%m%dT%H%M%S")

    return f"{window}-{stamp(start)}-{stamp(end)}"


def predictions_path(model_name: str, version: str, feature_set_id: str, label: str) -> str:
    """The lake directory (root-relative) of one run's predictions."""
    return f"{PREDICTIONS}/{model_name}/{version}/{feature_set_id}/{label}"


def resolve_version(settings: Settings, model_name: str, version: str | None, alias: str) -> str:
    """``version``, or the version ``alias`` points at now (``LookupError`` when none)."""
    from app.tracking import resolve_alias

    if version:
        return str(version)
    found = resolve_alias(settings.tracking_url, model_name, alias)
    if found is None:
        raise LookupError(f"model {model_name!r} has no alias {alias!r}")
    return found


def run_batch_predict(settings: Settings, params: BatchPredictParams, *, run_ids: Mapping[str, str] | None = None, collect: bool = False) -> BatchPrediction:
    """Forecast every row of the window (or its time range) with the registered model on the
    cluster (Ray Data ``map_batches``), write the predictions to the lake (``params.write``),
    record the run in ``batch_predictions`` and return what it did. With ``collect`` the result
    also holds the predictions as one forecast table (``table``) and its metrics are
    :func:`app.train.evaluate.table_metrics` of it; otherwise they are summed on the cluster."""
    from app.preprocess.pipeline import feature_set_doc
    from app.train.batch_inference import RegisteredModel, actors_for, collect_forecasts, predict_dataset, window_dataset
    from app.train.evaluate import table_metrics
    from app.train.pipeline import latest_feature_set_id

    started = time.monotonic()
    name = params.model_name or settings.control.model_name
    version = resolve_version(settings, name, params.version, params.alias)
    fs_id = params.feature_set_id or latest_feature_set_id(settings)
    source = RegisteredModel(settings.tracking_url, name, version, str(settings.model_cache_path))
    start, end = (None if t is None else t.isoformat() for t in (params.start, params.end))
    doc = feature_set_doc(settings, fs_id)
    actors = actors_for(int(doc.get("rows", {}).get(params.window, 0)), params.max_actors)
    predictions = predict_dataset(window_dataset(settings, doc, params.window), source, start=start, end=end, max_actors=actors).materialize()
    relative, files = None, 0
    if params.write:
        relative = predictions_path(name, version, fs_id, window_label(params.window, params.start, params.end))
        files = write_predictions(settings, predictions, relative)
    table = collect_forecasts(predictions) if collect else None
    metrics = table_metrics(table, scored_keys(table.columns)) if table is not None else pooled_scores(predictions)
    rows = len(table) if table is not None else predictions.count()
    result = BatchPrediction(name, version, fs_id, params.window, rows, relative, files, metrics, table=table)
    result.elapsed_s = round(time.monotonic() - started, 2)
    if relative is not None:
        record(settings, result, params, run_ids)
    return result


def write_predictions(settings: Settings, predictions: Any, relative: str) -> int:
    """Write the predictions Dataset to the lake directory ``relative`` (its old files removed
    first: a run again replaces the last one); the number of files."""
    from app.lake import Lake

    lake = Lake.from_url(settings.lake_url)
    lake.filesystem.delete_dir_contents(lake.path(relative), missing_dir_ok=True)
    predictions.write_parquet(lake.path(relative), filesystem=lake.filesystem, compression="zstd")
    return len(lake.list_files(relative))


def _sums(batch: Any) -> Any:
    """One row per batch: per forecast key with outcomes, the squared and absolute errors of the
    forecast and of persistence, summed, and the rows."""
    import numpy as np
    import pandas as pd

    out: dict[str, list[float]] = {"rows": [float(len(batch))]}
    for key in scored_keys(batch.columns):
        actual = batch[target_column_of(key)].to_numpy(dtype=np.float64)
        err, persist = batch[key].to_numpy(dtype=np.float64) - actual, batch[key.rsplit("_", 1)[0]].to_numpy(dtype=np.float64) - actual
        out |= {f"sq_{key}": [float(np.sum(err**2))], f"abs_{key}": [float(np.sum(np.abs(err)))], f"psq_{key}": [float(np.sum(persist**2))], f"pabs_{key}": [float(np.sum(np.abs(persist)))]}
    return pd.DataFrame(out)


def target_column_of(key: str) -> str:
    """The outcome column of forecast ``key`` (``air_temp_c_15min`` -> ``target_air_temp_c_15min``)."""
    variable, horizon = key.rsplit("_", 1)
    return target_column(variable, int(horizon.removesuffix("min")))


def scored_keys(columns: Any) -> list[str]:
    """The forecast keys of a forecast table that have their outcomes (``target_<key>``) next to them."""
    names = set(columns)
    return [c for c in columns if c.endswith("min") and f"target_{c}" in names and c.rsplit("_", 1)[0] in names]


def pooled_scores(predictions: Any) -> dict[str, float]:
    """RMSE, MAE and skill against persistence per forecast key, pooled over every row, summed
    on the cluster (batch by batch; the driver adds a row per batch)."""
    import numpy as np

    sums = predictions.map_batches(_sums, batch_format="pandas").to_pandas().sum()
    rows = float(sums.get("rows", 0.0))
    metrics: dict[str, float] = {}
    for key in sorted({c.removeprefix("sq_") for c in sums.index if c.startswith("sq_")}):
        if rows <= 0:
            break
        rmse, p_rmse = float(np.sqrt(sums[f"sq_{key}"] / rows)), float(np.sqrt(sums[f"psq_{key}"] / rows))
        metrics |= {f"rmse_{key}": rmse, f"mae_{key}": float(sums[f"abs_{key}"] / rows), f"persistence_rmse_{key}": p_rmse, f"skill_{key}": 1.0 - rmse / p_rmse if p_rmse > 0 else 0.0}
    return metrics


def record(settings: Settings, result: BatchPrediction, params: BatchPredictParams, run_ids: Mapping[str, str] | None) -> None:
    """Upsert the run's ``batch_predictions`` document (``_id``: the lake directory)."""
    from app.lake import Lake
    from app.metadata import open_metadata

    doc = {
        **{k: v for k, v in result.summary().items() if k != "relative_path"},
        "path": Lake.from_url(settings.lake_url).path(str(result.relative_path)),
        "start": params.start.isoformat() if params.start else None,
        "end": params.end.isoformat() if params.end else None,
        "lake_url": settings.lake_url,
        "created_at": datetime.now(timezone.utc),
        "lineage": dict(run_ids or {}),
    }
    store = open_metadata(settings.metadata_url)
    try:
        store.collection(BATCH_PREDICTIONS).update_one({"_id": result.relative_path}, {"$set": doc}, upsert=True)
    finally:
        store.close()
