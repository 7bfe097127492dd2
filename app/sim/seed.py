"""Fill a bus and lake with twin readings without HTTP (tests, benchmarks, quick experiments)."""

from __future__ import annotations

from datetime import datetime

import orjson

from app.config import Settings


def seed_lake(settings: Settings, *, greenhouses: int = 2, days: float = 2.0, start: datetime, seed: int = 1, sink: bool = True) -> int:
    """Simulate ``greenhouses`` for ``days`` from ``start``, produce the readings through the
    gateway's service code (validation included) and, with ``sink``, sink them into the lake.
    Returns how many readings were accepted."""
    from app.bus import open_bus
    from app.ingest.gateway import JSON_V2, IngestService
    from app.ingest.sink import LakeSink
    from app.lake import Lake
    from app.metadata import open_metadata
    from app.sim.fleet import FleetSimulator

    fleet = FleetSimulator(greenhouses, start, step_s=60, seed=seed)
    service = IngestService(settings, open_bus(settings.bus_url))
    accepted = 0
    batch: list[dict] = []

    def flush() -> int:
        res = service.produce(settings.topics.sensors, orjson.dumps({"records": [{"value": r} for r in batch]}), content_type=JSON_V2)
        return sum(o["error_code"] is None for o in res.body["offsets"])

    for step in fleet.iter_steps(days * 86_400):
        batch.extend(step)
        if len(batch) >= 3000:
            accepted += flush()
            batch = []
    if batch:
        accepted += flush()
    if sink:
        LakeSink(settings, open_bus(settings.bus_url), Lake.from_url(settings.lake_url), open_metadata(settings.metadata_url)).run()
    return accepted
