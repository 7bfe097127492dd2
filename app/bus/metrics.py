"""The bus's metrics: records lost to retention before a consumer read them.

``gh_bus_offsets_lost_total{topic, partition, action}`` counts offsets a consumer found deleted
(retention, or ``delete_records``) between its position and the earliest record still held;
``action`` is ``refused`` (the consumer raised :class:`~app.bus.base.LostRecordsError`: nothing was
skipped, the job stops until someone decides) or ``skipped`` (a consumer opened with
``skip_lost=True``, e.g. the sink under ``--accept-data-loss``). Labels stay bounded: topics are a
handful, partitions at most ``topics.partitions``.

The counter lives in prometheus_client's default registry (any ``/metrics`` served by
prometheus_client includes it) and, inside a Ray worker, also in Ray's metrics (exported by the
node's metrics agent as ``ray_gh_bus_offsets_lost_total``, which the stack's Prometheus scrapes).
Both are created on first use, so importing the bus registers nothing.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

OFFSETS_LOST = "gh_bus_offsets_lost"
_DESCRIPTION = "offsets deleted by retention before a consumer read them (action: refused = the consumer stopped, skipped = it moved on)"
_LABELS = ("topic", "partition", "action")


@functools.cache
def _prometheus_counter() -> Any:
    from prometheus_client import Counter

    return Counter(OFFSETS_LOST, _DESCRIPTION, _LABELS)


@functools.cache
def _ray_counter() -> Any:
    from ray.util.metrics import Counter

    return Counter(OFFSETS_LOST, description=_DESCRIPTION, tag_keys=_LABELS)


def count_lost_offsets(topic: str, partition: int, offsets: int, *, skipped: bool) -> None:
    """Add ``offsets`` lost records of ``topic``/``partition`` to ``gh_bus_offsets_lost_total``."""
    if offsets <= 0:
        return
    action = "skipped" if skipped else "refused"
    _prometheus_counter().labels(topic=topic, partition=str(partition), action=action).inc(offsets)
    ray = sys.modules.get("ray")  # only where Ray already runs: the bus never starts it
    if ray is not None and ray.is_initialized():
        try:
            _ray_counter().inc(offsets, tags={"topic": topic, "partition": str(partition), "action": action})
        except Exception:  # a metrics agent that is not up must never turn a count into a crash
            pass


def lost_offsets(topic: str, partition: int, *, skipped: bool) -> float:
    """The counter's value in this process (0 before any loss): what tests and summaries read."""
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value(f"{OFFSETS_LOST}_total", {"topic": topic, "partition": str(partition), "action": "skipped" if skipped else "refused"})
    return value or 0.0
