"""A lake seeded with simulated greenhouses, for tests that learn from data."""

from __future__ import annotations

from datetime import datetime, timezone

from app.config import Settings
from app.sim.seed import seed_lake

SEED_START = datetime(2026, 3, 10, tzinfo=timezone.utc)


def seed_two_greenhouses(settings: Settings, days: float, seed: int = 1) -> int:
    """Two simulated greenhouses' readings for ``days`` from :data:`SEED_START`, through the
    product's own ingest path into the lake; the number of readings."""
    return seed_lake(settings, greenhouses=2, days=days, start=SEED_START, seed=seed)
