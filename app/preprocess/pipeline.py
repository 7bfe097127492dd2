"""The preprocess job's pipeline on Ray Data: raw lake -> feature set in the lake + metadata.

Reads raw Parquet through the lake's pyarrow filesystem (local or HDFS) with hive partitioning,
pruning ``date=`` partitions outside the requested range before any file is opened; builds each
greenhouse's features in parallel (one Ray Data task per greenhouse runs the feature engine on its
Arrow table: :func:`~app.preprocess.features.feature_table`); splits by time into three
windows with two global cutoffs; writes ``features/<id>/split=train|validation|test/`` with Ray
Data; records a ``feature_sets`` document with per-column statistics (the drift baseline).

The windows, oldest first: *train* (the boosters fit it), *validation* (early stopping, the
interval calibration and the Tune search) and *test* (untouched until the final evaluation and
the promotion gate: :func:`load_test_window` is its only reader). No row of one window has a
target inside the next one: rows whose horizon crosses a cutoff are left out.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, model_validator

from app.config import Settings
from app.contracts.reading import MEASUREMENT_NAMES
from app.contracts.vocabulary import plan_columns, target_columns
from app.lake import RAW_SENSORS, Lake
from app.preprocess.cadence import choose_step_s, usable_horizons
from app.preprocess.features import FeatureParams, feature_columns, feature_table
from app.preprocess.psi import histogram_baseline

if TYPE_CHECKING:
    import pyarrow as pa

FEATURES_ROOT = "features"
# How feature sets are written as Parquet. They are read again and again (training, tuning, batch
# inference) over the network from the lake. Their columns are mostly noisy float64s, which
# dictionaries do not shrink and general codecs barely do; byte-stream-split (the bytes of each
# value grouped by position, so exponents and high bytes line up) makes them compressible: with
# zstd about 3/4 of the snappy-only bytes Ray Data writes by default, written faster
# (bench/preprocess.py measures it). Dictionaries only for the greenhouse id.
FEATURES_PARQUET: dict[str, Any] = {"compression": "zstd", "use_byte_stream_split": True, "use_dictionary": ["greenhouse_id"]}
SPLITS = ("train", "validation", "test")
"""The feature set's windows, oldest first."""


class PreprocessParams(BaseModel):
    """Parameters of a feature build (recorded in the feature set's document, with the step and
    horizons actually used)."""

    step_s: int | Literal["auto"] = Field(
        default="auto", description="grid step in seconds, or 'auto': the smallest of 60, 120, 180, 300, 600, 900 s that the slowest device's reporting interval fits in"
    )
    horizons_min: tuple[int, ...] = Field(default=(5, 15, 30, 60), description="forecast horizons; those that are not whole multiples of the step are left out")
    max_fill_steps: int = Field(default=5, ge=0)
    validation_fraction: float = Field(default=0.2, gt=0, lt=0.9, description="share of the time range, after train, for early stopping and the search")
    test_fraction: float = Field(default=0.2, gt=0, lt=0.9, description="share of the time range, last, seen only by the final evaluation and promotion")
    start_date: date | None = None
    end_date: date | None = None
    latitude: float = 36.1
    longitude: float = -79.95

    @model_validator(mode="after")
    def _train_window_left(self) -> PreprocessParams:
        if self.validation_fraction + self.test_fraction >= 0.9:
            raise ValueError("validation_fraction + test_fraction must leave at least 10 % of the time range for training")
        if self.step_s != "auto" and not 10 <= self.step_s <= 3600:
            raise ValueError("step_s must be 'auto' or between 10 and 3600 seconds")
        return self

    def with_step(self, step_s: int) -> PreprocessParams:
        """These parameters on a grid of ``step_s``, keeping the horizons that are whole multiples
        of it (``ValueError`` when none is)."""
        return self.model_copy(update={"step_s": int(step_s), "horizons_min": usable_horizons(self.horizons_min, int(step_s))})

    def feature_params(self) -> FeatureParams:
        """The feature engine's parameters (the step must be resolved: :meth:`with_step`)."""
        if self.step_s == "auto":
            raise ValueError("the step is not chosen yet: PreprocessParams.with_step")
        return FeatureParams(step_s=self.step_s, horizons_min=tuple(self.horizons_min), max_fill_steps=self.max_fill_steps, latitude=self.latitude, longitude=self.longitude)


@dataclass
class FeatureSetInfo:
    feature_set_id: str
    path: str
    rows_train: int
    rows_validation: int
    rows_test: int
    feature_columns: list[str]
    target_columns: list[str]
    plan_columns: list[str]
    greenhouses: list[str]
    validation_start: str
    test_start: str
    source_batches: int = 0
    elapsed_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        for k in ("feature_columns", "target_columns", "plan_columns"):
            out[k] = len(out[k])
        return out


def _date_filter(params: PreprocessParams):
    start = params.start_date.isoformat() if params.start_date else None
    end = params.end_date.isoformat() if params.end_date else None

    def keep(partition: dict[str, str]) -> bool:
        day = partition.get("date")
        if day is None:
            return False
        return (start is None or day >= start) and (end is None or day <= end)

    return keep


def column_stats(frame: pd.DataFrame, columns: list[str]) -> dict[str, dict[str, Any]]:
    """Per column: mean, std, min, max, p01, p50, p99, the share of nulls, and the drift baseline's
    histogram: ``bin_edges`` (the deciles, repeated values merged) and ``bin_fracs`` (the share of
    values in each of the ``len(bin_edges) + 1`` bins; see :mod:`app.preprocess.psi`)."""
    stats: dict[str, dict[str, Any]] = {}
    for c in columns:
        x = frame[c].to_numpy(dtype=np.float64)
        finite = x[np.isfinite(x)]
        if finite.size == 0:
            stats[c] = {"null_frac": 1.0}
            continue
        p01, p50, p99 = np.percentile(finite, [1, 50, 99])
        stats[c] = {
            "mean": float(finite.mean()),
            "std": float(finite.std()),
            "min": float(finite.min()),
            "max": float(finite.max()),
            "p01": float(p01),
            "p50": float(p50),
            "p99": float(p99),
            "null_frac": float(1 - finite.size / max(1, x.size)),
        }
        stats[c]["bin_edges"], stats[c]["bin_fracs"] = histogram_baseline(finite)
    return stats


RAW_COLUMNS = ["device_id", "ts", *MEASUREMENT_NAMES]  # what the feature engine reads


def raw_partitions(lake: Lake, params: PreprocessParams) -> dict[str, list[str]]:
    """Raw Parquet files per greenhouse, pruned to the date range by their ``date=`` directory
    (partition pruning: files outside the range are never opened)."""
    keep = _date_filter(params)
    by_greenhouse: dict[str, list[str]] = {}
    for path in lake.list_files(RAW_SENSORS):
        parts = dict(p.split("=", 1) for p in path.split("/") if "=" in p)
        if "greenhouse_id" in parts and keep(parts):
            by_greenhouse.setdefault(parts["greenhouse_id"], []).append(path)
    return by_greenhouse


@dataclass(frozen=True)
class Survey:
    """What a first, light pass over the raw readings found: the step the data asks for and the
    greenhouses that cannot have feature rows (id -> why)."""

    step_s: int
    greenhouses: dict[str, list[str]]
    unusable: dict[str, str]


def survey_raw(lake: Lake, params: PreprocessParams) -> Survey:
    """Per greenhouse, in parallel (one Ray task each, reading a few columns): every device's
    reporting interval and the sensors it never reports. The step is ``params.step_s``, or with
    ``auto`` the one the slowest device needs (:func:`~app.preprocess.cadence.choose_step_s`)."""
    import ray

    from app.preprocess.cadence import device_intervals_s
    from app.preprocess.engine import missing_sensors
    from app.preprocess.raw import RawColumns

    partitions = raw_partitions(lake, params)
    if not partitions:
        raise LookupError("no raw readings in the requested date range")
    probe = params.with_step(60) if params.step_s == "auto" else params
    filesystem, columns = lake.filesystem, ["device_id", "ts", *MEASUREMENT_NAMES]

    @ray.remote(num_cpus=0.5)
    def look(paths: list[str]) -> tuple[list[float], tuple[str, ...]]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        raw = RawColumns.from_arrow(pa.concat_tables([pq.read_table(p, filesystem=filesystem, columns=columns) for p in paths]))
        return device_intervals_s(raw).tolist(), missing_sensors(raw, probe.feature_params())

    looked = dict(zip(partitions, ray.get([look.remote(paths) for paths in partitions.values()])))
    unusable = {gh: f"never reports {', '.join(missing)}" for gh, (_, missing) in looked.items() if missing}
    intervals = [i for gh, (found, _) in looked.items() if gh not in unusable for i in found]
    step_s = int(params.step_s) if params.step_s != "auto" else choose_step_s(intervals or [60.0])
    return Survey(step_s, {gh: paths for gh, paths in partitions.items() if gh not in unusable}, unusable)


def build_features_dataset(lake: Lake, params: PreprocessParams, greenhouses: Mapping[str, list[str]] | None = None):
    """A Ray Dataset of feature rows, one task per greenhouse (of ``greenhouses``: id -> raw
    files; default every greenhouse in the date range). ``params`` must have its step resolved.

    The lake is already partitioned by greenhouse, so instead of a hash shuffle
    (``read_parquet().groupby().map_groups()``, measured 9x slower than one pandas process at 1M
    rows on 2 cores) each task reads one greenhouse's pruned files through the lake's filesystem
    and builds its features; Ray Data schedules the tasks over the cluster and streams the result.
    """
    import ray

    fparams = params.feature_params()
    filesystem = lake.filesystem
    chosen = raw_partitions(lake, params) if greenhouses is None else greenhouses
    items = [{"greenhouse_id": g, "paths": paths} for g, paths in sorted(chosen.items())]
    if not items:
        raise LookupError("no raw readings in the requested date range")

    def build(batch: pd.DataFrame) -> pa.Table:
        import pyarrow as pa
        import pyarrow.parquet as pq

        out = []
        for greenhouse_id, paths in zip(batch["greenhouse_id"], batch["paths"]):
            raw = pa.concat_tables([pq.read_table(p, filesystem=filesystem, columns=RAW_COLUMNS) for p in paths])
            out.append(feature_table(raw, str(greenhouse_id), fparams))  # Arrow in, Arrow out: no pandas per row
        return pa.concat_tables(out)

    return ray.data.from_items(items, override_num_blocks=len(items)).map_batches(build, batch_size=1, batch_format="pandas")


def _utc(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def run_preprocess(settings: Settings, params: PreprocessParams, *, on_progress: Callable[[str], None] | None = None, run_ids: Mapping[str, str] | None = None) -> FeatureSetInfo:
    """Build and record a feature set from the raw lake (see the module docstring).

    ``run_ids`` (Airflow DAG, run and task, Ray submission: :func:`app.orchestration.run_ids.run_ids_from_env`)
    are stored as the document's ``lineage``."""
    from app.metadata import FEATURE_SETS, LAKE_BATCHES, open_metadata

    say = on_progress or (lambda msg: None)
    started = time.monotonic()
    lake = Lake.from_url(settings.lake_url)
    store = open_metadata(settings.metadata_url)
    if not lake.list_files(RAW_SENSORS):
        raise LookupError(f"the lake at {settings.lake_url} has no raw readings: run the sink first")

    batch_filter: dict[str, Any] = {"status": "committed", "kind": "raw_sensors"}
    if params.start_date or params.end_date:
        batch_filter["date"] = {k: v for k, v in (("$gte", params.start_date and params.start_date.isoformat()), ("$lte", params.end_date and params.end_date.isoformat())) if v}
    source_batches = sorted(str(d["_id"]) for d in store.collection(LAKE_BATCHES).find(batch_filter))
    digest = hashlib.sha256((params.model_dump_json() + "|".join(source_batches)).encode()).hexdigest()[:8]
    fs_id = f"fs-{datetime.now(timezone.utc).strftime('%Y%m%d%H%M%S')}-{digest}"

    say("surveying the raw readings: reporting intervals and sensors per greenhouse")
    survey = survey_raw(lake, params)
    for gh, why in sorted(survey.unusable.items()):
        say(f"leaving out greenhouse {gh}: it {why}, which every feature row needs")
    if not survey.greenhouses:
        raise LookupError(f"no greenhouse can have feature rows: {survey.unusable}")
    requested, params = params, params.with_step(survey.step_s)
    say(f"building features per greenhouse with Ray Data on a {params.step_s} s grid, horizons {list(params.horizons_min)} min")
    features = build_features_dataset(lake, params, survey.greenhouses).materialize()
    rows = features.count()
    if rows == 0:
        raise LookupError("no complete rows after cleaning: too little data in the range")
    ts_min, ts_max = _utc(features.min("ts")), _utc(features.max("ts"))
    cutoff = ts_min + (ts_max - ts_min) * (1 - params.validation_fraction - params.test_fraction)
    test_cutoff = ts_min + (ts_max - ts_min) * (1 - params.test_fraction)
    horizon = pd.Timedelta(minutes=max(params.horizons_min))

    def assign_split(batch: pd.DataFrame) -> pd.DataFrame:
        ts = pd.to_datetime(batch["ts"], utc=True)
        # a row may not look past its window's end: its targets and plans end at ts + horizon
        split = np.select([ts >= test_cutoff, (ts >= cutoff) & (ts + horizon < test_cutoff), ts + horizon < cutoff], ["test", "validation", "train"], "gap")
        out = batch.assign(split=split)
        return out[out["split"] != "gap"]

    say("splitting by time into train, validation and test windows and writing the feature set")
    split_ds = features.map_batches(assign_split, batch_format="pandas").materialize()
    relative = f"{FEATURES_ROOT}/{fs_id}"
    split_ds.write_parquet(lake.path(relative), filesystem=lake.filesystem, partition_cols=["split"], min_rows_per_file=100_000, **FEATURES_PARQUET)

    from ray.data.expressions import col, lit

    counts: dict[str, int] = {}
    greenhouses_seen: set[str] = set()
    for r in split_ds.groupby(["split", "greenhouse_id"]).count().take_all():
        counts[r["split"]] = counts.get(r["split"], 0) + int(r["count()"])
        greenhouses_seen.add(str(r["greenhouse_id"]))
    fraction = min(1.0, 200_000 / max(1, counts.get("train", 1)))
    train_only = split_ds.filter(expr=col("split") == lit("train"))
    sample = (train_only if fraction >= 1.0 else train_only.random_sample(fraction, seed=0)).to_pandas()
    cols_f, cols_p, cols_t = feature_columns(), plan_columns(params.horizons_min), target_columns(params.horizons_min)
    greenhouses = sorted(greenhouses_seen)
    doc = {
        "_id": fs_id,
        "created_at": datetime.now(timezone.utc),
        "params": params.model_dump(mode="json"),
        "requested_params": requested.model_dump(mode="json"),
        "left_out": survey.unusable,
        "source_batches": source_batches,
        "source_batch_count": len(source_batches),
        "rows": {split: int(counts.get(split, 0)) for split in SPLITS},
        "greenhouses": greenhouses,
        "feature_columns": cols_f,
        "plan_columns": cols_p,
        "target_columns": cols_t,
        "validation_start": cutoff.isoformat(),
        "test_start": test_cutoff.isoformat(),
        "time_range": {"start": ts_min.isoformat(), "end": ts_max.isoformat()},
        "path": lake.path(relative),
        "relative_path": relative,
        "stats": column_stats(sample, cols_f + cols_t),
        "lake_url": settings.lake_url,
        "lineage": dict(run_ids or {}),
    }
    store.collection(FEATURE_SETS).insert_one(doc)
    return FeatureSetInfo(
        fs_id,
        relative,
        doc["rows"]["train"],
        doc["rows"]["validation"],
        doc["rows"]["test"],
        cols_f,
        cols_t,
        cols_p,
        greenhouses,
        cutoff.isoformat(),
        test_cutoff.isoformat(),
        len(source_batches),
        round(time.monotonic() - started, 2),
    )


def feature_set_doc(settings: Settings, feature_set_id: str) -> dict[str, Any]:
    from app.metadata import FEATURE_SETS, open_metadata

    doc = open_metadata(settings.metadata_url).collection(FEATURE_SETS).find_one({"_id": feature_set_id})
    if doc is None:
        raise LookupError(f"feature set {feature_set_id!r} not found")
    return doc


def _read_split(settings: Settings, doc: Mapping[str, Any], split: str) -> pd.DataFrame:
    """One window of a feature set as a DataFrame sorted by greenhouse and time (empty when the
    window has no rows)."""
    lake = Lake.from_url(settings.lake_url)
    paths = lake.list_files(f"{doc['relative_path']}/split={split}")
    frame = lake.read_table(paths).to_pandas() if paths else pd.DataFrame()
    return frame.sort_values(["greenhouse_id", "ts"]).reset_index(drop=True) if not frame.empty else frame


def load_feature_set(settings: Settings, feature_set_id: str) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(train, validation, document) of a feature set, read with pyarrow (for small data). The
    test window is not among them: :func:`load_test_window` reads it, for the final evaluation."""
    doc = feature_set_doc(settings, feature_set_id)
    return _read_split(settings, doc, "train"), _read_split(settings, doc, "validation"), doc


def load_test_window(settings: Settings, feature_set_id: str) -> pd.DataFrame:
    """The untouched test window of a feature set: only the final evaluation and the promotion
    gate read it. A feature set built before there were three windows has none: ``LookupError``."""
    doc = feature_set_doc(settings, feature_set_id)
    if "test" not in doc.get("rows", {}):
        raise LookupError(f"feature set {feature_set_id!r} has no test window (built before there were three): run `python -m jobs.preprocess` again")
    return _read_split(settings, doc, "test")


def read_feature_set_ray(settings: Settings, feature_set_id: str, split: str):
    """The train or validation window of a feature set as a Ray Dataset (never the test window:
    it is read only by :func:`load_test_window`)."""
    import ray

    if split not in ("train", "validation"):
        raise ValueError(f"split must be 'train' or 'validation' (got {split!r}): the test window is read only by load_test_window")
    doc = feature_set_doc(settings, feature_set_id)
    lake = Lake.from_url(settings.lake_url)
    # Fractional CPUs for the read tasks: they run next to Train workers that hold whole CPUs (and
    # Serve replicas that hold fractions); whole-CPU reads could wait forever on a small cluster.
    return ray.data.read_parquet(lake.path(f"{doc['relative_path']}/split={split}"), filesystem=lake.filesystem, partitioning=None, ray_remote_args={"num_cpus": 0.25})
