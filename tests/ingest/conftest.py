"""Shared by the ingest tests: valid readings to post (numbered so that each is distinct) and the
devices that may post them (real :class:`DeviceRegistry` credentials on an embedded store)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from app.metadata import open_metadata
from app.security.credentials import DeviceRegistry

READING_START = datetime(2026, 6, 1, tzinfo=timezone.utc)
GREENHOUSES = ("gh-01", "gh-02")


def device_of(greenhouse_id: str) -> str:
    """The test device of a greenhouse (one each)."""
    return f"{greenhouse_id}-climate"


def _reading(i: int = 0, greenhouse_id: str = "gh-01", **measurements: float) -> dict:
    ts = READING_START + timedelta(minutes=i)
    return {"greenhouse_id": greenhouse_id, "device_id": device_of(greenhouse_id), "ts": ts.isoformat().replace("+00:00", "Z"), "measurements": measurements or {"air_temp_c": 21.5, "rh_pct": 70.0}}


@pytest.fixture(scope="session")
def reading() -> Callable[..., dict]:
    """``reading(i, greenhouse_id="gh-01", **measurements)``: a valid reading of the greenhouse's
    device at 2026-06-01 00:00 UTC + ``i`` minutes (default measurements: air_temp_c 21.5, rh_pct 70)."""
    return _reading


@dataclass
class Devices:
    """A device registry with one device per test greenhouse, and their bearer headers."""

    registry: DeviceRegistry
    tokens: dict[str, str]  # greenhouse id -> its device's token

    def auth(self, greenhouse_id: str = "gh-01") -> str:
        """``Authorization`` header value of the greenhouse's device."""
        return f"Bearer {self.tokens[greenhouse_id]}"


def make_devices(metadata_url: str, *, cache_ttl_s: float = 2.0, clock: Callable[[], float] | None = None) -> Devices:
    """Register one device per test greenhouse in the store at ``metadata_url``."""
    kwargs = {"clock": clock} if clock else {}
    registry = DeviceRegistry(open_metadata(metadata_url), cache_ttl_s=cache_ttl_s, **kwargs)
    return Devices(registry, {gh: registry.add(device_of(gh), gh) for gh in GREENHOUSES})


@pytest.fixture
def devices(tmp_path: Path) -> Devices:
    """Devices of gh-01 and gh-02 in an embedded metadata store under ``tmp_path``."""
    return make_devices(f"file://{tmp_path / 'gh' / 'metadata'}")
