"""Device and operator credentials: hashed at rest, shown once, revoked and rotated within the cache TTL."""

from __future__ import annotations

import pytest

from app.metadata import DEVICES, OPERATORS, open_metadata
from app.security.credentials import CONTROL_WRITE, FORECAST_READ, CredentialError, DeviceIdentity, DeviceRegistry, OperatorRegistry, bearer_token
from app.security.edge import CLIENT_DEVICE_HEADER, EDGE_SECRET_HEADER, client_device, ensure_edge_secret, read_edge_secret


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def store(tmp_path):
    s = open_metadata(f"file://{tmp_path / 'meta'}")
    yield s
    s.close()


def test_a_device_token_names_its_device_and_is_stored_only_as_a_hash(store):
    devices = DeviceRegistry(store)
    token = devices.add("dev-1", "gh-1")
    assert devices.authenticate(token) == DeviceIdentity("dev-1", "gh-1")
    raw = store.collection(DEVICES).find_one({"_id": "dev-1"})
    assert token not in str(raw) and token.rsplit("_", 1)[-1] not in str(raw)
    assert {"token_hash", "salt", "credential_id", "status", "created_at", "rotated_at"} <= set(raw)
    assert "token_hash" not in devices.list()[0] and "salt" not in devices.list()[0]


@pytest.mark.parametrize("bad", [None, "", "ghd_", "nonsense", "gho_0123456789abcdef_" + "x" * 43])
def test_malformed_or_foreign_tokens_authenticate_no_one(store, bad):
    devices = DeviceRegistry(store)
    devices.add("dev-1", "gh-1")
    assert devices.authenticate(bad) is None


def test_a_guessed_secret_with_a_real_credential_id_is_refused(store):
    devices = DeviceRegistry(store)
    token = devices.add("dev-1", "gh-1")
    prefix, credential_id, secret = token.split("_", 2)
    forged = f"{prefix}_{credential_id}_{'A' * len(secret)}"
    assert devices.authenticate(forged) is None


def test_revocation_takes_effect_after_the_cache_ttl_on_another_registry(store):
    clock = FakeClock()
    gateway = DeviceRegistry(store, cache_ttl_s=2.0, clock=clock)  # a running gateway
    admin = DeviceRegistry(store)  # the CLI, in another process
    token = admin.add("dev-1", "gh-1")
    assert gateway.authenticate(token) is not None
    admin.revoke("dev-1")
    clock.now_s = 1.0
    assert gateway.authenticate(token) is not None  # still cached: the documented window
    clock.now_s = 2.5
    assert gateway.authenticate(token) is None
    assert admin.list()[0]["status"] == "revoked"


def test_rotation_replaces_the_token_and_reactivates(store):
    devices = DeviceRegistry(store, cache_ttl_s=0)
    old = devices.add("dev-1", "gh-1")
    devices.revoke("dev-1")
    new = devices.rotate("dev-1")
    assert devices.authenticate(new) == DeviceIdentity("dev-1", "gh-1")
    assert devices.authenticate(old) is None


def test_registry_refuses_duplicates_unknown_ids_and_bad_names(store):
    devices = DeviceRegistry(store)
    devices.add("dev-1", "gh-1")
    with pytest.raises(CredentialError, match="already exists"):
        devices.add("dev-1", "gh-2")
    with pytest.raises(CredentialError, match="no such id"):
        devices.revoke("dev-9")
    with pytest.raises(CredentialError, match="must match"):
        devices.add("dev 1", "gh-1")


def test_a_certificate_names_an_active_device_only(store):
    clock = FakeClock()
    devices = DeviceRegistry(store, cache_ttl_s=2.0, clock=clock)
    devices.add("dev-1", "gh-1")
    assert devices.by_certificate("dev-1") == DeviceIdentity("dev-1", "gh-1")
    DeviceRegistry(store).revoke("dev-1")  # the CLI, elsewhere
    assert devices.by_certificate("dev-1") is not None  # cached within the TTL
    clock.now_s = 2.5
    assert devices.by_certificate("dev-1") is None
    assert devices.by_certificate("dev-2") is None


def test_operator_scopes_and_expiry(store):
    operators = OperatorRegistry(store)
    token = operators.add("alice", [FORECAST_READ, CONTROL_WRITE])
    who = operators.authenticate(token)
    assert who is not None and who.name == "alice" and who.allows(CONTROL_WRITE) and not who.allows("control:simulate")
    expired = operators.add("old-service", [FORECAST_READ], valid_days=-1)
    assert operators.authenticate(expired) is None
    assert operators.authenticate(operators.rotate("old-service")) is not None
    with pytest.raises(CredentialError, match="scopes"):
        operators.add("bob", ["root"])
    with pytest.raises(CredentialError, match="scopes"):
        operators.add("bob", [])
    assert "token_hash" not in str(operators.list())
    assert store.collection(OPERATORS).count_documents() == 2


def test_a_device_token_is_not_an_operator_token(store):
    token = DeviceRegistry(store).add("dev-1", "gh-1")
    assert OperatorRegistry(store).authenticate(token) is None


@pytest.mark.parametrize(("header", "token"), [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None), ("Bearer", None), (None, None), ("", None)])
def test_bearer_header_parsing(header, token):
    assert bearer_token(header) == token


def test_the_client_device_header_is_trusted_only_with_the_edge_secret(tmp_path):
    path = tmp_path / "secrets" / "edge-secret"
    assert read_edge_secret(path) is None
    secret = ensure_edge_secret(path)
    assert ensure_edge_secret(path) == secret == read_edge_secret(path)
    assert (tmp_path / "secrets" / "edge-secret").stat().st_mode & 0o077 == 0
    via_edge = {CLIENT_DEVICE_HEADER: "dev-1", EDGE_SECRET_HEADER: secret.decode()}
    assert client_device(via_edge, secret) == "dev-1"
    assert client_device({CLIENT_DEVICE_HEADER: "dev-1", EDGE_SECRET_HEADER: "guess"}, secret) is None
    assert client_device({CLIENT_DEVICE_HEADER: "dev-1"}, secret) is None
    assert client_device(via_edge, None) is None
