"""What the TLS edge tells the apps behind it, and how they know it was the edge that said it.

The TLS edge (:mod:`app.serve.tls_edge`, HAProxy) terminates HTTPS in front of the Serve port.
When a device presents a client certificate that the edge verified against the CA, the edge
passes the certificate's common name (the device id) in :data:`CLIENT_DEVICE_HEADER`. A header is
easy to forge for anyone who reaches the Serve port directly, so the edge also sends a per-install
secret in :data:`EDGE_SECRET_HEADER` (and removes both headers from what clients send); the apps
trust the device header only together with that secret.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from app.config import Settings

CLIENT_DEVICE_HEADER = "x-greenhouse-client-device"
EDGE_SECRET_HEADER = "x-greenhouse-edge-secret"
EDGE_SECRET_FILE = "edge-secret"


def client_device(headers: Mapping[str, str], edge_secret: bytes | None) -> str | None:
    """The device id of a client certificate the edge verified, or ``None`` (no certificate, no
    edge secret configured, or the request did not come through the edge)."""
    device = headers.get(CLIENT_DEVICE_HEADER)
    if not device or not edge_secret:
        return None
    presented = headers.get(EDGE_SECRET_HEADER, "").encode()
    return device if hmac.compare_digest(presented, edge_secret) else None


def edge_secret_path(settings: Settings) -> Path:
    """Where the edge secret lives: ``security.edge_secret_file`` (a mounted secret), else a file
    the edge makes under ``data_dir/secrets``."""
    return settings.security.edge_secret_file or settings.secrets_dir / EDGE_SECRET_FILE


def ensure_edge_secret(path: Path) -> bytes:
    """The edge secret in ``path``, made first (a 0600 file) when there is none."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32))
    return path.read_text().strip().encode()


def read_edge_secret(path: Path) -> bytes | None:
    """The edge secret in ``path`` when there is one (apps read it; only the edge makes it)."""
    return path.read_text().strip().encode() if path.exists() else None
