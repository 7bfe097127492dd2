"""Shared by the ingest tests: a valid reading to post, numbered so that each is distinct."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest

READING_START = datetime(2026, 6, 1, tzinfo=timezone.utc)


def _reading(i: int = 0, **measurements: float) -> dict:
    ts = READING_START + timedelta(minutes=i)
    return {"greenhouse_id": f"gh-0{1 + i % 2}", "device_id": "climate-1", "ts": ts.isoformat().replace("+00:00", "Z"), "measurements": measurements or {"air_temp_c": 21.5, "rh_pct": 70.0}}


@pytest.fixture(scope="session")
def reading() -> Callable[..., dict]:
    """``reading(i, **measurements)``: a valid reading at 2026-06-01 00:00 UTC + ``i`` minutes,
    alternating between gh-01 and gh-02 (default measurements: air_temp_c 21.5, rh_pct 70)."""
    return _reading
