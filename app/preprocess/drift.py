"""The drift check: the newest raw lake partitions against a feature set's stored baseline, plus the
online forecast error; one ``drift_reports`` document per check.

:func:`run_drift_check`

1. takes the feature set (the newest, or one named) and its per-column baseline, recorded by the
   preprocess job (:func:`app.preprocess.pipeline.column_stats`: decile bin edges and the share of
   values per bin; older feature sets without them get a normal approximation from p01/p50/p99,
   :func:`app.preprocess.psi.normal_baseline`);
2. reads the newest ``settings.drift.recent_days`` of ``date=`` partitions of the raw lake with Ray
   Data and builds their features with the same engine and the feature set's own parameters
   (:func:`app.preprocess.pipeline.build_features_dataset`: one task per greenhouse; rows need their
   targets as in the feature set, so a greenhouse's last ``max(horizons)`` minutes are not judged);
3. counts each feature's values in its baseline bins inside the Ray Data tasks (only the counts
   reach the driver) and computes the PSI per feature (:mod:`app.preprocess.psi`). Calendar
   features (:data:`app.preprocess.spec.CALENDAR_COLUMNS`) are left out: the day of year and the
   sun's elevation move with the date, not with the process, and a recent window always differs
   from the baseline in them;
4. adds the online forecast RMSE at 15 minutes: the settled, non-shadow errors of the ``decisions``
   of the same number of days before ``now``;
5. drifted when at least ``min_drifted_features`` features have a PSI over ``psi_threshold`` (weather-
   driven features are reported but not counted unless ``count_weather_features``: against a
   week's baseline, one day of real weather put outside temperature at PSI 2-7 on every day
   tried; new weather shows in the forecast error instead, when the model does not cope), or the
   online RMSE is over ``forecast_rmse_threshold_c`` (with at least :data:`MIN_ONLINE_ERRORS`
   errors); records the report and returns it.

Emitting the Airflow asset event is the caller's (the DAG's task, or the job through the REST API).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from app.config import Settings
from app.lake import RAW_SENSORS, Lake
from app.metadata import DECISIONS, DRIFT_REPORTS, FEATURE_SETS, MetadataStore, open_metadata
from app.preprocess.pipeline import PreprocessParams, build_features_dataset
from app.preprocess.psi import baseline_of, bin_counts, finite, psi
from app.preprocess.spec import CALENDAR_COLUMNS

ONLINE_HORIZON_MIN = 15
"""The forecast horizon whose online error is judged (``settings.drift.forecast_rmse_threshold_c``)."""
MIN_ONLINE_ERRORS = 10
"""Fewer settled errors than this give an RMSE in the report but never a drift verdict."""
MAX_DECISIONS = 50_000
"""At most this many of the newest decisions are read for the online error."""


@dataclass
class DriftReport:
    """One drift check (see the module docstring); :meth:`document` is what ``drift_reports`` holds."""

    report_id: str
    created_at: datetime
    feature_set_id: str
    window: dict[str, Any]
    psi: dict[str, float | None]
    drifted_features: list[str]
    online: dict[str, Any]
    thresholds: dict[str, Any]
    drifted: bool
    reason: str
    features: dict[str, dict[str, Any]] = field(default_factory=dict)
    lineage: dict[str, str] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        """The ``drift_reports`` document (``_id`` is the report id)."""
        doc = asdict(self)
        doc["_id"] = doc.pop("report_id")
        return doc

    def summary(self) -> dict[str, Any]:
        """The job's one-line summary: the verdict, why, and the largest PSIs."""
        largest = sorted(((v, k) for k, v in self.psi.items() if v is not None), reverse=True)[:5]
        return {
            "report_id": self.report_id,
            "feature_set_id": self.feature_set_id,
            "drifted": self.drifted,
            "reason": self.reason,
            "drifted_features": self.drifted_features,
            "top_psi": {k: v for v, k in largest},
            "online_rmse_c": self.online.get("rmse_c"),
            "window": {k: self.window.get(k) for k in ("start", "end", "rows")},
        }


def newest_feature_set(store: MetadataStore, feature_set_id: str | None = None) -> dict[str, Any]:
    """The feature set ``feature_set_id``, or the newest one; ``LookupError`` when there is none."""
    sets = store.collection(FEATURE_SETS)
    doc = sets.find_one({"_id": feature_set_id}) if feature_set_id else sets.find_one(sort=[("created_at", -1)])
    if doc is None:
        raise LookupError(f"feature set {feature_set_id!r} not found" if feature_set_id else "no feature set recorded: run the preprocess job first")
    return doc


@dataclass(frozen=True)
class Window:
    """The judged time range (``recent_days`` ending at the lake's newest reading) and the ``date=``
    partitions read for it: from the start's day, whose hours before the start give the first
    judged rows their lags."""

    start: datetime
    end: datetime
    first_day: date
    last_day: date

    def as_dict(self) -> dict[str, Any]:
        """The window as the report stores it (ISO 8601 strings)."""
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "start_date": self.first_day.isoformat(), "end_date": self.last_day.isoformat()}


def recent_window(lake: Lake, recent_days: int) -> Window:
    """The newest ``recent_days`` x 24 h of raw readings in the lake (ending at the newest reading, so
    an hourly check right after midnight still judges a full window)."""
    by_day: dict[str, list[str]] = {}
    for path in lake.list_files(RAW_SENSORS):
        if "date=" in path:
            by_day.setdefault(path.split("date=", 1)[1].split("/", 1)[0], []).append(path)
    if not by_day:
        raise LookupError("the lake has no raw readings: nothing to check for drift")
    newest_day = max(by_day)
    times = lake.read_table(by_day[newest_day], columns=["ts"])["ts"]
    newest = pd.Timestamp(pc.max(times).as_py() if len(times) else newest_day)
    end = (newest.tz_localize("UTC") if newest.tzinfo is None else newest.tz_convert("UTC")).to_pydatetime()
    start = end - timedelta(days=recent_days)
    return Window(start, end, start.date(), date.fromisoformat(newest_day))


def drift_baselines(feature_set: Mapping[str, Any]) -> dict[str, tuple[list[float], list[float]]]:
    """Per judged feature (the feature set's feature columns but the calendar ones), its baseline
    ``(edges, fractions)``; columns without statistics (all null in the baseline) are left out."""
    stats = feature_set.get("stats") or {}
    out = {}
    for column in feature_set.get("feature_columns") or []:
        baseline = baseline_of(stats.get(column) or {})
        if column not in CALENDAR_COLUMNS and baseline is not None:
            out[column] = baseline
    return out


def recent_counts(dataset: Any, baselines: Mapping[str, tuple[list[float], list[float]]], *, since: datetime | None = None) -> tuple[dict[str, np.ndarray], dict[str, float], int]:
    """Bin counts per feature of a Ray Dataset of feature rows (those at or after ``since``), counted
    in its tasks; ``(counts, means, rows)`` (a feature's mean over its finite values, NaN without any)."""
    edges = {c: list(e) for c, (e, _) in baselines.items()}
    cutoff = pd.Timestamp(since) if since is not None else None

    def count(batch: pd.DataFrame) -> pd.DataFrame:
        if cutoff is not None:
            batch = batch[pd.to_datetime(batch["ts"], utc=True) >= cutoff]
        out = []
        for column, column_edges in edges.items():
            values = finite(batch[column].to_numpy(dtype=np.float64, na_value=np.nan))
            out.append({"feature": column, "counts": bin_counts(values, column_edges).tolist(), "sum": float(values.sum()), "rows": len(batch)})
        return pd.DataFrame(out, columns=["feature", "counts", "sum", "rows"])

    counts = {c: np.zeros(len(e) + 1, dtype=np.int64) for c, e in edges.items()}
    sums = dict.fromkeys(edges, 0.0)
    rows, first = 0, next(iter(edges), None)
    for part in dataset.map_batches(count, batch_format="pandas").iter_rows():
        column = str(part["feature"])
        counts[column] += np.asarray(part["counts"], dtype=np.int64)
        sums[column] += float(part["sum"])
        rows += int(part["rows"]) if column == first else 0
    means = {c: sums[c] / counts[c].sum() if counts[c].sum() else float("nan") for c in edges}
    return counts, means, rows


def online_forecast_error(store: MetadataStore, *, since: datetime, horizon_min: int = ONLINE_HORIZON_MIN) -> dict[str, Any]:
    """The RMSE of the settled, non-shadow forecast errors at ``horizon_min`` of the decisions made
    since ``since`` (``rmse_c`` None without any), and how many errors it has."""
    decisions = store.collection(DECISIONS).find({"decided_at": {"$gte": since}}, sort=[("decided_at", -1)], limit=MAX_DECISIONS)
    errors = [
        float(e["error_c"])
        for d in decisions
        for e in d.get("settled_errors") or []
        if not e.get("shadow") and e.get("horizon_min") == horizon_min and isinstance(e.get("error_c"), (int, float)) and math.isfinite(e["error_c"])
    ]
    rmse = math.sqrt(sum(x * x for x in errors) / len(errors)) if errors else None
    return {"rmse_c": rmse, "errors": len(errors), "horizon_min": horizon_min, "since": since}


WEATHER_PREFIXES = ("outside_", "solar_", "wind_", "par_", "inside_outside_")


def is_weather_feature(column: str) -> bool:
    """Whether ``column`` follows the weather (outdoor sensors, sun, wind, indoor-outdoor difference)."""
    return column.startswith(WEATHER_PREFIXES)


def _verdict(psi_by_feature: Mapping[str, float | None], online: Mapping[str, Any], thresholds: Mapping[str, Any]) -> tuple[list[str], bool, str]:
    """``(drifted features, drifted, reason)`` from the PSIs and the online error; weather-driven
    features count only with ``count_weather_features`` (their PSI is reported all the same)."""
    counted = {c: v for c, v in psi_by_feature.items() if thresholds.get("count_weather_features") or not is_weather_feature(c)}
    over = sorted((c for c, v in counted.items() if v is not None and v > thresholds["psi_threshold"]), key=lambda c: -(psi_by_feature[c] or 0))
    rmse, n_errors = online.get("rmse_c"), int(online.get("errors") or 0)
    by_psi = len(over) >= thresholds["min_drifted_features"]
    by_rmse = rmse is not None and n_errors >= MIN_ONLINE_ERRORS and rmse > thresholds["forecast_rmse_threshold_c"]
    reasons = []
    if by_psi:
        listed = ", ".join(f"{c} {psi_by_feature[c]:.2f}" for c in over[:5])
        reasons.append(f"{len(over)} features over PSI {thresholds['psi_threshold']} ({listed})")
    if by_rmse:
        reasons.append(f"online {ONLINE_HORIZON_MIN}-min forecast RMSE {rmse:.2f} C over {thresholds['forecast_rmse_threshold_c']} C ({n_errors} errors)")
    if not reasons:
        known = [(v, c) for c, v in psi_by_feature.items() if v is not None]
        top = f"largest PSI {max(known)[0]:.3f} ({max(known)[1]})" if known else "no PSI"
        online_text = f"online RMSE {rmse:.2f} C from {n_errors} errors" if rmse is not None else "no online errors"
        reasons.append(f"no drift: {len(over)} of {thresholds['min_drifted_features']} features needed over PSI {thresholds['psi_threshold']}, {top}; {online_text}")
    return over, by_psi or by_rmse, "; ".join(reasons)


def run_drift_check(settings: Settings, *, feature_set_id: str | None = None, now: datetime | None = None, run_ids: Mapping[str, str] | None = None) -> DriftReport:
    """Check the newest raw partitions for drift against a feature set (the newest by default) and
    record a ``drift_reports`` document (module docstring). ``run_ids`` are stored as ``lineage``.

    ``LookupError`` when there is no feature set, no raw reading, or no complete feature row in the
    window (too little data to judge)."""
    now = now or datetime.now(UTC)
    store = open_metadata(settings.metadata_url)
    lake = Lake.from_url(settings.lake_url)
    cfg = settings.drift
    feature_set = newest_feature_set(store, feature_set_id)
    window = recent_window(lake, cfg.recent_days)
    # the step the feature set was built on (60 s: sets recorded before the step followed the data)
    params = PreprocessParams.model_validate({"step_s": 60, **feature_set["params"], "start_date": window.first_day, "end_date": window.last_day})
    baselines = drift_baselines(feature_set)
    if not baselines:
        raise LookupError(f"feature set {feature_set['_id']} has no per-column statistics to compare with")
    counts, means, rows = recent_counts(build_features_dataset(lake, params), baselines, since=window.start)
    if rows == 0:
        raise LookupError(f"no complete feature rows in {window.start:%Y-%m-%d %H:%M}..{window.end:%Y-%m-%d %H:%M}: too little recent data to check for drift")
    psi_by = {c: _finite_or_none(psi(fractions, counts[c])) for c, (_, fractions) in baselines.items()}
    online = online_forecast_error(store, since=now - timedelta(days=cfg.recent_days))
    thresholds = {
        "psi_threshold": cfg.psi_threshold,
        "min_drifted_features": cfg.min_drifted_features,
        "forecast_rmse_threshold_c": cfg.forecast_rmse_threshold_c,
        "count_weather_features": cfg.count_weather_features,
    }
    drifted_features, drifted, reason = _verdict(psi_by, online, thresholds)
    stats = feature_set.get("stats") or {}
    report = DriftReport(
        report_id=f"drift-{now:%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}",
        created_at=now,
        feature_set_id=str(feature_set["_id"]),
        window={**window.as_dict(), "recent_days": cfg.recent_days, "rows": rows},
        psi=psi_by,
        drifted_features=drifted_features,
        online=online,
        thresholds=thresholds,
        drifted=drifted,
        reason=reason,
        features={
            c: {"baseline_mean": (stats.get(c) or {}).get("mean"), "recent_mean": _finite_or_none(means[c]), "histogram": "stored" if "bin_edges" in (stats.get(c) or {}) else "normal"}
            for c in baselines
        },
        lineage=dict(run_ids or {}),
    )
    store.collection(DRIFT_REPORTS).insert_one(report.document())
    return report


def _finite_or_none(value: float) -> float | None:
    """``value`` rounded for the report, None for NaN (MongoDB-wire servers may refuse NaN)."""
    return round(float(value), 6) if math.isfinite(value) else None
