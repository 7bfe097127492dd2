"""The lake sink's metrics, behind a narrow interface so the sink's logic never needs Ray.

:class:`SinkMetrics` is what a sink records; :func:`sink_metrics` picks the implementation: Ray's
``ray.util.metrics`` when this process is a connected Ray worker or driver (sink actors of
``jobs.sink --workers N``), else :class:`NoSinkMetrics`. Ray's metrics agent exports them with the
``ray_`` prefix and ``_total`` on counters (docs/observability.md):

- ``gh_sink_rows_written{topic}``: readings written to committed lake files;
- ``gh_sink_files_written{topic}``: committed lake files;
- ``gh_sink_commit_duration_seconds``: one chunk's write, pending documents to committed status
  (steps 1 to 4 of :mod:`app.ingest.sink`);
- ``gh_sink_duplicates_dropped``: readings dropped as already in the lake;
- ``gh_sink_deadletters{reason}``: messages sent to the dead-letter topic, by the contract's reason
  code (the same codes the gateway counts rejections by).

A Ray counter cannot be increased by 0, so a count of 0 records nothing.
"""

from __future__ import annotations

import functools
import logging
import sys
from typing import Any, Protocol

log = logging.getLogger(__name__)

COMMIT_BOUNDARIES_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class SinkMetrics(Protocol):
    """What a lake sink records besides its stats."""

    def files_committed(self, topic: str, files: int, rows: int, duration_s: float) -> None:
        """A chunk's ``files`` holding ``rows`` readings committed after ``duration_s`` of writing."""
        ...

    def duplicates_dropped(self, count: int) -> None:
        """``count`` readings dropped as already in the lake."""
        ...

    def dead_lettered(self, reason: str, count: int) -> None:
        """``count`` messages sent to the dead-letter topic for ``reason``."""
        ...


class NoSinkMetrics:
    """Records nothing: a sink outside Ray, or a test."""

    def files_committed(self, topic: str, files: int, rows: int, duration_s: float) -> None:
        pass

    def duplicates_dropped(self, count: int) -> None:
        pass

    def dead_lettered(self, reason: str, count: int) -> None:
        pass


class RaySinkMetrics:
    """:class:`SinkMetrics` on ``ray.util.metrics`` (exported by the node's metrics agent).
    A failing record never fails the sink: it is logged once and dropped."""

    def __init__(self) -> None:
        instruments = _ray_instruments()
        self._rows, self._files, self._commit, self._duplicates, self._dead = instruments
        self._warned = False

    def files_committed(self, topic: str, files: int, rows: int, duration_s: float) -> None:
        self._safely(self._commit.observe, max(duration_s, 0.0))
        if files > 0:
            self._safely(self._files.inc, files, tags={"topic": topic})
        if rows > 0:
            self._safely(self._rows.inc, rows, tags={"topic": topic})

    def duplicates_dropped(self, count: int) -> None:
        if count > 0:
            self._safely(self._duplicates.inc, count)

    def dead_lettered(self, reason: str, count: int) -> None:
        if count > 0:
            self._safely(self._dead.inc, count, tags={"reason": reason})

    def _safely(self, record: Any, *args: Any, **kwargs: Any) -> None:
        try:
            record(*args, **kwargs)
        except Exception:  # a metrics agent that is not up must never stop the sink
            if not self._warned:
                self._warned = True
                log.warning("sink metrics: recording failed; the sink goes on without them", exc_info=True)


@functools.cache
def _ray_instruments() -> tuple[Any, Any, Any, Any, Any]:
    """The Ray instruments, made once per process (Ray refuses none, but one set is enough)."""
    from ray.util.metrics import Counter, Histogram

    return (
        Counter("gh_sink_rows_written", description="readings the lake sink wrote to committed lake files", tag_keys=("topic",)),
        Counter("gh_sink_files_written", description="lake files the lake sink committed", tag_keys=("topic",)),
        Histogram("gh_sink_commit_duration_seconds", description="one chunk's write by the lake sink, pending documents to committed", boundaries=list(COMMIT_BOUNDARIES_S)),
        Counter("gh_sink_duplicates_dropped", description="readings the lake sink dropped as already in the lake"),
        Counter("gh_sink_deadletters", description="bus messages the lake sink sent to the dead-letter topic, by reason code", tag_keys=("reason",)),
    )


def sink_metrics() -> SinkMetrics:
    """Ray's metrics where this process is connected to Ray, else none (the sink never starts Ray)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return RaySinkMetrics()
    return NoSinkMetrics()
