"""The lake sink's memory of readings already in the lake, bounded.

The sink drops a reading whose ``(device_id, ts_ms)`` the lake already holds for its
greenhouse-day. Those keys are read from the lake the first time a greenhouse-day is met and kept
here, least recently used first out, within two bounds:

- at most ``max_days`` greenhouse-days (default 64: a day of 64 greenhouses, or a week of 9), and
- at most ``max_keys`` keys in all (default 500,000, about 4 MB; a greenhouse-day of 3 devices
  at one reading a minute holds 4,320).

The greenhouse-day in use is never dropped, even when it alone is over ``max_keys``. Forgetting
is safe: a greenhouse-day met again is read from the lake again, which holds every committed file.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np

DayKey = tuple[str, date]
"""A greenhouse-day: ``(greenhouse_id, day)`` (the UTC day of the reading's ``ts``)."""

MAX_DAYS = 64
MAX_KEYS = 500_000
_NO_TIMES = np.zeros(0, np.int64)


@dataclass(frozen=True)
class Keys:
    """Dedupe keys in columns: key ``i`` is ``(names[codes[i]], ts_ms[i])``, a device id (its
    code in ``names``) and an epoch-millisecond time."""

    names: Sequence[str]
    codes: np.ndarray
    ts_ms: np.ndarray

    @classmethod
    def of(cls, pairs: Sequence[tuple[str, int]]) -> Keys:
        """The keys of ``(device_id, ts_ms)`` pairs."""
        names = sorted({device for device, _ in pairs})
        code = {name: i for i, name in enumerate(names)}
        return cls(names, np.array([code[d] for d, _ in pairs], np.int64), np.array([t for _, t in pairs], np.int64))

    def __len__(self) -> int:
        return len(self.ts_ms)

    def pairs(self) -> list[tuple[str, int]]:
        """The keys as ``(device_id, ts_ms)`` tuples (for people and tests: the sink never needs them)."""
        return [(self.names[c], t) for c, t in zip(self.codes.tolist(), self.ts_ms.tolist(), strict=True)]

    def take(self, rows: np.ndarray) -> Keys:
        return Keys(self.names, self.codes[rows], self.ts_ms[rows])

    def by_device(self) -> list[tuple[str, np.ndarray]]:
        """``(device_id, the positions of its keys)`` for each device present."""
        order = np.argsort(self.codes, kind="stable")
        present, starts = np.unique(self.codes[order], return_index=True)
        return [(self.names[int(code)], rows) for code, rows in zip(present, np.split(order, starts[1:]), strict=True)]


class DayKeys:
    """The keys of one greenhouse-day as one sorted array of epoch milliseconds per device:
    8 bytes a key, and looked up a whole chunk at a time."""

    def __init__(self, keys: Keys | None = None) -> None:
        self._times: dict[str, np.ndarray] = {}
        self.size = 0
        if keys is not None:
            self.update(keys)

    def __len__(self) -> int:
        return self.size

    def update(self, keys: Keys) -> None:
        """Add ``keys``."""
        for device, rows in keys.by_device():
            held = self._times.get(device, _NO_TIMES)
            merged = np.union1d(held, keys.ts_ms[rows])
            self._times[device] = merged
            self.size += len(merged) - len(held)

    def contains(self, keys: Keys) -> np.ndarray:
        """For each of ``keys``, whether it is held."""
        found = np.zeros(len(keys), dtype=bool)
        if not self.size:
            return found
        for device, rows in keys.by_device():
            held = self._times.get(device)
            if held is not None:
                at = np.searchsorted(held, keys.ts_ms[rows]).clip(max=len(held) - 1)
                found[rows] = held[at] == keys.ts_ms[rows]
        return found


class SeenKeys:
    """:class:`DayKeys` per greenhouse-day, loaded on demand, bounded (see the module)."""

    def __init__(self, load: Callable[[str, date], DayKeys], *, max_days: int = MAX_DAYS, max_keys: int = MAX_KEYS) -> None:
        if max_days < 1 or max_keys < 1:
            raise ValueError("max_days and max_keys must be at least 1")
        self._load = load
        self.max_days = max_days
        self.max_keys = max_keys
        self._days: OrderedDict[DayKey, DayKeys] = OrderedDict()
        self._keys = 0
        self.loads = 0  # how often a greenhouse-day was read from the lake (for tests and stats)

    def __len__(self) -> int:
        """Keys held in all."""
        return self._keys

    def __contains__(self, day_key: object) -> bool:
        """Whether a greenhouse-day ``(greenhouse_id, day)`` is held (:meth:`get` reads no lake)."""
        return day_key in self._days

    @property
    def days(self) -> int:
        """Greenhouse-days held."""
        return len(self._days)

    def get(self, greenhouse_id: str, day: date) -> DayKeys:
        """The keys of one greenhouse-day (read from the lake when not held); the caller only reads them."""
        key = (greenhouse_id, day)
        seen = self._days.get(key)
        if seen is None:
            seen = self._load(greenhouse_id, day)
            self.loads += 1
            self._days[key] = seen
            self._keys += len(seen)
            self._evict(keep=key)
        else:
            self._days.move_to_end(key)
        return seen

    def clear(self) -> None:
        """Forget every greenhouse-day (each is read from the lake again when next met)."""
        self._days.clear()
        self._keys = 0

    def add(self, greenhouse_id: str, day: date, keys: Keys) -> None:
        """Remember keys just committed to the lake; a greenhouse-day not held is left to be read
        from the lake when next met (it holds them now)."""
        seen = self._days.get((greenhouse_id, day))
        if seen is None:
            return
        before = len(seen)
        seen.update(keys)
        self._keys += len(seen) - before
        self._evict(keep=(greenhouse_id, day))

    def _evict(self, keep: DayKey) -> None:
        while len(self._days) > 1 and (len(self._days) > self.max_days or self._keys > self.max_keys):
            oldest = next(iter(self._days))
            if oldest == keep:
                self._days.move_to_end(oldest)
                continue
            self._keys -= len(self._days.pop(oldest))
