"""One greenhouse's raw readings as arrays: what the feature engine reads.

Rows are readings of several devices (climate, weather, actuators), each filling its own
measurement columns. :class:`RawColumns` holds them in arrival order as three arrays; serving's
online window appends to it as readings arrive, training builds it from a lake table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from operator import itemgetter
from typing import TYPE_CHECKING

import numpy as np

from app.contracts.reading import MEASUREMENT_NAMES

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_US = timedelta(microseconds=1)


def micros(ts: datetime) -> int:
    """Microseconds since the epoch of an aware time (what :class:`RawColumns` keeps)."""
    return (ts - _EPOCH) // _ONE_US


def from_micros(us: int) -> datetime:
    """The UTC time ``us`` microseconds after the epoch."""
    return _EPOCH + int(us) * _ONE_US


@dataclass(frozen=True)
class RawColumns:
    """One greenhouse's raw rows as arrays, in arrival order: ``times_us`` (microseconds since the
    epoch), ``devices`` (a code per device id) and ``values`` (one column per measurement name,
    NaN where absent). The online window keeps its rows in this form as they arrive."""

    times_us: np.ndarray
    devices: np.ndarray
    values: np.ndarray

    @classmethod
    def from_rows(cls, rows: list[dict], codes: dict[str, int] | None = None) -> RawColumns:
        """Raw-table rows (dicts with ``device_id``, ``ts`` and measurement values; ``codes`` maps
        device ids to codes and grows with new ones)."""
        codes = {} if codes is None else codes
        measurements = itemgetter(*MEASUREMENT_NAMES)
        times, devices, values = [], [], []
        for row in rows:
            times.append(micros(row["ts"]))
            devices.append(codes.setdefault(str(row.get("device_id")), len(codes)))
            try:
                values.append(measurements(row))  # online rows carry every name (None when absent)
            except KeyError:
                values.append(tuple(row.get(name) for name in MEASUREMENT_NAMES))
        return cls(
            np.array(times, dtype=np.int64),
            np.array(devices, dtype=np.int64),
            np.array(values, dtype=np.float64).reshape(len(values), len(MEASUREMENT_NAMES)),  # None -> NaN
        )

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> RawColumns:
        """A raw-table DataFrame (``device_id``, ``ts``, measurement columns; absent ones NaN;
        values that are not numbers become NaN)."""
        import pandas as pd

        ts = pd.to_datetime(frame["ts"], utc=True)
        times = ((ts - pd.Timestamp(_EPOCH)) // pd.Timedelta(microseconds=1)).to_numpy(np.int64)
        devices, _ = pd.factorize(frame["device_id"], use_na_sentinel=False)  # a missing id is one more device
        values = np.full((len(frame), len(MEASUREMENT_NAMES)), np.nan)
        for j, name in enumerate(MEASUREMENT_NAMES):
            if name in frame.columns:
                values[:, j] = pd.to_numeric(frame[name], errors="coerce").to_numpy(np.float64, na_value=np.nan)
        return cls(times, devices.astype(np.int64), values)

    @classmethod
    def from_arrow(cls, table: pa.Table) -> RawColumns:
        """A raw lake table (the sink's schema, or any with ``device_id``, ``ts`` and some
        measurement columns)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        ts = pc.cast(table.column("ts"), pa.timestamp("us", tz="UTC"), safe=False)  # as from_rows: whole microseconds
        times = pc.cast(ts, pa.int64()).to_numpy()
        devices = table.column("device_id").combine_chunks().dictionary_encode(null_encoding="encode").indices
        values = np.full((table.num_rows, len(MEASUREMENT_NAMES)), np.nan)
        for j, name in enumerate(MEASUREMENT_NAMES):
            if name in table.column_names:
                values[:, j] = pc.cast(table.column(name), pa.float64()).to_numpy()  # nulls -> NaN
        return cls(times.astype(np.int64), devices.to_numpy().astype(np.int64), values)

    def __len__(self) -> int:
        return len(self.times_us)

    def select(self, mask: np.ndarray) -> RawColumns:
        """The rows where ``mask`` holds (or at the given indices), in their order."""
        return RawColumns(self.times_us[mask], self.devices[mask], self.values[mask])

    def append(self, other: RawColumns) -> RawColumns:
        """These rows, then ``other``'s (device codes must come from the same mapping)."""
        return RawColumns(np.concatenate([self.times_us, other.times_us]), np.concatenate([self.devices, other.devices]), np.concatenate([self.values, other.values]))
