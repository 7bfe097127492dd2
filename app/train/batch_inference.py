"""Batch inference with Ray Data: a forecast model over a window of a feature set, on the cluster.

The window is read by Ray Data tasks and goes through ``map_batches`` with :class:`Forecasting`, a
callable class: each actor of the pool loads the model once (a registered version from MLflow,
through the node-local cache, or a model just trained, from the object store) and turns every
batch into a forecast table (:func:`app.train.evaluate.forecast_table`: row keys, current values,
targets, forecasts, interval edges). The result is a Ray Dataset of predictions: the batch
prediction job writes it to the lake (:mod:`app.train.batch_predict`); training's evaluation and
the promotion gate collect it (a narrow table, not the window) and score it
(:func:`collect_forecasts`), so their figures are exactly those of the same model predicting the
same rows in one process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.config import Settings
from app.train.evaluate import forecast_table, sorted_table
from app.train.model import ForecastModel

if TYPE_CHECKING:
    import pandas as pd

WINDOWS = ("train", "validation", "test")
"""The windows of a feature set (its ``split=`` directories)."""
READ_CPUS = 0.25
"""CPUs per read task: fractions, so reads fit next to Train workers and Serve replicas."""
ACTOR_CPUS = 0.5
"""CPUs reserved per inference actor (it predicts with one XGBoost thread)."""
BATCH_ROWS = 4096
ROWS_PER_ACTOR = 50_000
"""A window this long keeps one inference actor busy long enough to pay for starting another."""


@dataclass(frozen=True)
class RegisteredModel:
    """A registered version, loaded from MLflow (through the node-local cache ``cache_dir``)."""

    tracking_url: str
    name: str
    version: str
    cache_dir: str | None = None

    def load(self) -> ForecastModel:
        """The model, from this node's cache when it holds the version."""
        from app.tracking import load_forecast_model

        model: ForecastModel = load_forecast_model(self.tracking_url, f"models:/{self.name}/{self.version}", cache_dir=self.cache_dir)
        return model


@dataclass(frozen=True)
class StoredModel:
    """A model put in the Ray object store (a model just trained, not registered yet)."""

    ref: Any

    @classmethod
    def put(cls, model: ForecastModel) -> StoredModel:
        """Put ``model`` in the object store (a copy: later changes to ``model`` are not seen)."""
        import ray

        return cls(ray.put(model))

    def load(self) -> ForecastModel:
        import ray

        model: ForecastModel = ray.get(self.ref)
        return model


class Forecasting:
    """The ``map_batches`` callable: loads the model once per actor, forecasts each batch (rows
    outside ``[start, end)`` left out when given: ``ts`` bounds, UTC)."""

    def __init__(self, source: Any, start: str | None = None, end: str | None = None) -> None:
        self.model = source.load()
        self.model.set_threads(1)  # one CPU per actor: the pool is the parallelism
        self.start, self.end = start, end

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        return forecast_table(self.model, self._within(batch))

    def _within(self, batch: pd.DataFrame) -> pd.DataFrame:
        if self.start is None and self.end is None:
            return batch
        ts = utc(batch["ts"])
        keep = (ts >= utc(self.start)) if self.start else ts.notna()
        if self.end:
            keep &= ts < utc(self.end)
        return batch[keep.to_numpy()]


def utc(value: Any) -> Any:
    """A timestamp (string, datetime) or a Series of them in UTC (naive ones taken as UTC)."""
    import pandas as pd

    if isinstance(value, pd.Series):
        return pd.to_datetime(value, utc=True)
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def window_dataset(settings: Settings, doc: Mapping[str, Any], window: str) -> Any:
    """The ``window`` (train, validation or test) of the feature set ``doc`` as a Ray Dataset.
    Only evaluation, the promotion gate and the batch prediction job ask for the test window."""
    import ray

    from app.lake import Lake

    if window not in WINDOWS:
        raise ValueError(f"window must be one of {', '.join(WINDOWS)} (got {window!r})")
    lake = Lake.from_url(settings.lake_url)
    relative = f"{doc['relative_path']}/split={window}"
    if not doc.get("rows", {}).get(window) or not lake.list_files(relative):
        raise LookupError(f"feature set {doc['_id']!r} has no rows in its {window} window: build it from more data")
    return ray.data.read_parquet(lake.path(relative), filesystem=lake.filesystem, partitioning=None, ray_remote_args={"num_cpus": READ_CPUS})


def predict_dataset(dataset: Any, source: Any, *, start: str | None = None, end: str | None = None, max_actors: int = 2, actor_cpus: float = ACTOR_CPUS) -> Any:
    """The forecast tables of ``dataset``'s rows (a lazy Ray Dataset): ``map_batches`` over a pool
    of 1 to ``max_actors`` :class:`Forecasting` actors, each loading ``source``'s model once."""
    return dataset.map_batches(Forecasting, fn_constructor_args=(source, start, end), batch_format="pandas", batch_size=BATCH_ROWS, concurrency=(1, max(1, max_actors)), num_cpus=actor_cpus)


def actors_for(rows: int, max_actors: int) -> int:
    """How many inference actors a window of ``rows`` rows gets: one per :data:`ROWS_PER_ACTOR`
    rows begun, at least one, at most ``max_actors`` (each actor loads the model once)."""
    return max(1, min(max_actors, -(-rows // ROWS_PER_ACTOR)))


def collect_forecasts(predictions: Any) -> pd.DataFrame:
    """A predictions Dataset as one forecast table in the order a window is read (by greenhouse,
    then time), so that scores summed over rows come out exactly as in one process."""
    return sorted_table(predictions.to_pandas())


def forecast_window(dataset: Any, source: Any, *, rows: int | None = None, max_actors: int = 2) -> pd.DataFrame:
    """:func:`predict_dataset` then :func:`collect_forecasts`: the forecast table of a window
    (of about ``rows`` rows, when known: :func:`actors_for` sizes the pool)."""
    actors = max_actors if rows is None else actors_for(rows, max_actors)
    return collect_forecasts(predict_dataset(dataset, source, max_actors=actors))
