"""`greenhouse devices` and `greenhouse operators` as a user meets them: a token shown once on
stdout, listings without secrets, clear errors with a non-zero exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from app.metadata import open_metadata
from app.security.credentials import DeviceIdentity, DeviceRegistry, OperatorRegistry

REPO = Path(__file__).resolve().parents[2]


def cli(args: list[str], data_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "GH_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "app.cli.main", *args], cwd=REPO, capture_output=True, text=True, timeout=60, env=env)


def test_devices_add_list_rotate_revoke(tmp_path):
    added = cli(["devices", "add", "dev-1", "--greenhouse", "gh-1"], tmp_path)
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert "shown once" in added.stderr and token.startswith("ghd_")
    registry = DeviceRegistry(open_metadata(f"file://{tmp_path / 'metadata'}"), cache_ttl_s=0)
    assert registry.authenticate(token) == DeviceIdentity("dev-1", "gh-1")

    listed = cli(["devices", "list", "--json"], tmp_path)
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert row["id"] == "dev-1" and row["greenhouse_id"] == "gh-1" and row["status"] == "active"
    assert token not in listed.stdout and "hash" not in listed.stdout

    rotated = cli(["devices", "rotate", "dev-1"], tmp_path).stdout.strip()
    assert registry.authenticate(token) is None and registry.authenticate(rotated) is not None
    assert cli(["devices", "revoke", "dev-1"], tmp_path).returncode == 0
    assert registry.authenticate(rotated) is None


def test_devices_errors_exit_non_zero_with_a_reason(tmp_path):
    assert cli(["devices", "add", "dev-1", "-g", "gh-1"], tmp_path).returncode == 0
    again = cli(["devices", "add", "dev-1", "-g", "gh-1"], tmp_path)
    assert again.returncode == 1 and "already exists" in again.stderr and again.stdout == ""
    unknown = cli(["devices", "revoke", "dev-9"], tmp_path)
    assert unknown.returncode == 1 and "no such id" in unknown.stderr
    bad = cli(["devices", "add", "dev:1", "-g", "gh-1"], tmp_path)
    assert bad.returncode == 1 and "must match" in bad.stderr


def test_operators_with_scopes_and_a_device_certificate(tmp_path):
    made = cli(["operators", "add", "alice", "-s", "forecast:read", "-s", "control:write", "--valid-days", "7"], tmp_path)
    assert made.returncode == 0, made.stderr
    who = OperatorRegistry(open_metadata(f"file://{tmp_path / 'metadata'}")).authenticate(made.stdout.strip())
    assert who is not None and who.scopes == {"forecast:read", "control:write"}
    wrong = cli(["operators", "add", "bob", "-s", "admin"], tmp_path)
    assert wrong.returncode == 1 and "scopes must be some of" in wrong.stderr

    assert cli(["devices", "add", "dev-2", "-g", "gh-1"], tmp_path).returncode == 0
    cert = cli(["devices", "cert", "dev-2", "--out", str(tmp_path / "certs")], tmp_path)
    assert cert.returncode == 0, cert.stderr
    assert (tmp_path / "certs" / "dev-2.key").stat().st_mode & 0o077 == 0
    issued = x509.load_pem_x509_certificate((tmp_path / "certs" / "dev-2.crt").read_bytes())
    assert issued.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "dev-2"
    assert cli(["devices", "cert", "dev-9"], tmp_path).returncode == 1  # not a registered device
