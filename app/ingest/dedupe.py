"""The lake sink's memory of readings already in the lake, bounded.

The sink drops a reading whose ``(device_id, ts_ms)`` the lake already holds for its
greenhouse-day. Those keys are read from the lake the first time a greenhouse-day is met and kept
here, least recently used first out, within two bounds:

- at most ``max_days`` greenhouse-days (default 64: a day of 64 greenhouses, or a week of 9), and
- at most ``max_keys`` keys in all (default 500,000, about 100 MB; a greenhouse-day of 3 devices
  at one reading a minute holds 4,320).

The greenhouse-day in use is never dropped, even when it alone is over ``max_keys``. Forgetting
is safe: a greenhouse-day met again is read from the lake again, which holds every committed file.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import date

DayKey = tuple[str, date]
SeenKey = tuple[str, int]

MAX_DAYS = 64
MAX_KEYS = 500_000


class SeenKeys:
    """``(device_id, ts_ms)`` keys per greenhouse-day, loaded on demand, bounded (see the module)."""

    def __init__(self, load: Callable[[str, date], Iterable[SeenKey]], *, max_days: int = MAX_DAYS, max_keys: int = MAX_KEYS) -> None:
        if max_days < 1 or max_keys < 1:
            raise ValueError("max_days and max_keys must be at least 1")
        self._load = load
        self.max_days = max_days
        self.max_keys = max_keys
        self._days: OrderedDict[DayKey, set[SeenKey]] = OrderedDict()
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

    def get(self, greenhouse_id: str, day: date) -> set[SeenKey]:
        """The keys of one greenhouse-day (read from the lake when not held); the caller only reads it."""
        key = (greenhouse_id, day)
        seen = self._days.get(key)
        if seen is None:
            # interned device ids: one string per device instead of one per lake row
            seen = {(sys.intern(device), ts_ms) for device, ts_ms in self._load(greenhouse_id, day)}
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

    def add(self, greenhouse_id: str, day: date, keys: Iterable[SeenKey]) -> None:
        """Remember keys just committed to the lake; a greenhouse-day not held is left to be read
        from the lake when next met (it holds them now)."""
        seen = self._days.get((greenhouse_id, day))
        if seen is None:
            return
        before = len(seen)
        seen.update((sys.intern(device), ts_ms) for device, ts_ms in keys)
        self._keys += len(seen) - before
        self._evict(keep=(greenhouse_id, day))

    def _evict(self, keep: DayKey) -> None:
        while len(self._days) > 1 and (len(self._days) > self.max_days or self._keys > self.max_keys):
            oldest = next(iter(self._days))
            if oldest == keep:
                self._days.move_to_end(oldest)
                continue
            self._keys -= len(self._days.pop(oldest))
