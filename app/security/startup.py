"""Refuse to serve beyond this machine with what is only safe on it.

On loopback (the demo, the tests, one developer's machine) the product makes what it needs: a
command signing key and a CA for this machine. Anywhere else those would be working defaults that
nobody chose, so the gateway, the control app and the TLS edge refuse to start, and say why, when
they listen beyond loopback with a machine-made signing key, no operator-chosen TLS certificate, no
registered device, or a simulated plant.
"""

from __future__ import annotations

import ipaddress

from app.config import Settings


class UnsafeDeployment(RuntimeError):
    """The settings are only safe on loopback; the message lists what to change."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposed(settings: Settings) -> bool:
    """Whether the Serve port or the TLS edge listens beyond loopback."""
    return not (is_loopback(settings.serve.host) and is_loopback(settings.security.https_host))


def deployment_problems(settings: Settings, *, devices_registered: bool | None = None) -> list[str]:
    """What must change before these settings may listen beyond loopback (empty when nothing
    must, or when they do not). ``devices_registered``: ``None`` when the caller does not check."""
    if not exposed(settings):
        return []
    problems = []
    if settings.control.signing_key_file is None:
        problems.append("control.signing_key_file is not set: a key generated for this machine is for loopback only (greenhouse keys new)")
    if settings.security.tls_cert_file is None or settings.security.tls_key_file is None or settings.security.ca_file is None:
        problems.append("security.tls_cert_file, tls_key_file and ca_file are not all set: the local CA is for loopback only")
    if settings.control.simulated_plant:
        problems.append("control.simulated_plant is on: callers could send commands for any instant")
    if devices_registered is False:
        problems.append("no device is registered: add one with `greenhouse devices add DEVICE --greenhouse GH`")
    return problems


def refuse_unsafe(settings: Settings, *, devices_registered: bool | None = None) -> None:
    """Raise :class:`UnsafeDeployment` listing :func:`deployment_problems`, if any."""
    problems = deployment_problems(settings, devices_registered=devices_registered)
    if problems:
        where = f"serve.host={settings.serve.host}, security.https_host={settings.security.https_host}"
        raise UnsafeDeployment(f"refusing to listen beyond loopback ({where}): " + "; ".join(problems))
