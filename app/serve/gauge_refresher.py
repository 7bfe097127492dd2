"""Gauges set again periodically, so that Ray's metrics agent does not drop them.

The agent drops a gauge value not set for two report intervals; a value that must outlive a quiet
spell (a silent greenhouse's last reading, a rollout's RMSE between two judgements) is set again
every :data:`REFRESH_S` by a :class:`Refresher`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

REFRESH_S = 5.0
"""How often gauges are set again (well under two of Ray's default 10 s report intervals)."""


class Refresher:
    """Calls ``refresh`` every ``period_s`` on a daemon thread until :meth:`stop` (a failing call
    is logged, never fatal: metrics must not take a replica down)."""

    def __init__(self, refresh: Callable[[], None], period_s: float = REFRESH_S, *, name: str = "metrics-refresh") -> None:
        self._refresh = refresh
        self._period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._period_s):
            try:
                self._refresh()
            except Exception:
                log.exception("metrics refresh failed")

    def stop(self) -> None:
        """Stop after the current call."""
        self._stop.set()
