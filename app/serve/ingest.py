"""The ingest gateway as a Ray Serve application.

``greenhouse serve serve_configs/ingest.yaml`` (``serve run`` with the fast ingress,
:mod:`app.cli.serve`) or ``serve deploy`` imports :func:`build_app`; the
``args`` of the config file become :class:`~app.serve.args.AppArgs`. Tests and the demo call
``build_app(AppArgs(settings=settings.for_replicas()))`` so replicas see exactly
the caller's settings. Devices authenticate against the device registry in the settings' metadata
store (:class:`~app.security.credentials.DeviceRegistry`). ``GET /readyz`` answers 503 while the
bus or that store does not answer (:func:`gateway_readiness`, :mod:`app.serve.readiness`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Application

from app.bus import Bus, open_bus
from app.config import Settings
from app.ingest.api import create_api
from app.ingest.gateway import IngestService
from app.metadata import DEVICES, MetadataStore, open_metadata
from app.serve.args import AppArgs
from app.serve.readiness import Readiness, bus_check, store_check
from app.serve.tuning import ACCESS_LOG_OFF


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


# No check_health on purpose: Serve restarts a replica whose check_health fails, and a restart does
# not bring Kafka or the metadata store back. Outages show in GET /readyz (503) instead.
@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64, health_check_period_s=10, logging_config=ACCESS_LOG_OFF)
@serve.ingress()
class IngestGateway:
    """Serve replica: one :class:`IngestService` on its own bus connection and device registry."""

    def __init__(self, args: AppArgs) -> None:
        from ray.serve.metrics import Counter

        from app.security.credentials import DeviceRegistry
        from app.security.edge import edge_secret_path
        from app.security.startup import exposed, refuse_unsafe

        settings: Settings = args.load()
        store = open_metadata(settings.metadata_url)
        devices = DeviceRegistry(store, cache_ttl_s=settings.security.credential_cache_ttl_s)
        refuse_unsafe(settings, devices_registered=bool(devices.list()) if exposed(settings) else None)
        self._accepted = Counter("gh_ingest_records_accepted", description="records accepted by the gateway")
        self._rejected = Counter("gh_ingest_records_rejected", description="records rejected by the gateway", tag_keys=("reason",))
        bus = open_bus(settings.bus_url, topics=settings.topics)
        self.service = IngestService(settings, bus, devices, on_result=self._record)
        self.readiness = gateway_readiness(settings, bus, store)
        self._edge_secret = EdgeSecret(edge_secret_path(settings))

    def _record(self, accepted: int, rejected_reasons: list[str]) -> None:
        if accepted:
            self._accepted.inc(accepted)
        for reason in rejected_reasons:
            self._rejected.inc(1, tags={"reason": reason})

    def __serve_build_asgi_app__(self):
        return create_api(self.service, edge_secret=self._edge_secret, probes=self.readiness)


def build_app(args: AppArgs | dict[str, Any]) -> Application:
    """Typed app builder for ``serve run app.serve.ingest:build_app``."""
    if not isinstance(args, AppArgs):
        args = AppArgs.model_validate(args)
    return IngestGateway.bind(args)
