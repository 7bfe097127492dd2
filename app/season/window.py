"""A greenhouse's readings as they arrive, and its feature rows (as serving and training build them).

:class:`ReadingLog` keeps one greenhouse's readings (the wire contract's dicts) in arrival order,
all of them or only the last ``keep_min`` minutes (what serving's online window holds). Its
:meth:`~ReadingLog.latest_features` is the newest feature row the controller decides on, built by
the feature engine exactly as serving builds it (:func:`~app.preprocess.features.latest_feature_row`);
:meth:`~ReadingLog.frame` is the raw table training's feature engine reads.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from app.contracts.reading import MEASUREMENT_NAMES
from app.preprocess.features import FeatureParams, RawColumns, latest_feature_row, micros

if TYPE_CHECKING:
    import pandas as pd

_COLUMN = {name: j for j, name in enumerate(MEASUREMENT_NAMES)}


class ReadingLog:
    """One greenhouse's readings, oldest first; with ``keep_min`` only those of the last
    ``keep_min`` minutes before the newest (``None``: all)."""

    def __init__(self, greenhouse_id: str, keep_min: float | None = 125.0) -> None:
        self.greenhouse_id = greenhouse_id
        self.keep_us = None if keep_min is None else int(keep_min * 60e6)
        self._times: deque[int] = deque()
        self._devices: deque[int] = deque()
        self._values: deque[np.ndarray] = deque()
        self._codes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._times)

    def add(self, readings: Iterable[Mapping[str, Any]], ts: datetime) -> None:
        """The readings of this greenhouse among ``readings`` (others are skipped), all stamped
        ``ts`` (the simulator's step time: parsing each reading's string would cost more)."""
        us = micros(ts)
        for r in readings:
            if r["greenhouse_id"] != self.greenhouse_id:
                continue
            row = np.full(len(MEASUREMENT_NAMES), np.nan)
            for name, value in r["measurements"].items():
                j = _COLUMN.get(name)
                if j is not None and value is not None:
                    row[j] = float(value)
            self._times.append(us)
            self._devices.append(self._codes.setdefault(str(r["device_id"]), len(self._codes)))
            self._values.append(row)
        if self.keep_us is not None:
            while self._times and self._times[0] < us - self.keep_us:
                self._times.popleft()
                self._devices.popleft()
                self._values.popleft()

    def raw(self) -> RawColumns:
        """The readings as the feature engine reads them."""
        values = np.array(self._values) if self._values else np.zeros((0, len(MEASUREMENT_NAMES)))
        return RawColumns(np.fromiter(self._times, np.int64, len(self._times)), np.fromiter(self._devices, np.int64, len(self._devices)), values)

    def latest_features(self, params: FeatureParams) -> dict[str, Any] | None:
        """The newest complete feature row with its ``ts`` (``None`` until the log holds enough)."""
        return latest_feature_row(self.raw(), params) if self._times else None

    def frame(self) -> pd.DataFrame:
        """The readings as a raw table: ``greenhouse_id``, ``device_id``, ``ts`` and a column per
        measurement (NaN where the device does not report it)."""
        import pandas as pd

        names = {code: device for device, code in self._codes.items()}
        raw = self.raw()
        frame = pd.DataFrame(raw.values, columns=list(MEASUREMENT_NAMES))
        frame.insert(0, "ts", pd.to_datetime(raw.times_us, unit="us", utc=True))
        frame.insert(0, "device_id", [names[int(c)] for c in raw.devices])
        frame.insert(0, "greenhouse_id", self.greenhouse_id)
        return frame
