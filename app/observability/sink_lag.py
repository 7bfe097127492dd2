"""How far the lake sink is behind the bus, per partition, from what the sink leaves behind.

Lag = the partition's end offset (the offset the next produced record gets) minus the sink's
committed position: its durable checkpoint in the metadata store
(:func:`app.ingest.ownership.checkpointed_offsets`), which is authoritative for the sink (the bus
consumer-group offset is committed after it, for tools only). A partition the sink never committed
counts from the earliest offset the bus still holds, where a first sink would start. Neither figure
comes from a running sink, so the lag keeps growing while the sink is stopped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from app.bus import Bus, UnknownTopicError


@dataclass(frozen=True)
class BusPositions:
    """Per partition of one topic: the earliest offset held and the end offset."""

    start: Mapping[int, int]
    end: Mapping[int, int]


def bus_positions(bus: Bus, topic: str) -> BusPositions | None:
    """The topic's start and end offsets (None: the topic does not exist yet, nothing to lag)."""
    try:
        return BusPositions(bus.start_offsets(topic), bus.end_offsets(topic))
    except UnknownTopicError:
        return None


def lag_records(positions: BusPositions, committed: Mapping[int, int]) -> dict[int, int]:
    """Per partition, records produced that the sink has not committed (never negative)."""
    return {p: max(0, end - committed.get(p, positions.start.get(p, 0))) for p, end in positions.end.items()}
