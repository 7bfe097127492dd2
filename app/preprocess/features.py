"""The feature engine's front doors: training's feature table and serving's newest row.

All three run :func:`app.preprocess.engine.feature_rows`, the one definition of the features, and
differ only in what they hand over:

- :func:`feature_table`: a raw lake table of ONE greenhouse -> an Arrow table of every complete
  row with features, plans and targets (the preprocess job's Ray Data tasks); a greenhouse whose
  history lacks a sensor every row needs is a :class:`MissingSensorError`, not an empty table;
- :func:`greenhouse_features`: the same from and to pandas (notebooks, tests, the benchmark);
- :func:`latest_feature_row`: the newest complete row's features as a dict (serving, after every
  new reading, from the arrays the online window keeps; no pandas, ~2 ms for a 2-hour window).

Names and parameters live in :mod:`app.preprocess.spec`, raw arrays in :mod:`app.preprocess.raw`;
both are re-exported here, where callers have always found them.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import numpy as np

from app.preprocess.engine import FeatureRows, feature_rows, missing_sensors
from app.preprocess.raw import RawColumns, from_micros, micros
from app.preprocess.spec import FeatureParams, feature_columns

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = ["FeatureParams", "MissingSensorError", "RawColumns", "feature_columns", "feature_table", "from_micros", "greenhouse_features", "latest_feature_row", "micros"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


class MissingSensorError(ValueError):
    """A greenhouse's readings never report a measurement every feature row needs (``sensors``),
    so it can have no rows: said at once rather than as an empty table."""

    def __init__(self, greenhouse_id: str, sensors: tuple[str, ...]) -> None:
        self.greenhouse_id, self.sensors = greenhouse_id, tuple(sensors)
        why = " (its rolling statistics are features, although its own gaps may be filled)" if "solar_w_m2" in self.sensors else ""
        super().__init__(
            f"greenhouse {greenhouse_id!r} never reports {', '.join(self.sensors)}: every feature row needs "
            f"{'it' if len(self.sensors) == 1 else 'them'}{why}, so the greenhouse can have no rows; connect the sensor "
            "(or a weather feed) or leave the greenhouse out of the feature set"
        )

    def __reduce__(self) -> tuple[type[MissingSensorError], tuple[str, tuple[str, ...]]]:
        return type(self), (self.greenhouse_id, self.sensors)  # Ray sends it back to the driver pickled


def feature_table(raw: pa.Table, greenhouse_id: str, params: FeatureParams, *, training: bool = True) -> pa.Table:
    """Raw lake rows of ONE greenhouse -> ``greenhouse_id``, ``ts``, features, plans, targets.

    With ``training`` rows lacking any plan or target are dropped; otherwise only rows lacking a
    feature, so the latest step is kept. ``ts`` keeps the raw table's time unit.

    Raises:
        MissingSensorError: the rows never report a sensor every row needs (e.g. no solar)."""
    columns = RawColumns.from_arrow(raw)
    missing = missing_sensors(columns, params)
    if missing:
        raise MissingSensorError(greenhouse_id, missing)
    rows = feature_rows(columns, params, with_labels=True, require_labels=training)
    unit = getattr(raw.schema.field("ts").type, "unit", "us")
    return to_arrow(rows, greenhouse_id, unit)


def to_arrow(rows: FeatureRows, greenhouse_id: str, unit: str = "us") -> pa.Table:
    """Feature rows as an Arrow table, the schema pandas gave the first feature sets: a string
    ``greenhouse_id``, ``ts`` in ``unit`` (UTC) and float64 columns with nulls for NaN."""
    import pyarrow as pa

    n = len(rows)
    arrays = [
        pa.array([greenhouse_id], pa.large_string()).take(np.zeros(n, dtype=np.int64)),
        pa.array(rows.seconds * _PER_SECOND[unit], pa.timestamp(unit, tz="UTC")),
        *(pa.array(x, pa.float64(), from_pandas=True) for x in rows.values),  # NaN -> null
    ]
    return pa.Table.from_arrays(arrays, names=["greenhouse_id", "ts", *rows.columns])


def greenhouse_features(raw: pd.DataFrame, params: FeatureParams, *, training: bool = True) -> pd.DataFrame:
    """Raw readings of ONE greenhouse (a DataFrame with ``greenhouse_id``, ``device_id``, ``ts``
    and measurement columns) -> :func:`feature_table`'s rows as a DataFrame (empty for no rows,
    also when a sensor every row needs is never reported:
    :func:`~app.preprocess.engine.missing_sensors` names it)."""
    import pandas as pd

    if raw.empty:
        return pd.DataFrame()
    rows = feature_rows(RawColumns.from_frame(raw), params, with_labels=True, require_labels=training)
    unit = pd.to_datetime(raw["ts"], utc=True).dt.unit  # the caller's time resolution
    return to_arrow(rows, str(raw["greenhouse_id"].iloc[0]), unit).to_pandas()


def latest_feature_row(rows: list[dict] | RawColumns, params: FeatureParams) -> dict | None:
    """Feature columns and ``ts`` of the newest complete step of ONE greenhouse's raw ``rows``
    (dicts with ``device_id``, ``ts`` and measurement values, or :class:`RawColumns`): the last row
    :func:`greenhouse_features` gives with ``training=False``, without its plans and targets.
    ``None`` when no step has every needed feature."""
    raw = rows if isinstance(rows, RawColumns) else RawColumns.from_rows(rows)
    out = feature_rows(raw, params, newest_only=True)
    if not len(out):
        return None
    row = dict(zip(out.columns, out.values[:, -1].tolist()))
    row["ts"] = _EPOCH + timedelta(seconds=int(out.seconds[-1]))
    return row
