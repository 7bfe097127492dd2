"""Readings as rows of the raw lake table (one row per reading, one column per known measurement)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any

import orjson
import pyarrow as pa

from app.contracts.reading import MEASUREMENT_NAMES, Reading

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
