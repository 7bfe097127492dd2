"""The ingest gateway as a Ray Serve application.

``greenhouse serve serve_configs/ingest.yaml`` (``serve run`` with the fast ingress,
:mod:`app.cli.serve`) or ``serve deploy`` imports :func:`build_app`; the
``args`` of the config file become :class:`~app.serve.args.AppArgs`. Tests and the demo call
``build_app(AppArgs(settings=settings.for_replicas()))`` so replicas see exactly
the caller's settings. Devices authenticate against the device registry in the settings' metadata
store (:class:`~app.security.credentials.DeviceRegistry`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Application

from app.bus import open_bus
from app.config import Settings
from app.ingest.api import create_api
from app.ingest.gateway import IngestService
from app.serve.args import AppArgs
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
        devices = DeviceRegistry.from_settings(settings)
        refuse_unsafe(settings, devices_registered=bool(devices.list()) if exposed(settings) else None)
        self._accepted = Counter("gh_ingest_records_accepted", description="records accepted by the gateway")
        self._rejected = Counter("gh_ingest_records_rejected", description="records rejected by the gateway", tag_keys=("reason",))
        self.service = IngestService(settings, open_bus(settings.bus_url, topics=settings.topics), devices, on_result=self._record)
        self._edge_secret = EdgeSecret(edge_secret_path(settings))

    def _record(self, accepted: int, rejected_reasons: list[str]) -> None:
        if accepted:
            self._accepted.inc(accepted)
        for reason in rejected_reasons:
            self._rejected.inc(1, tags={"reason": reason})

    def __serve_build_asgi_app__(self):
        return create_api(self.service, edge_secret=self._edge_secret)


def build_app(args: AppArgs | dict[str, Any]) -> Application:
    """Typed app builder for ``serve run app.serve.ingest:build_app``."""
    if not isinstance(args, AppArgs):
        args = AppArgs.model_validate(args)
    return IngestGateway.bind(args)
