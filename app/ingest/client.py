"""A device-side client of the ingest gateway (used by the simulated fleet, the demo and benches).

Posts readings in REST Proxy v2 requests of up to ``batch_size`` records, retries what the gateway
says is retriable (503, connection errors, per-record 50003) with backoff, and tallies accepted
and rejected records by reason.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from app.ingest.gateway import JSON_V2, RESPONSE_MEDIA_TYPE


@dataclass
class PostTally:
    """What the gateway answered so far."""

    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    requests: int = 0
    retries: int = 0
    rejected_by_reason: Counter = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)


class GatewayError(RuntimeError):
    """The gateway refused a whole request in a way retrying cannot fix."""


class GatewayClient:
    """Post readings to ``{base_url}/topics/{topic}``."""

    def __init__(
        self,
        base_url: str,
        *,
        topic: str = "greenhouse.sensors",
        token: str | None = None,
        batch_size: int = 100,
        max_attempts: int = 5,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"content-type": JSON_V2, "accept": RESPONSE_MEDIA_TYPE}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self._client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s, transport=transport)
        self.topic = topic
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.tally = PostTally()

    def post(self, readings: Iterable[dict[str, Any]]) -> PostTally:
        """Post every reading (in batches); returns the running tally."""
        batch: list[dict[str, Any]] = []
        for reading in readings:
            batch.append(reading)
            if len(batch) >= self.batch_size:
                self._post_batch(batch)
                batch = []
        if batch:
            self._post_batch(batch)
        return self.tally

    def _post_batch(self, readings: list[dict[str, Any]]) -> None:
        pending = readings
        for attempt in range(1, self.max_attempts + 1):
            body = orjson.dumps({"records": [{"value": r} for r in pending]})
            started = time.perf_counter()
            try:
                response = self._client.post(f"/topics/{self.topic}", content=body)
            except httpx.TransportError:
                if attempt == self.max_attempts:
                    raise
                self._backoff(attempt)
                continue
            self.tally.latencies_s.append(time.perf_counter() - started)
            self.tally.requests += 1
            if response.status_code == 503:
                self._backoff(attempt)
                continue
            payload = response.json()
            if response.status_code not in (200, 422) or "offsets" not in payload:
                raise GatewayError(f"gateway answered {response.status_code}: {payload}")
            retry: list[dict[str, Any]] = []
            for reading, entry in zip(pending, payload["offsets"]):
                if entry["error_code"] is None:
                    self.tally.accepted += 1
                elif entry["error_code"] == 50003:
                    retry.append(reading)
                else:
                    self.tally.rejected += 1
                    self.tally.rejected_by_reason[str(entry["error"]).split(":", 1)[0]] += 1
            self.tally.sent += len(pending) - len(retry)
            if not retry:
                return
            pending = retry
            self._backoff(attempt)
        raise GatewayError(f"{len(pending)} records still failing after {self.max_attempts} attempts")

    def _backoff(self, attempt: int) -> None:
        self.tally.retries += 1
        time.sleep(min(2.0, 0.05 * 2**attempt))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
