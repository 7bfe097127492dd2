"""Lakes for the drift tests: simulated readings written straight into the raw lake (no bus), the
same readings shifted, and a feature set's baseline recorded without Ray."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd

from app.config import Settings
from app.contracts.reading import validate_reading
from app.ingest.records import reading_row, rows_to_table
from app.lake import Lake
from app.metadata import FEATURE_SETS, open_metadata
from app.preprocess.features import feature_columns, feature_table
from app.preprocess.pipeline import RAW_COLUMNS, PreprocessParams, column_stats, raw_partitions
from app.sim.fleet import FleetSimulator
from app.sim.weather import OutdoorWeather, Tmy3Weather

START = datetime(2026, 3, 10, tzinfo=UTC)


class RepeatingDay:
    """The real TMY3 weather of the first day after ``start``, repeated every day: a stationary
    climate, so that one day of readings is a fair sample of the others (real weather changes
    enough from day to day to move a 1-day PSI past 0.25 by itself)."""

    def __init__(self, start: datetime) -> None:
        self.start = start
        self.weather = Tmy3Weather(start)

    def at(self, when: datetime) -> OutdoorWeather:
        return self.weather.at(self.start + (when - self.start) % timedelta(days=1))


def simulated_readings(days: float, *, start: datetime = START, greenhouses: int = 2, seed: int = 1) -> list[dict[str, Any]]:
    """``greenhouses`` simulated greenhouses' readings in a stationary climate (:class:`RepeatingDay`),
    one step a minute for ``days``."""
    fleet = FleetSimulator(greenhouses, start, step_s=60, seed=seed, weather=RepeatingDay(start))
    return [r for step in fleet.iter_steps(days * 86_400) for r in step]


def shifted(readings: list[dict[str, Any]], *, temp_k: float = 4.0, rh_points: float = -15.0) -> list[dict[str, Any]]:
    """The readings with indoor and outdoor temperature raised by ``temp_k`` and both relative
    humidities moved by ``rh_points`` (clipped to 0..100): a new climate, or miscalibrated sensors."""
    out = []
    for r in readings:
        m = dict(r["measurements"])
        for name in ("air_temp_c", "outside_temp_c"):
            if name in m:
                m[name] = round(m[name] + temp_k, 2)
        for name in ("rh_pct", "outside_rh_pct"):
            if name in m:
                m[name] = round(min(100.0, max(0.0, m[name] + rh_points)), 2)
        out.append({**r, "measurements": m})
    return out


def write_readings(lake: Lake, readings: list[dict[str, Any]], *, topic: str = "drift-test") -> int:
    """Validate ``readings`` and write one raw Parquet file per greenhouse-day; the rows written."""
    groups: dict[tuple[str, date], list[dict[str, Any]]] = defaultdict(list)
    for offset, value in enumerate(readings):
        reading = validate_reading(value, now=datetime(2100, 1, 1, tzinfo=UTC))
        groups[(reading.greenhouse_id, reading.ts.date())].append(reading_row(reading, topic, 0, offset, reading.ts_ms))
    for (greenhouse_id, day), rows in groups.items():
        lake.write_parquet(rows_to_table(rows), f"{Lake.raw_partition(greenhouse_id, day)}/{topic}-{day.isoformat()}.parquet")
    return sum(len(rows) for rows in groups.values())


def record_baseline(settings: Settings, feature_set_id: str, params: PreprocessParams) -> dict[str, Any]:
    """A ``feature_sets`` document for the raw lake's readings in ``params``' date range, built with
    the feature engine in this process (pandas, no Ray) and the preprocess job's own statistics."""
    lake = Lake.from_url(settings.lake_url)
    params = params.with_step(60) if params.step_s == "auto" else params
    frames = [feature_table(lake.read_table(paths, columns=RAW_COLUMNS), greenhouse_id, params.feature_params()).to_pandas() for greenhouse_id, paths in sorted(raw_partitions(lake, params).items())]
    frame = pd.concat(frames, ignore_index=True)
    columns = [c for c in frame.columns if c not in ("greenhouse_id", "ts")]
    doc = {
        "_id": feature_set_id,
        "created_at": datetime.now(UTC),
        "params": params.model_dump(mode="json"),
        "feature_columns": feature_columns(),
        "rows": {"train": len(frame), "validation": 0},
        "stats": column_stats(frame, [c for c in feature_columns() if c in columns]),
        "lake_url": settings.lake_url,
    }
    store = open_metadata(settings.metadata_url)
    store.collection(FEATURE_SETS).insert_one(doc)
    return doc
