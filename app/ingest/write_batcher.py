"""Group commit for the gateway: concurrent produce requests share one bus write.

Each produce request of the gateway ends in a durable bus write (a SQLite commit on the embedded
log, a flush acknowledged by every in-sync replica on Kafka), and the write costs about the same
for one record as for a hundred. :class:`WriteBatcher` lets the requests being served at the same
time (in the HTTP layer's worker threads) share it: the first request to arrive while no write is
out writes at once; those that arrive meanwhile wait, and the next of them writes for all of them
in one call per topic. No timer: an idle gateway writes each request at once, a busy one writes
less often. Every request still gets its own records' results only after the bus holds them, and
a write the bus refuses fails every request that was in it (each answers "nothing written, retry").
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from app.bus import Bus, BusError, OutgoingRecord, ProduceResult


@dataclass
class _Waiting:
    """One request's records, and, once written, their results or the write's error."""

    topic: str
    records: Sequence[OutgoingRecord]
    results: list[ProduceResult] | None = None
    error: BaseException | None = None
    done: bool = field(default=False)


class WriteBatcher:
    """``produce`` with the :class:`~app.bus.Bus` signature, safe from many threads at once, whose
    concurrent calls become one ``bus.produce`` per topic (``max_records``: at most this many
    records a write, beyond what one call brings)."""

    def __init__(self, bus: Bus, *, max_records: int = 10_000) -> None:
        self.bus = bus
        self._max_records = max_records
        self._changed = threading.Condition()
        self._queue: list[_Waiting] = []
        self._writing = False

    def produce(self, topic: str, records: Sequence[OutgoingRecord]) -> list[ProduceResult]:
        """Write ``records`` to ``topic`` with whatever other calls are waiting; their results.

        Raises:
            BusError: the bus refused the write this call's records were in.
        """
        me = _Waiting(topic, records)
        with self._changed:
            self._queue.append(me)
        while True:
            with self._changed:
                while self._writing and not me.done:
                    self._changed.wait()
                if me.done:
                    return _outcome(me)
                self._writing = True  # this thread writes next, for every call waiting
                batch = self._take()
            try:
                self._write(batch)
            finally:
                with self._changed:
                    self._writing = False
                    self._changed.notify_all()

    def _take(self) -> list[_Waiting]:
        """The waiting calls for the next write: the oldest first, up to ``max_records`` (at least one)."""
        taken, size = 0, 0
        while taken < len(self._queue) and (taken == 0 or size + len(self._queue[taken].records) <= self._max_records):
            size += len(self._queue[taken].records)
            taken += 1
        batch, self._queue = self._queue[:taken], self._queue[taken:]
        return batch

    def _write(self, batch: list[_Waiting]) -> None:
        """One ``bus.produce`` per topic of ``batch``; each call's share of the results, or the error."""
        for topic in dict.fromkeys(w.topic for w in batch):
            calls = [w for w in batch if w.topic == topic]
            try:
                results = self.bus.produce(topic, [r for w in calls for r in w.records])
            except BaseException as exc:  # every call in the write gets it, in its own thread
                for w in calls:
                    w.error, w.done = exc, True
                continue
            start = 0
            for w in calls:
                w.results, w.done = results[start : start + len(w.records)], True
                start += len(w.records)


def _outcome(waiting: _Waiting) -> list[ProduceResult]:
    if waiting.error is not None:
        exc = waiting.error
        if isinstance(exc, BusError):
            raise type(exc)(str(exc), retriable=exc.retriable) from exc
        raise exc
    assert waiting.results is not None
    return waiting.results
