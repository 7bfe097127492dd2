"""The ingest gateway as a Ray Serve application.

``greenhouse serve serve_configs/ingest.yaml`` (``serve run`` with the fast ingress,
:mod:`app.cli.serve`) or ``serve deploy`` imports :func:`build_app`; the
``args`` of the config file become :class:`~app.serve.args.AppArgs`. Tests and the demo call
``build_app(AppArgs(settings=settings.for_replicas()))`` so replicas see exactly
the caller's settings. Devices authenticate against the device registry in the settings' metadata
store (:class:`~app.security.credentials.DeviceRegistry`). ``GET /readyz`` answers 503 while the
bus or that store does not answer (:func:`gateway_readiness`, :mod:`app.serve.readiness`).

Metrics (:mod:`app.serve.ingest_metrics`): requests by API and status, their duration and body
bytes, records accepted and rejected, refused credentials, and the newest reading's time per
greenhouse, seeded at start from the lake's committed batches of the registered greenhouses and
set again every few seconds so that a silent greenhouse's series does not expire.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Application

from app.bus import Bus, open_bus
from app.config import Settings
from app.ingest.api import create_api
from app.ingest.gateway import IngestService
from app.log_format import setup_replica_logging
from app.metadata import DEVICES, LAKE_BATCHES, MetadataStore, open_metadata
from app.security.credentials import ACTIVE
from app.serve.args import AppArgs
from app.serve.gauge_refresher import Refresher
from app.serve.ingest_metrics import IngestMetrics, RequestMetricsMiddleware, newest_committed_readings
from app.serve.readiness import Readiness, bus_check, store_check
from app.serve.tuning import ACCESS_LOG_OFF

log = logging.getLogger(__name__)


class EdgeSecret:
    """The TLS edge's secret, read from ``path`` once it exists (the edge may start after the
    gateway): while it is missing, the file is looked for at most every ``recheck_s``."""

    def __init__(self, path: Path, *, recheck_s: float = 5.0) -> None:
        self._path = path
        self._recheck_s = recheck_s
        self._secret: bytes | None = None
        self._checked_at = float("-inf")

    def __call__(self) -> bytes | None:
        from app.security.edge import read_edge_secret

        if self._secret is None and time.monotonic() - self._checked_at >= self._recheck_s:
            self._checked_at = time.monotonic()
            self._secret = read_edge_secret(self._path)
        return self._secret


def gateway_readiness(settings: Settings, bus: Bus, store: MetadataStore) -> Readiness:
    """What the gateway needs to accept readings: the bus, with the topics it writes (the ingest
    topics and the dead-letter topic), and the metadata store, where device credentials live."""
    topics = {*settings.ingest.topics, settings.topics.deadletter}
    return Readiness({"bus": bus_check(bus, topics), "metadata": store_check(store.collection(DEVICES))})


def seed_freshness(metrics: IngestMetrics, devices: Any, store: MetadataStore) -> None:
    """Seed the freshness gauges with the newest committed lake reading of every greenhouse
    with an active device (best effort: a store that does not answer leaves them unseeded)."""
    try:
        greenhouses = sorted({str(d["greenhouse_id"]) for d in devices.list() if d.get("status") == ACTIVE and d.get("greenhouse_id")})
        metrics.seed(newest_committed_readings(store.collection(LAKE_BATCHES), greenhouses))
    except Exception as exc:
        log.warning("could not seed the freshness metric from the lake's batches: %s", exc)


# No check_health on purpose: Serve restarts a replica whose check_health fails, and a restart does
# not bring Kafka or the metadata store back. Outages show in GET /readyz (503) instead.
@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64, health_check_period_s=10, logging_config=ACCESS_LOG_OFF)
@serve.ingress()
class IngestGateway:
    """Serve replica: one :class:`IngestService` on its own bus connection and device registry."""

    def __init__(self, args: AppArgs) -> None:
        from app.security.credentials import DeviceRegistry
        from app.security.edge import edge_secret_path
        from app.security.startup import exposed, refuse_unsafe

        settings: Settings = args.load()
        setup_replica_logging(settings)  # JSON lines with the replica's ids (Serve configures only ray.serve's logger)
        store = open_metadata(settings.metadata_url)
        devices = DeviceRegistry(store, cache_ttl_s=settings.security.credential_cache_ttl_s)
        refuse_unsafe(settings, devices_registered=bool(devices.list()) if exposed(settings) else None)
        self.metrics = metrics = IngestMetrics()
        bus = open_bus(settings.bus_url, topics=settings.topics)
        self.service = IngestService(settings, bus, devices, on_result=metrics.records, on_refused=metrics.auth_failure, on_reading=metrics.reading_accepted)
        self.readiness = gateway_readiness(settings, bus, store)
        self._edge_secret = EdgeSecret(edge_secret_path(settings))
        threading.Thread(target=seed_freshness, args=(metrics, devices, store), name="freshness-seed", daemon=True).start()
        self._refresher = Refresher(metrics.refresh)

    def __serve_build_asgi_app__(self):
        api = create_api(self.service, edge_secret=self._edge_secret, probes=self.readiness)
        api.add_middleware(RequestMetricsMiddleware, observe=self.metrics.request)
        return api

    def __del__(self) -> None:
        if getattr(self, "_refresher", None) is not None:
            self._refresher.stop()


def build_app(args: AppArgs | dict[str, Any]) -> Application:
    """Typed app builder for ``serve run app.serve.ingest:build_app``."""
    if not isinstance(args, AppArgs):
        args = AppArgs.model_validate(args)
    return IngestGateway.bind(args)
