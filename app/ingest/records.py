"""Readings as rows of the raw lake table (one row per reading, one column per known measurement)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from app.bus import Message
from app.contracts.reading import MEASUREMENT_NAMES, READING_SCHEMA_VERSION, Reading
from app.contracts.reading_columns import PlainReadings

# greenhouse_id and date are hive partition columns (in the path), so they are not in the files.
RAW_SCHEMA = pa.schema(
    [
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("ts", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("schema_version", pa.int16(), nullable=False),
        *[pa.field(name, pa.float64()) for name in MEASUREMENT_NAMES],
        pa.field("extra_json", pa.string(), metadata={"doc": "unknown measurements and fields, as sent"}),
        pa.field("bus_topic", pa.string(), nullable=False),
        pa.field("bus_partition", pa.int32(), nullable=False),
        pa.field("bus_offset", pa.int64(), nullable=False),
        pa.field("ingested_at", pa.timestamp("ms", tz="UTC"), nullable=False),
    ]
)
SCHEMA_FINGERPRINT = hashlib.sha256(RAW_SCHEMA.to_string(show_schema_metadata=False).encode()).hexdigest()[:16]


def reading_row(reading: Reading, topic: str, partition: int, offset: int, ingested_ms: int) -> dict[str, Any]:
    """The raw-table row of one reading."""
    row: dict[str, Any] = {"device_id": reading.device_id, "ts": reading.ts, "schema_version": reading.schema_version}
    row.update(reading.measurements.known())
    extra: dict[str, Any] = {}
    if reading.measurements.unknown():
        extra["measurements"] = reading.measurements.unknown()
    if reading.model_extra:
        extra.update(reading.model_extra)
    row["extra_json"] = orjson.dumps(extra).decode() if extra else None
    row["bus_topic"] = topic
    row["bus_partition"] = partition
    row["bus_offset"] = offset
    row["ingested_at"] = datetime.fromtimestamp(ingested_ms / 1000.0, tz=timezone.utc)
    return row


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows (as made by :func:`reading_row`) to a table with :data:`RAW_SCHEMA`, sorted by time."""
    table = pa.Table.from_pylist(rows, schema=RAW_SCHEMA)
    return table.sort_by([("ts", "ascending"), ("device_id", "ascending")])


def plain_table(plain: PlainReadings, picks: Sequence[int] | np.ndarray, messages: Sequence[Message]) -> pa.Table:
    """The raw-table rows of plain readings ``picks`` (indexes into ``plain``) whose bus messages
    are ``messages`` (same order), column by column: the same rows :func:`reading_row` makes of
    them (a plain reading has no unknown fields, so no ``extra_json``)."""
    n = len(picks)
    index = pa.array(np.asarray(picks, dtype=np.int64))
    columns: dict[str, pa.Array] = {
        "device_id": plain.device_id.take(index),
        "ts": pa.array(plain.ts_ms[np.asarray(picks, dtype=np.int64)], pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        "schema_version": pa.array(np.full(n, READING_SCHEMA_VERSION, dtype=np.int16)),
        **{name: plain.measurements[name].take(index) for name in MEASUREMENT_NAMES},
        "extra_json": pa.nulls(n, pa.string()),
        "bus_topic": pa.array([m.topic for m in messages], pa.string()),
        "bus_partition": pa.array([m.partition for m in messages], pa.int32()),
        "bus_offset": pa.array([m.offset for m in messages], pa.int64()),
        "ingested_at": pa.array([m.timestamp_ms for m in messages], pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
    }
    return pa.Table.from_pydict(columns, schema=RAW_SCHEMA)
