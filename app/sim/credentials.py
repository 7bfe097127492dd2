"""Device credentials for a simulated fleet: one token per simulated device, made in the registry.

The simulated devices post like real ones: each reading with its own device's bearer token
(:class:`~app.ingest.client.GatewayClient`'s ``token_for``). Registering a device that exists
already rotates its token (a demo run again in the same data directory).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from app.security.credentials import CredentialError


class DeviceEnroller(Protocol):
    """What registering a fleet needs of :class:`~app.security.credentials.DeviceRegistry`."""

    def add(self, device_id: str, greenhouse_id: str) -> str: ...

    def rotate(self, device_id: str) -> str: ...


class FleetCredentials:
    """Tokens of a fleet's devices, by device id, and which one posts a given reading."""

    def __init__(self, tokens: Mapping[str, str], greenhouse_of: Mapping[str, str]) -> None:
        self.tokens = dict(tokens)
        self._by_greenhouse: dict[str, str] = {}
        for device, greenhouse in greenhouse_of.items():
            self._by_greenhouse.setdefault(greenhouse, self.tokens[device])

    @classmethod
    def register(cls, registry: DeviceEnroller, devices: Iterable[tuple[str, str]]) -> FleetCredentials:
        """Register ``(device_id, greenhouse_id)`` pairs (rotating the token of any that exists)."""
        tokens: dict[str, str] = {}
        greenhouse_of: dict[str, str] = {}
        for device_id, greenhouse_id in devices:
            try:
                tokens[device_id] = registry.add(device_id, greenhouse_id)
            except CredentialError:
                tokens[device_id] = registry.rotate(device_id)
            greenhouse_of[device_id] = greenhouse_id
        return cls(tokens, greenhouse_of)

    @classmethod
    def for_fleet(cls, registry: DeviceEnroller, fleet: Any) -> FleetCredentials:
        """Register every device of a :class:`~app.sim.fleet.FleetSimulator` (or anything with
        ``greenhouse_ids`` and ``device_ids(greenhouse_id)``)."""
        return cls.register(registry, [(device, gh) for gh in fleet.greenhouse_ids for device in fleet.device_ids(gh)])

    def token_for(self, reading: Mapping[str, Any]) -> str | None:
        """The token of the device that sends ``reading``. A reading whose device id is missing
        or unknown (a faulty firmware) still comes over one of its greenhouse's devices'
        connections (else any device's), so the gateway answers it per record."""
        device = reading.get("device_id")
        token = self.tokens.get(device) if isinstance(device, str) else None
        if token is None:
            greenhouse = reading.get("greenhouse_id")
            token = self._by_greenhouse.get(greenhouse) if isinstance(greenhouse, str) else None
        if token is None and self.tokens:
            token = next(iter(self.tokens.values()))
        return token

    def authorization_for(self, reading: Mapping[str, Any]) -> str | None:
        """``Bearer <token>`` of :meth:`token_for` (for the in-process service), or ``None``."""
        token = self.token_for(reading)
        return f"Bearer {token}" if token else None
