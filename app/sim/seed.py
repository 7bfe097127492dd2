"""Fill a bus and lake with twin readings without HTTP (tests, benchmarks, quick experiments)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

import orjson

from app.config import Settings


def seed_lake(settings: Settings, *, greenhouses: int = 2, days: float = 2.0, start: datetime, seed: int = 1, sink: bool = True) -> int:
    """Simulate ``greenhouses`` for ``days`` from ``start``, produce the readings through the
    gateway's service code (validation and device credentials included: each simulated device is
    registered and posts with its own token) and, with ``sink``, sink them into the lake.
    Returns how many readings were accepted."""
    from app.bus import open_bus
    from app.ingest.gateway import JSON_V2, IngestService
    from app.ingest.sink import LakeSink
    from app.lake import Lake
    from app.metadata import open_metadata
    from app.security.credentials import DeviceRegistry
    from app.sim.credentials import FleetCredentials
    from app.sim.fleet import FleetSimulator

    fleet = FleetSimulator(greenhouses, start, step_s=60, seed=seed)
    registry = DeviceRegistry(open_metadata(settings.metadata_url))
    credentials = FleetCredentials.for_fleet(registry, fleet)
    service = IngestService(settings, open_bus(settings.bus_url, topics=settings.topics), registry)
    accepted = 0
    batch: list[dict] = []

    def flush() -> int:
        by_device: dict[str | None, list[dict]] = defaultdict(list)
        for reading in batch:
            by_device[credentials.authorization_for(reading)].append(reading)
        done = 0
        for authorization, readings in by_device.items():
            res = service.produce(settings.topics.sensors, orjson.dumps({"records": [{"value": r} for r in readings]}), content_type=JSON_V2, authorization=authorization)
            done += sum(o["error_code"] is None for o in res.body["offsets"])
        return done

    for step in fleet.iter_steps(days * 86_400):
        batch.extend(step)
        if len(batch) >= 3000:
            accepted += flush()
            batch = []
    if batch:
        accepted += flush()
    if sink:
        LakeSink(settings, open_bus(settings.bus_url, topics=settings.topics), Lake.from_url(settings.lake_url), open_metadata(settings.metadata_url)).run()
    return accepted
