"""A device-side client of the ingest gateway (used by the simulated fleet, the demo and benches).

Posts readings in REST Proxy v2 requests of up to ``batch_size`` records with the sending device's
bearer token, retries what the gateway says is retriable (503, connection errors, per-record
50003) with backoff, and tallies accepted and rejected records by reason. One client can speak for
several devices (``token_for`` picks each reading's token; readings of one token share requests,
and the devices of one :meth:`GatewayClient.post` send at the same time, as separate devices would).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
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


_INFRASTRUCTURE_RETRIABLE = (404, 502, 504)


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


class GatewayClient:
    """Post readings to ``{base_url}/topics/{topic}``.

    Args:
        token: the device token every reading is sent with; or
        token_for: the token of one reading (a client speaking for several devices).
        max_concurrency: how many devices' requests may be in flight at once.
        transport, verify: for httpx (``verify``: a CA bundle path for HTTPS, or ``True``).
    """

    def __init__(
        self,
        base_url: str,
        *,
        topic: str = "greenhouse.sensors",
        token: str | None = None,
        token_for: Callable[[Mapping[str, Any]], str | None] | None = None,
        batch_size: int = 100,
        max_attempts: int = 5,
        max_concurrency: int = 8,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        verify: Any = True,
    ) -> None:
        headers = {"content-type": JSON_V2, "accept": RESPONSE_MEDIA_TYPE}
        self._client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s, transport=transport, verify=verify)
        self._token_for = token_for or (lambda reading: token)
        self.topic = topic
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.max_concurrency = max_concurrency
        self.tally = PostTally()
        self._lock = threading.Lock()  # the tally, when devices post at once
        self._pool: ThreadPoolExecutor | None = None

    def post(self, readings: Iterable[dict[str, Any]]) -> PostTally:
        """Post every reading, in batches per token (in order within each; the tokens' requests
        at once); returns the running tally."""
        by_token: dict[str | None, list[dict[str, Any]]] = {}
        for reading in readings:
            by_token.setdefault(self._token_for(reading), []).append(reading)
        if len(by_token) <= 1 or self.max_concurrency <= 1:
            for token, mine in by_token.items():
                self._post_device(token, mine)
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="gateway-client")
            for done in [self._pool.submit(self._post_device, token, mine) for token, mine in by_token.items()]:
                done.result()  # re-raises a device's GatewayError
        return self.tally

    def _post_device(self, token: str | None, readings: list[dict[str, Any]]) -> None:
        for i in range(0, len(readings), self.batch_size):
            self._post_batch(readings[i : i + self.batch_size], token)

    def _post_batch(self, readings: list[dict[str, Any]], token: str | None) -> None:
        pending = readings
        headers = {"authorization": f"Bearer {token}"} if token else None
        for attempt in range(1, self.max_attempts + 1):
            body = orjson.dumps({"records": [{"value": r} for r in pending]})
            started = time.perf_counter()
            try:
                response = self._client.post(f"/topics/{self.topic}", content=body, headers=headers)
            except httpx.TransportError:
                if attempt == self.max_attempts:
                    raise
                self._backoff(attempt)
                continue
            with self._lock:
                self.tally.latencies_s.append(time.perf_counter() - started)
                self.tally.requests += 1
            payload = _json_or_none(response)
            if response.status_code == 503 or (payload is None and response.status_code in _INFRASTRUCTURE_RETRIABLE):
                # 503: the bus refused, nothing written. A non-JSON 404/502/504 comes from a proxy in
                # front (a route not yet known on every proxy, a replica restarting): not the gateway
                if attempt == self.max_attempts:
                    raise GatewayError(f"gateway answered {response.status_code} {attempt} times: {response.text[:200]}")
                self._backoff(attempt)
                continue
            if payload is None:
                raise GatewayError(f"gateway answered {response.status_code} without JSON: {response.text[:200]}")
            if response.status_code not in (200, 403, 422) or "offsets" not in payload:
                raise GatewayError(f"gateway answered {response.status_code}: {payload}")
            retry = [reading for reading, entry in zip(pending, payload["offsets"]) if entry["error_code"] == 50003]
            with self._lock:
                for entry in payload["offsets"]:
                    if entry["error_code"] is None:
                        self.tally.accepted += 1
                    elif entry["error_code"] != 50003:
                        self.tally.rejected += 1
                        self.tally.rejected_by_reason[str(entry["error"]).split(":", 1)[0]] += 1
                self.tally.sent += len(pending) - len(retry)
            if not retry:
                return
            pending = retry
            self._backoff(attempt)
        raise GatewayError(f"{len(pending)} records still failing after {self.max_attempts} attempts")

    def _backoff(self, attempt: int) -> None:
        with self._lock:
            self.tally.retries += 1
        time.sleep(min(2.0, 0.05 * 2**attempt))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        self._client.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
