"""Online state for serving: the recent window of readings per greenhouse, and its latest features.

:class:`OnlineWindow` is plain Python (no Ray, no I/O) so it is tested directly; the Serve replica
feeds it from the sensor topic with :class:`SensorTopicFollower`, or from a window a caller sends.
Features come from the one feature engine (:mod:`app.preprocess.engine`), which training also
runs; :func:`~app.preprocess.features.latest_feature_row` takes its newest row from the arrays the
window appends readings to (~1.2-1.5 ms for a 2-hour window).
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from app.contracts.reading import MEASUREMENT_NAMES, Reading, ReadingError, reading_from_bus, validate_reading
from app.preprocess.features import FeatureParams, RawColumns, from_micros, latest_feature_row, micros

log = logging.getLogger(__name__)


def reading_to_row(reading: Reading) -> dict[str, Any]:
    """The raw-table columns the feature functions read, for one reading."""
    return {"greenhouse_id": reading.greenhouse_id, "device_id": reading.device_id, "ts": reading.ts, **reading.measurements.known()}


def parse_readings(values: Iterable[Any], greenhouse_id: str | None = None) -> list[Reading]:
    """Validate readings a caller sent; raise :class:`ReadingError` naming the first bad one."""
    out = []
    for i, value in enumerate(values):
        try:
            reading = validate_reading(value)
        except ReadingError as exc:
            raise ReadingError(f"readings[{i}]: {exc.reason}") from None
        if greenhouse_id is not None and reading.greenhouse_id != greenhouse_id:
            raise ReadingError(f"readings[{i}]: greenhouse_id {reading.greenhouse_id!r} is not {greenhouse_id!r}")
        out.append(reading)
    return out


MAX_GREENHOUSES = 1024
MAX_ROWS_PER_GREENHOUSE = 50_000
MAX_DEVICE_CODES = 20_000


class OnlineWindow:
    """Thread-safe recent readings per greenhouse (the last ``window_min`` minutes of each).

    Memory is bounded whatever arrives (a flood of made-up greenhouse or device ids, a device
    posting far faster than once a second):

    - time: each greenhouse keeps the ``window_min`` minutes before its newest reading;
    - ``max_rows_per_greenhouse`` (default 50,000: 2 h of 6 devices at one reading a second): past
      it, the rows that arrived first are dropped;
    - ``max_greenhouses`` (default 1,024): past it, the greenhouse whose newest reading is oldest
      is dropped whole;
    - ``max_device_codes`` (default 20,000): past it, the device-id codes are rebuilt from the
      devices still in some window.
    """

    def __init__(self, window_min: int = 120, *, max_greenhouses: int = MAX_GREENHOUSES, max_rows_per_greenhouse: int = MAX_ROWS_PER_GREENHOUSE, max_device_codes: int = MAX_DEVICE_CODES) -> None:
        if min(max_greenhouses, max_rows_per_greenhouse, max_device_codes) < 1:
            raise ValueError("the window's bounds must be at least 1")
        self.window = timedelta(minutes=window_min)
        self.max_greenhouses = max_greenhouses
        self.max_rows_per_greenhouse = max_rows_per_greenhouse
        self.max_device_codes = max_device_codes
        self._compact_codes_at = max_device_codes
        # each greenhouse's rows as arrays, appended as they arrive: a feature rebuild reads these
        self._cols: dict[str, RawColumns] = {}
        self._device_codes: dict[str, int] = {}
        self._latest: dict[str, datetime] = {}
        self._version: dict[str, int] = defaultdict(int)  # bumped whenever a greenhouse's rows change
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[tuple[Any, ...], dict[str, Any] | None]] = {}
        self._waiters: dict[str, list[tuple[datetime, Callable[[], None]]]] = defaultdict(list)
        self._positions: dict[str, dict[int, int]] = defaultdict(dict)  # greenhouse -> partition -> newest offset
        self.records = 0
        self.rejected = 0
        self.builds = 0  # feature rebuilds (cache misses), for /healthz and the bench

    def add(self, readings: Iterable[Reading]) -> None:
        due: list[Callable[[], None]] = []
        with self._lock:
            new: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for r in readings:
                new[r.greenhouse_id].append(reading_to_row(r))
                if r.ts > self._latest.get(r.greenhouse_id, r.ts - timedelta(seconds=1)):
                    self._latest[r.greenhouse_id] = r.ts
                self.records += 1
            for gh, added in new.items():
                self._version[gh] += 1
                cols = RawColumns.from_rows(added, self._device_codes)
                self._cols[gh] = self._cols[gh].append(cols) if gh in self._cols else cols
                self._cut(gh)
                waiters = self._waiters.get(gh)
                if waiters:
                    latest = self._latest[gh]
                    due += [callback for ts, callback in waiters if ts <= latest]
                    self._set_waiters(gh, [w for w in waiters if w[0] > latest])
            self._bound_greenhouses(keep=new.keys())
            if len(self._device_codes) > self._compact_codes_at:
                self._compact_device_codes()
        for callback in due:  # outside the lock: a callback may read the window
            try:
                callback()
            except Exception:  # a waiter that went away (e.g. its event loop closed)
                log.debug("online window: a waiter's callback failed", exc_info=True)

    def _cut(self, gh: str) -> None:
        """Bound one greenhouse's rows by time, then by count (the earliest arrivals go)."""
        cols = self._cols[gh]
        cutoff_us = micros(self._latest[gh] - self.window)
        if cols.times_us.min() < cutoff_us:
            cols = cols.select(cols.times_us >= cutoff_us)
        if len(cols) > self.max_rows_per_greenhouse:
            cols = cols.select(np.arange(len(cols) - self.max_rows_per_greenhouse, len(cols)))
        self._cols[gh] = cols

    def _bound_greenhouses(self, keep: Iterable[str]) -> None:
        """Drop the greenhouses whose newest reading is oldest while there are too many (never
        one of ``keep``, those just added to, unless they alone are too many)."""
        excess = len(self._latest) - self.max_greenhouses
        if excess <= 0:
            return
        kept = set(keep)
        order = sorted(self._latest, key=lambda g: (g in kept, self._latest[g]))
        for gh in order[:excess]:
            for table in (self._cols, self._latest, self._version, self._cache, self._positions):
                table.pop(gh, None)

    def _compact_device_codes(self) -> None:
        """Rebuild the device-id codes from the devices still in some window (codes only name
        devices, so renumbering changes no feature; cached features are dropped all the same)."""
        used = sorted({int(code) for cols in self._cols.values() for code in np.unique(cols.devices)})
        names = {code: device for device, code in self._device_codes.items()}
        remap = np.zeros(max(self._device_codes.values(), default=0) + 1, dtype=np.int64)
        remap[used] = np.arange(len(used))
        self._device_codes = {names[code]: new for new, code in enumerate(used)}
        for gh, cols in self._cols.items():
            self._cols[gh] = RawColumns(cols.times_us, remap[cols.devices], cols.values)
            self._version[gh] += 1
        self._compact_codes_at = max(self.max_device_codes, 2 * len(used))

    def _set_waiters(self, greenhouse_id: str, waiters: list[tuple[datetime, Callable[[], None]]]) -> None:
        if waiters:
            self._waiters[greenhouse_id] = waiters
        else:  # no empty lists left behind for every greenhouse id a caller ever named
            self._waiters.pop(greenhouse_id, None)

    def add_raw(self, values: Iterable[bytes]) -> None:
        """Bus message values (JSON readings); invalid ones are counted and skipped (the gateway
        already rejected them into the dead-letter topic)."""
        good = []
        for value in values:
            try:
                good.append(reading_from_bus(value))
            except ReadingError:  # not JSON (UndecodableReading) or not a valid reading
                self.rejected += 1
        self.add(good)

    def add_messages(self, messages: Iterable[Any]) -> None:
        """Bus messages (``value``, ``partition``, ``offset``): :meth:`add_raw`, and each
        greenhouse's newest offset per partition remembered for its decisions' lineage."""
        good = []
        positions: list[tuple[str, int, int]] = []
        for m in messages:
            try:
                reading = reading_from_bus(m.value)
            except ReadingError:
                self.rejected += 1
                continue
            good.append(reading)
            positions.append((reading.greenhouse_id, m.partition, m.offset))
        self.add(good)
        with self._lock:
            for gh, partition, offset in positions:
                known = self._positions[gh]
                known[partition] = max(offset, known.get(partition, -1))

    def provenance(self, greenhouse_id: str, as_of: datetime | None = None) -> dict[str, Any]:
        """Which readings a decision of ``greenhouse_id`` rests on: the window's first and last
        reading time and count (up to ``as_of``), and the newest bus offset per partition that
        fed the window."""
        with self._lock:
            cols = self._cols.get(greenhouse_id)
            offsets = {str(p): o for p, o in self._positions.get(greenhouse_id, {}).items()}
        if cols is not None and as_of is not None:
            cols = cols.select(cols.times_us <= micros(as_of))
        if cols is None or not len(cols):
            return {"count": 0, "bus_offsets": offsets}
        return {"first_ts": from_micros(int(cols.times_us.min())), "last_ts": from_micros(int(cols.times_us.max())), "count": len(cols), "bus_offsets": offsets}

    def greenhouses(self) -> list[str]:
        with self._lock:
            return sorted(self._latest)

    def latest_ts(self, greenhouse_id: str) -> datetime | None:
        with self._lock:
            return self._latest.get(greenhouse_id)

    def on_reaching(self, greenhouse_id: str, ts: datetime, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` once the greenhouse's newest reading is at or after ``ts``: at once
        (in the caller's thread) if it already is, else from the thread that adds that reading.

        Returns a function that cancels the wait (harmless after the call)."""
        with self._lock:
            latest = self._latest.get(greenhouse_id)
            if latest is None or latest < ts:
                entry = (ts, callback)
                self._waiters[greenhouse_id].append(entry)

                def cancel() -> None:
                    with self._lock:
                        waiters = self._waiters.get(greenhouse_id)
                        if waiters:
                            self._set_waiters(greenhouse_id, [w for w in waiters if w is not entry])

                return cancel
        callback()
        return lambda: None

    def rows(self, greenhouse_id: str, as_of: datetime | None = None) -> list[dict[str, Any]]:
        """The window's raw rows of ``greenhouse_id`` (up to ``as_of``), as :func:`reading_to_row` gives them."""
        with self._lock:
            cols = self._cols.get(greenhouse_id)
            devices = {code: device for device, code in self._device_codes.items()}
        if cols is None:
            return []
        if as_of is not None:
            cols = cols.select(cols.times_us <= micros(as_of))
        return [
            {"greenhouse_id": greenhouse_id, "device_id": devices[int(d)], "ts": from_micros(t), **{n: None if v != v else float(v) for n, v in zip(MEASUREMENT_NAMES, row)}}
            for t, d, row in zip(cols.times_us, cols.devices, cols.values)
        ]

    def features(self, greenhouse_id: str, params: FeatureParams, as_of: datetime | None = None) -> dict[str, Any] | None:
        """Latest features, cached until new readings arrive for that greenhouse.

        A cache hit copies nothing: when ``as_of`` does not cut the window (none, or at/after the
        newest reading), the key is the greenhouse's version; otherwise the rows up to ``as_of``
        are selected and keyed by their newest time and count."""
        with self._lock:
            cols = self._cols.get(greenhouse_id)
            if cols is None or not len(cols):
                return None
            whole = as_of is None or as_of >= self._latest[greenhouse_id]
            if whole:
                key: tuple[Any, ...] = ("all", self._version[greenhouse_id], params)
                cached = self._cache.get(greenhouse_id)
                if cached is not None and cached[0] == key:
                    return cached[1]
        if not whole:
            assert as_of is not None  # "whole" otherwise
            cols = cols.select(cols.times_us <= micros(as_of))
            if not len(cols):
                return None
            key = ("up_to", int(cols.times_us.max()), len(cols), params)
            cached = self._cache.get(greenhouse_id)
            if cached is not None and cached[0] == key:
                return cached[1]
        feats = latest_feature_row(cols, params)
        self.builds += 1
        self._cache[greenhouse_id] = (key, feats)
        return feats


class SensorTopicFollower:
    """Feeds an :class:`OnlineWindow` from the sensor topic on a daemon thread.

    Every replica follows the whole topic on its own (no group commits: it is a view, not a
    worker), starting ``backfill_records`` before each partition's end so a new replica has its
    window at once.
    """

    def __init__(self, bus: Any, topic: str, window: OnlineWindow, *, group_id: str, partitions: int = 4, backfill_records: int = 20_000, poll_timeout_s: float = 0.05) -> None:
        from app.bus import TopicPartition

        self.window = window
        self._bus = bus
        bus.create_topic(topic, partitions)  # idempotent; the follower may start before any device
        # A view: when retention has deleted part of the backfill, start at what is left (counted).
        self._consumer = bus.consumer(group_id, [topic], skip_lost=True)
        for partition, end in bus.end_offsets(topic).items():
            self._consumer.seek(TopicPartition(topic, partition), max(0, end - backfill_records))
        self._poll_timeout_s = poll_timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sensor-topic-follower", daemon=True)
        self.error: str | None = None
        self.last_poll_at: datetime | None = None

    def start(self) -> SensorTopicFollower:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                messages = self._consumer.poll(2000, self._poll_timeout_s)
                self.last_poll_at = datetime.now(timezone.utc)
                if messages:
                    self.window.add_messages(messages)
                self.error = None
            except Exception as exc:  # keep following; report in /healthz
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("sensor topic follower: %s", self.error)
                self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()
