"""Each greenhouse's state for a serving replica: the followed sensor topic, or a window a caller sends.

Every control replica follows the whole sensor topic into an
:class:`~app.control.online.OnlineWindow`; a request names a greenhouse (and maybe ``as_of``, which
is waited for briefly, since the follower may be a moment behind the caller) and gets its newest
feature row, as training built it.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from app.config import Settings
from app.contracts.reading import ReadingError
from app.control.core import GreenhouseState
from app.control.online import OnlineWindow, SensorTopicFollower, parse_readings, reading_to_row
from app.preprocess.features import FeatureParams, latest_feature_row
from app.serve.control_api import INVALID_READINGS, NO_READINGS, ServeError

AS_OF_WAIT_S = 2.0  # how long a request with as_of waits for the follower to reach it


class OnlineState:
    """The replica's view of every greenhouse (``replica_id`` names its consumer group)."""

    def __init__(self, settings: Settings, bus: Any, replica_id: str) -> None:
        self.window = OnlineWindow(settings.control.window_min)
        self.follower = SensorTopicFollower(bus, settings.topics.sensors, self.window, group_id=f"serve-online-{replica_id}", partitions=settings.topics.partitions).start()

    async def state(self, greenhouse_id: str, readings: list[dict[str, Any]] | None, as_of: datetime | None, params: FeatureParams) -> GreenhouseState:
        """The greenhouse's newest features: from ``readings`` when sent, else from the followed
        topic (up to ``as_of``); 422 for invalid readings, 404 when there are none."""
        if readings is not None:
            feats = await asyncio.to_thread(latest_feature_row, self._rows(greenhouse_id, readings, as_of), params)
        else:
            if as_of is not None:
                await self.wait_for(greenhouse_id, as_of, AS_OF_WAIT_S)
            feats = self.window.features(greenhouse_id, params, as_of)
        if feats is None:
            raise ServeError(404, NO_READINGS, f"no recent readings for greenhouse {greenhouse_id!r} (send 'readings', or wait for its devices)")
        return GreenhouseState(greenhouse_id, feats)

    @staticmethod
    def _rows(greenhouse_id: str, readings: list[dict[str, Any]], as_of: datetime | None) -> list[dict[str, Any]]:
        try:
            parsed = parse_readings(readings, greenhouse_id)
        except ReadingError as exc:
            raise ServeError(422, INVALID_READINGS, exc.reason) from None
        rows = [reading_to_row(r) for r in parsed]
        return rows if as_of is None else [r for r in rows if r["ts"] <= as_of]

    async def wait_for(self, greenhouse_id: str, as_of: datetime, timeout_s: float) -> None:
        """Until the window holds a reading of ``greenhouse_id`` at or after ``as_of`` (woken by the
        follower thread, no polling), or ``timeout_s``."""
        latest = self.window.latest_ts(greenhouse_id)
        if latest is not None and latest >= as_of:
            return
        loop = asyncio.get_running_loop()
        reached = asyncio.Event()
        cancel = self.window.on_reaching(greenhouse_id, as_of, lambda: loop.call_soon_threadsafe(reached.set))
        try:
            await asyncio.wait_for(reached.wait(), timeout_s)
        except TimeoutError:
            pass
        finally:
            cancel()

    def health(self) -> dict[str, Any]:
        """What the replica follows, for ``/healthz``."""
        return {"greenhouses": self.window.greenhouses(), "readings_followed": self.window.records, "feature_builds": self.window.builds, "follower_error": self.follower.error}

    def stop(self) -> None:
        self.follower.stop()
