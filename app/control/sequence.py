"""Per greenhouse command sequence numbers, strictly increasing across dispatchers and restarts.

The actuator side applies a command only when its sequence is above the highest it applied for
that greenhouse, so an older command (a delayed retry, a replay) never overrides a newer one.

Scheme: time-based with a stored floor. The ``control_sequences`` collection holds one document
per greenhouse, ``{_id: <greenhouse>, sequence: <last granted>}``. A grant reads it by ``_id``,
takes the larger of the wall clock in microseconds and the stored number plus one, and writes it
back with a compare-and-set (``update_one`` filtered on the number it read; an insert for the first
grant). Of two dispatchers racing for the same greenhouse exactly one write matches; the other reads
again and goes above it. Why this one:

- the metadata interface has no find-and-modify, so a ``$inc`` counter could not tell a replica
  which number it got; a conditional update (or an insert on the unique ``_id``) is atomic on both
  the embedded store and MongoDB;
- one small document per greenhouse: no growth and no pruning, and both operations address few
  documents (the embedded store scans a collection for any filter other than ``_id`` alone);
- the clock part keeps numbers above what actuators already applied even when the metadata store
  is replaced (a new store starts from the clock, not from 1), and the stored floor keeps them
  increasing when the clock steps back. Microseconds since 1970 stay below 2**53 (exact in JSON
  everywhere) until the year 2255.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone

from app.metadata import DuplicateKeyError, MetadataStore

CONTROL_SEQUENCES = "control_sequences"
MAX_ATTEMPTS = 100


class SequenceAllocator:
    """Grants the next sequence number of a greenhouse (see the module docstring)."""

    def __init__(self, store: MetadataStore, clock_us: Callable[[], int] | None = None) -> None:
        self._floors = store.collection(CONTROL_SEQUENCES)
        self._clock_us = clock_us or (lambda: time.time_ns() // 1000)

    def highest(self, greenhouse_id: str) -> int | None:
        """The highest number granted for ``greenhouse_id`` so far, or None."""
        doc = self._floors.find_one({"_id": greenhouse_id})
        return None if doc is None else int(doc["sequence"])

    def next(self, greenhouse_id: str, command_id: str) -> int:
        """A number above every number granted for ``greenhouse_id`` before, recorded with
        ``command_id``; ``RuntimeError`` if contention outlasts ``MAX_ATTEMPTS`` tries."""
        for _ in range(MAX_ATTEMPTS):
            floor = self.highest(greenhouse_id)
            candidate = max(self._clock_us(), 0 if floor is None else floor + 1)
            grant = {"sequence": candidate, "command_id": command_id, "granted_at": datetime.now(timezone.utc)}
            if floor is None:
                try:
                    self._floors.insert_one({"_id": greenhouse_id, "greenhouse_id": greenhouse_id, **grant})
                    return candidate
                except DuplicateKeyError:  # another dispatcher granted the first one
                    continue
            if self._floors.update_one({"_id": greenhouse_id, "sequence": floor}, {"$set": grant}) == 1:
                return candidate
        raise RuntimeError(f"no sequence number for {greenhouse_id} after {MAX_ATTEMPTS} attempts")
