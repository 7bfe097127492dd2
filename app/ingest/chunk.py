"""One sink chunk's readings as one Arrow table, deduplicated and split by greenhouse-day.

A chunk is tens of thousands of readings. Their columns come from the bulk parser
(:mod:`app.contracts.reading_columns`); the few readings it leaves to the contract's own check come
as row dicts. Everything after that (the greenhouse-day of each reading, the duplicates within the
chunk, the split into one file per greenhouse-day) runs on whole columns. The sink spent most of
its time making a Python object per reading before (and the garbage collector walking them).

Only the check against readings already in the lake touches keys one by one, and only for
greenhouse-days that hold some: a backlog of new days pays nothing for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from app.bus import Message
from app.contracts.reading_columns import PlainReadings
from app.ingest.dedupe import DayKey, DayKeys, Keys
from app.ingest.records import RAW_SCHEMA, plain_table

GREENHOUSE = "greenhouse_id"
POSITION = "position"  # the reading's message in the chunk
CHUNK_SCHEMA = RAW_SCHEMA.append(pa.field(GREENHOUSE, pa.string(), nullable=False)).append(pa.field(POSITION, pa.int64(), nullable=False))
MS_PER_DAY = 86_400_000
_EPOCH_DAY = date(1970, 1, 1)


@dataclass(frozen=True)
class SlowRow:
    """A reading the contract checked alone: its message's position, greenhouse and lake row."""

    position: int
    greenhouse_id: str
    row: dict


def chunk_table(plain: PlainReadings, slow: Sequence[SlowRow], messages: Sequence[Message]) -> pa.Table:
    """The chunk's valid readings in message order, with :data:`CHUNK_SCHEMA`: the lake's columns,
    the greenhouse and the message's position."""
    tables = []
    if len(plain):
        table = plain_table(plain, np.arange(len(plain)), [messages[p] for p in plain.positions.tolist()])
        tables.append(table.append_column(GREENHOUSE, plain.greenhouse_id).append_column(POSITION, pa.array(plain.positions, pa.int64())))
    if slow:
        table = pa.Table.from_pylist([s.row for s in slow], schema=RAW_SCHEMA)
        tables.append(table.append_column(GREENHOUSE, pa.array([s.greenhouse_id for s in slow], pa.string())).append_column(POSITION, pa.array([s.position for s in slow], pa.int64())))
    if not tables:
        return CHUNK_SCHEMA.empty_table()
    table = pa.concat_tables(tables).cast(CHUNK_SCHEMA)
    return table.sort_by(POSITION) if len(tables) > 1 else table


@dataclass(frozen=True)
class DayRows:
    """The rows (indexes into the chunk table, in message order) of one greenhouse-day."""

    key: DayKey
    rows: np.ndarray


class ChunkColumns:
    """The columns of a chunk table that deduplication and the split work on, made once."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table.combine_chunks()  # one dictionary per column when encoded below
        self.ts_ms = table["ts"].cast(pa.int64()).to_numpy()
        self.day = self.ts_ms // MS_PER_DAY
        self.devices = device_keys(self.table["device_id"], self.ts_ms)
        self.device_code = self.devices.codes

    def days(self) -> list[DayRows]:
        """The chunk's greenhouse-days, sorted, each with its rows in message order."""
        if not self.table.num_rows:
            return []
        greenhouses = pc.dictionary_encode(self.table[GREENHOUSE]).combine_chunks()
        names = greenhouses.dictionary.to_pylist()
        codes = greenhouses.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        first_day, span = int(self.day.min()), int(self.day.max() - self.day.min()) + 1
        unique, inverse = np.unique(codes * span + (self.day - first_day), return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse, minlength=len(unique)))[:-1]
        pairs = [(int(u) // span, first_day + int(u) % span) for u in unique.tolist()]
        found = [DayRows((names[g], _EPOCH_DAY + timedelta(days=d)), rows) for (g, d), rows in zip(pairs, np.split(order, bounds), strict=True)]
        return sorted(found, key=lambda d: d.key)

    def first_of_each_key(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` (one greenhouse-day, message order) without the later copies of a
        ``(device_id, ts)`` met earlier in the chunk."""
        key = self.device_code[rows] * MS_PER_DAY + (self.ts_ms[rows] - self.day[rows] * MS_PER_DAY)
        _, first = np.unique(key, return_index=True)  # a stable sort: the first copy's index
        return rows[np.sort(first)]

    def keys(self, rows: np.ndarray) -> Keys:
        """The dedupe keys ``(device_id, ts_ms)`` of ``rows``."""
        return self.devices.take(rows)

    def lake_table(self, rows: np.ndarray) -> pa.Table:
        """``rows`` as a lake file's table (:data:`RAW_SCHEMA`), sorted by time then device."""
        picked = self.table.take(pa.array(rows, pa.int64())).select(RAW_SCHEMA.names)
        return picked.sort_by([("ts", "ascending"), ("device_id", "ascending")])


def unseen(keys: Keys, rows: np.ndarray, *known: DayKeys | None) -> tuple[np.ndarray, Keys]:
    """The rows, and their keys, whose key none of the ``known`` holds."""
    held = np.zeros(len(rows), dtype=bool)
    for day_keys in known:
        if day_keys:
            held |= day_keys.contains(keys)
    if not held.any():
        return rows, keys
    keep = np.flatnonzero(~held)
    return rows[keep], keys.take(keep)


def device_keys(device_id: pa.ChunkedArray | pa.Array, ts_ms: np.ndarray) -> Keys:
    """The keys of a ``device_id`` column and its times."""
    encoded = pc.dictionary_encode(device_id)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    return Keys(encoded.dictionary.to_pylist(), encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), ts_ms)
