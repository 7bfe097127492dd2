"""``greenhouse devices`` and ``greenhouse operators``: who may post readings and who may steer.

A new or rotated token is printed once, on stdout, and is never stored: keep it in the device's
secret store (or the operator's vault) right away. Everything else goes to stderr.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app.security.credentials import SCOPES, CredentialError, DeviceRegistry, OperatorRegistry

devices_app = typer.Typer(help="Device credentials: each device posts readings for one greenhouse with its own token.", no_args_is_help=True)
operators_app = typer.Typer(help=f"Operator tokens for people and services, with scopes ({', '.join(SCOPES)}).", no_args_is_help=True)
console = Console(stderr=True)
ConfigOpt = typer.Option(None, "--config", "-c", help="YAML settings file (GH_* environment variables override it).")
JsonOpt = typer.Option(False, "--json", help="Print JSON lines instead of a table.")
Registry = TypeVar("Registry", DeviceRegistry, OperatorRegistry)


@contextmanager
def _registry(kind: Callable[[Any], Registry], config: Path | None) -> Iterator[Registry]:
    from app.config import load_settings

    try:
        registry = kind(load_settings(config))
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    try:
        yield registry
    except CredentialError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    finally:
        registry.close()


def _print_token(token: str, who: str) -> None:
    print(token)
    console.print(f"the token of {escape(who)} is shown once (above, on stdout): store it now; it cannot be shown again, only rotated")


def _show(rows: list[dict[str, Any]], columns: list[str], as_json: bool, title: str) -> None:
    if as_json:
        for row in rows:
            print(json.dumps({("id" if c == "_id" else c): row.get(c) for c in columns}, default=str))
        return
    table = Table(title=title)
    for column in columns:
        table.add_column("id" if column == "_id" else column)
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    console.print(table)


def _cell(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, list):
        return ",".join(value)
    return "" if value is None else str(value)


@devices_app.command("add")
def add_device(
    device_id: str = typer.Argument(..., help="The device's id (the device_id its readings carry)."),
    greenhouse: str = typer.Option(..., "--greenhouse", "-g", help="The one greenhouse it may post for."),
    config: Path | None = ConfigOpt,
) -> None:
    """Register a device and print its new token (once)."""
    with _registry(DeviceRegistry.from_settings, config) as devices:
        _print_token(devices.add(device_id, greenhouse), device_id)


@devices_app.command("rotate")
def rotate_device(device_id: str, config: Path | None = ConfigOpt) -> None:
    """Give a device a new token (printed once); the old one stops working within seconds."""
    with _registry(DeviceRegistry.from_settings, config) as devices:
        _print_token(devices.rotate(device_id), device_id)


@devices_app.command("revoke")
def revoke_device(device_id: str, config: Path | None = ConfigOpt) -> None:
    """Refuse a device's readings from now on (running gateways within security.credential_cache_ttl_s)."""
    with _registry(DeviceRegistry.from_settings, config) as devices:
        devices.revoke(device_id)
        console.print(f"revoked {escape(device_id)}")


@devices_app.command("list")
def list_devices(as_json: bool = JsonOpt, config: Path | None = ConfigOpt) -> None:
    """List devices: greenhouse, status, when created, rotated and last seen."""
    with _registry(DeviceRegistry.from_settings, config) as devices:
        _show(devices.list(), ["_id", "greenhouse_id", "status", "created_at", "rotated_at", "last_seen_at"], as_json, "Devices")


@devices_app.command("cert")
def device_certificate(
    device_id: str, out: Path = typer.Option(Path("."), "--out", "-o", help="Directory for <device>.crt and <device>.key (the key is written 0600)."), config: Path | None = ConfigOpt
) -> None:
    """Issue a client certificate for a registered device from the local CA (mTLS on one machine;
    production uses its own PKI with the device id as the certificate's common name)."""
    import shutil

    from app.config import load_settings
    from app.security.pki import LocalCA

    with _registry(DeviceRegistry.from_settings, config) as devices:
        if devices.by_certificate(device_id) is None:
            raise CredentialError(f"{device_id!r} is not an active device: add it first")
        ca = LocalCA.ensure(load_settings(config).data_dir / "pki")
        issued = ca.issue(device_id, client=True)
        out.mkdir(parents=True, exist_ok=True)
        for path in (issued.cert_path, issued.key_path):
            shutil.move(path, out / path.name)
        console.print(f"wrote {escape(str(out / issued.cert_path.name))} and {escape(str(out / issued.key_path.name))}; the edge trusts {escape(str(ca.cert_path))}")


@operators_app.command("add")
def add_operator(
    name: str = typer.Argument(..., help="A person's or service's name (recorded with every decision it asks for)."),
    scope: list[str] = typer.Option(..., "--scope", "-s", help=f"A scope to grant (repeat): {', '.join(SCOPES)}."),
    valid_days: float = typer.Option(90.0, min=0.01, max=3650, help="Days until the token expires."),
    config: Path | None = ConfigOpt,
) -> None:
    """Register an operator and print its new token (once)."""
    with _registry(OperatorRegistry.from_settings, config) as operators:
        _print_token(operators.add(name, scope, valid_days=valid_days), name)


@operators_app.command("rotate")
def rotate_operator(name: str, valid_days: float = typer.Option(90.0, min=0.01, max=3650, help="Days until the new token expires."), config: Path | None = ConfigOpt) -> None:
    """Give an operator a new token (printed once); the old one stops working within seconds."""
    with _registry(OperatorRegistry.from_settings, config) as operators:
        _print_token(operators.rotate(name, valid_days=valid_days), name)


@operators_app.command("revoke")
def revoke_operator(name: str, config: Path | None = ConfigOpt) -> None:
    """Refuse an operator's token from now on."""
    with _registry(OperatorRegistry.from_settings, config) as operators:
        operators.revoke(name)
        console.print(f"revoked {escape(name)}")


@operators_app.command("list")
def list_operators(as_json: bool = JsonOpt, config: Path | None = ConfigOpt) -> None:
    """List operators: scopes, status, expiry and last use."""
    with _registry(OperatorRegistry.from_settings, config) as operators:
        _show(operators.list(), ["_id", "scopes", "status", "expires_at", "rotated_at", "last_seen_at"], as_json, "Operators")
