"""The ingest gateway as a Ray Serve application.

``serve run serve_configs/ingest.yaml`` (or ``serve deploy``) imports :func:`build_app`; the
``args`` of the config file become :class:`~app.serve.args.AppArgs`. Tests and the demo call
``build_app(AppArgs(settings=settings.for_replicas()))`` so replicas see exactly
the caller's settings.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from app.bus import open_bus
from app.config import Settings
from app.ingest.api import create_api
from app.ingest.gateway import IngestService
from app.serve.args import AppArgs


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64, health_check_period_s=10)
@serve.ingress()
class IngestGateway:
    """Serve replica: one :class:`IngestService` on its own bus connection."""

    def __init__(self, args: AppArgs) -> None:
        from ray.serve.metrics import Counter

        settings: Settings = args.load()
        self._accepted = Counter("gh_ingest_records_accepted", description="records accepted by the gateway")
        self._rejected = Counter("gh_ingest_records_rejected", description="records rejected by the gateway", tag_keys=("reason",))
        self.service = IngestService(settings, open_bus(settings.bus_url), on_result=self._record)

    def _record(self, accepted: int, rejected_reasons: list[str]) -> None:
        if accepted:
            self._accepted.inc(accepted)
        for reason in rejected_reasons:
            self._rejected.inc(1, tags={"reason": reason})

    def __serve_build_asgi_app__(self):
        return create_api(self.service)


def build_app(args: AppArgs | dict[str, Any]) -> Application:
    """Typed app builder for ``serve run app.serve.ingest:build_app``."""
    if not isinstance(args, AppArgs):
        args = AppArgs.model_validate(args)
    return IngestGateway.bind(args)
