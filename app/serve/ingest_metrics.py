"""Prometheus metrics of the ingest gateway, exported through Ray's metrics agent.

:class:`IngestMetrics` owns every metric object of a gateway replica (``ray.serve.metrics`` in
production; the factory is injected so the logic is tested without a cluster).
:class:`RequestMetricsMiddleware` times each produce request at the ASGI level, so v2, v3 and
streamed v3 answers are measured alike, whatever route answered them. Names as Prometheus stores
them (``ray_`` prefix, ``_total`` on counters) are listed in ``docs/observability.md``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import timezone
from typing import Any

from app.ingest.api_v3 import is_v3_path
from app.serve.metric_factory import MetricFactory, serve_metric

log = logging.getLogger(__name__)

DURATION_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]
BODY_BUCKETS_BYTES = [256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304]
MAX_GREENHOUSES = 1000
"""At most this many greenhouses get a freshness series per replica (series = greenhouses x
gateway replicas); a larger fleet needs a fleet-level count of silent greenhouses instead."""


class FreshnessTracker:
    """The newest accepted reading's time per greenhouse (Unix seconds), for at most
    ``max_greenhouses`` greenhouses: beyond the cap a new greenhouse is not tracked, and a warning
    is logged once. Thread-safe (requests run on worker threads, the refresher on its own)."""

    def __init__(self, max_greenhouses: int = MAX_GREENHOUSES) -> None:
        self._max = max_greenhouses
        self._newest_s: dict[str, float] = {}
        self._lock = threading.Lock()
        self._warned = False

    def note(self, greenhouse_id: str, ts_s: float) -> bool:
        """Remember ``ts_s`` if it is the greenhouse's newest; whether the value changed."""
        with self._lock:
            known = self._newest_s.get(greenhouse_id)
            if known is None and len(self._newest_s) >= self._max:
                if not self._warned:
                    self._warned = True
                    log.warning("freshness metric: more than %d greenhouses; %s and later ones are not tracked", self._max, greenhouse_id)
                return False
            if known is not None and known >= ts_s:
                return False
            self._newest_s[greenhouse_id] = ts_s
            return True

    def snapshot(self) -> dict[str, float]:
        """Greenhouse id -> newest reading time (Unix seconds)."""
        with self._lock:
            return dict(self._newest_s)


class IngestMetrics:
    """Every metric of one gateway replica (see the module docstring)."""

    def __init__(self, factory: MetricFactory = serve_metric, *, max_greenhouses: int = MAX_GREENHOUSES) -> None:
        self.requests = factory("counter", "gh_ingest_requests", description="produce requests answered, by API and HTTP status", tag_keys=("api", "code"))
        self.duration = factory(
            "histogram", "gh_ingest_request_duration_seconds", description="time to answer a produce request (streamed: to its last byte)", boundaries=DURATION_BUCKETS_S, tag_keys=("api",)
        )
        self.body = factory("histogram", "gh_ingest_request_body_bytes", description="payload bytes of produce requests", boundaries=BODY_BUCKETS_BYTES, tag_keys=("api",))
        self.accepted = factory("counter", "gh_ingest_records_accepted", description="records accepted by the gateway")
        self.rejected = factory("counter", "gh_ingest_records_rejected", description="records rejected by the gateway", tag_keys=("reason",))
        self.auth_failures = factory("counter", "gh_auth_failures", description="requests refused for their credential, by surface and reason", tag_keys=("surface", "reason"))
        self.last_reading = factory("gauge", "gh_greenhouse_last_reading_timestamp_seconds", description="measurement time of the newest accepted reading per greenhouse", tag_keys=("greenhouse_id",))
        self.freshness = FreshnessTracker(max_greenhouses)

    def request(self, api: str, code: int, duration_s: float, body_bytes: int) -> None:
        """One produce request answered with ``code`` after ``duration_s``, ``body_bytes`` read
        (its size is observed only when its body was read: one refused before, e.g. 401, is not)."""
        self.requests.inc(1, tags={"api": api, "code": str(code)})
        self.duration.observe(duration_s, tags={"api": api})
        if body_bytes > 0:
            self.body.observe(float(body_bytes), tags={"api": api})

    def records(self, accepted: int, rejected_reasons: list[str]) -> None:
        """The records of one request: how many were accepted, each rejection's reason."""
        if accepted:  # a Ray counter refuses 0
            self.accepted.inc(accepted)
        for reason in rejected_reasons:
            self.rejected.inc(1, tags={"reason": reason})

    def auth_failure(self, reason: str) -> None:
        """A request refused for its device credential (``reason`` as ``/stats`` counts it)."""
        self.auth_failures.inc(1, tags={"surface": "ingest", "reason": reason})

    def reading_accepted(self, greenhouse_id: str, ts_s: float) -> None:
        """The greenhouse's newest accepted reading is at least as new as ``ts_s``."""
        if self.freshness.note(greenhouse_id, ts_s):
            self.last_reading.set(ts_s, tags={"greenhouse_id": greenhouse_id})

    def seed(self, newest_s: dict[str, float]) -> None:
        """Start from the newest readings known elsewhere (the lake's batches)."""
        for greenhouse_id, ts_s in newest_s.items():
            self.reading_accepted(greenhouse_id, ts_s)

    def refresh(self) -> None:
        """Set every tracked greenhouse's gauge again, so that none expires while silent."""
        for greenhouse_id, ts_s in self.freshness.snapshot().items():
            self.last_reading.set(ts_s, tags={"greenhouse_id": greenhouse_id})


def newest_committed_readings(batches: Any, greenhouse_ids: Iterable[str]) -> dict[str, float]:
    """Greenhouse id -> the newest reading time (Unix seconds) of its committed lake batches
    (``lake_batches``' ``ts_max``), for the greenhouses that have one. One query per greenhouse."""
    newest: dict[str, float] = {}
    for greenhouse_id in greenhouse_ids:
        doc = batches.find_one({"greenhouse_id": greenhouse_id, "status": "committed"}, sort=[("ts_max", -1)])
        ts = doc.get("ts_max") if doc else None
        if ts is not None and hasattr(ts, "timestamp"):
            if ts.tzinfo is None:  # the stores give back naive UTC
                ts = ts.replace(tzinfo=timezone.utc)
            newest[greenhouse_id] = ts.timestamp()
    return newest


class RequestMetricsMiddleware:
    """ASGI middleware: each ``POST`` (a produce request) counted by API (``v3`` under ``/v3``,
    else ``v2``) and status, timed to its last response byte, its body bytes measured as read."""

    def __init__(self, app: Any, *, observe: Callable[[str, int, float, int], None], clock: Callable[[], float] = time.perf_counter) -> None:
        self.app = app
        self._observe = observe
        self._clock = clock

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        started = self._clock()
        status = 500  # what the client gets if the app raises before answering
        body_bytes = 0

        async def counting_receive() -> dict[str, Any]:
            nonlocal body_bytes
            message = await receive()
            if message["type"] == "http.request":
                body_bytes += len(message.get("body", b""))
            return message

        async def status_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, counting_receive, status_send)
        finally:
            try:
                self._observe("v3" if is_v3_path(scope) else "v2", status, self._clock() - started, body_bytes)
            except Exception:  # metrics never fail a request
                log.exception("ingest request metrics failed")
