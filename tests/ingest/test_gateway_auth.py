"""Device credentials at the gateway: who may post, and which readings a credential covers.

The real :class:`DeviceRegistry` on an embedded metadata store; the service in-process, and the
FastAPI app in-process (no Ray) where headers matter (client certificates from the TLS edge, the
read routes). The same matrix over real HTTPS through the TLS edge is the security suite's.
"""

from __future__ import annotations

import warnings
from datetime import datetime, timezone

import orjson
import pytest

from app.bus import open_bus, partition_for_key
from app.config import Settings
from app.contracts.deadletter import DeadLetter
from app.ingest.api import create_api
from app.ingest.gateway import JSON_V2, IngestService
from app.metadata import open_metadata
from app.security.credentials import DeviceRegistry
from app.security.edge import CLIENT_DEVICE_HEADER, EDGE_SECRET_HEADER
from tests.ingest.conftest import make_devices

with warnings.catch_warnings():  # Starlette asks for httpx2, which the project does not use
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

TOPIC = "greenhouse.sensors"
NOW = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
EDGE_SECRET = b"edge-secret-for-tests"
UNAUTHORIZED = {"error_code": 40101, "message": "missing or invalid credentials"}


class Clock:
    """Monotonic seconds that move only when told."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gateway(tmp_path, clock):
    """``(service, devices, admin)``: the gateway's registry caches verified tokens for 2 s on
    ``clock``; ``admin`` is another registry on the same store (the CLI, another process)."""
    settings = Settings(data_dir=tmp_path / "gh")
    devices = make_devices(settings.metadata_url, cache_ttl_s=2.0, clock=clock)
    service = IngestService(settings, open_bus(settings.bus_url), devices.registry, clock=lambda: NOW)
    admin = DeviceRegistry(open_metadata(settings.metadata_url))
    return service, devices, admin


def post(service: IngestService, values, authorization: str | None, **record) -> tuple[int, dict]:
    body = orjson.dumps({"records": [{"value": v, **record} for v in values]})
    r = service.produce(TOPIC, body, content_type=JSON_V2, authorization=authorization)
    return r.status, r.body


def dead_letters(service: IngestService) -> list[DeadLetter]:
    return [DeadLetter.from_json(m.value) for m in service.bus.consumer("check-dead", [service.settings.topics.deadletter]).poll(1000, 0.5)]


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer wrong", "Basic dXNlcjpwdw==", "ghd_0123456789abcdef_" + "x" * 43, "gho_0123456789abcdef_" + "x" * 43])
def test_no_or_wrong_credential_is_401_with_one_reason(gateway, reading, authorization):
    service, devices, _ = gateway
    status, body = post(service, [reading(0)], authorization)
    assert (status, body) == (401, UNAUTHORIZED)
    assert service.bus.end_offsets(TOPIC) == {p: 0 for p in range(service.settings.topics.partitions)}
    assert post(service, [reading(0)], devices.auth())[0] == 200


def test_a_token_sent_without_its_scheme_or_for_another_device_is_refused(gateway, reading):
    service, devices, _ = gateway
    assert post(service, [reading(0)], devices.tokens["gh-01"])[0] == 401  # no "Bearer"
    assert post(service, [reading(0)], devices.auth() + "x")[0] == 401
    assert post(service, [reading(0)], "bearer " + devices.tokens["gh-01"])[0] == 200  # the scheme is case-insensitive


def test_revocation_takes_effect_within_the_cache_ttl_without_a_restart(gateway, reading, clock):
    service, devices, admin = gateway
    assert post(service, [reading(0)], devices.auth())[0] == 200
    admin.revoke("gh-01-climate")  # another process: the gateway's cache does not know yet
    clock.now_s += 1.0
    assert post(service, [reading(1)], devices.auth())[0] == 200  # within the 2 s TTL
    clock.now_s += 1.5
    assert post(service, [reading(2)], devices.auth()) == (401, UNAUTHORIZED)
    assert post(service, [reading(3, "gh-02")], devices.auth("gh-02"))[0] == 200  # other devices unaffected


def test_a_rotated_token_replaces_the_old_one_within_the_ttl(gateway, reading, clock):
    service, devices, admin = gateway
    old = devices.auth()
    assert post(service, [reading(0)], old)[0] == 200
    new = admin.rotate("gh-01-climate")
    assert post(service, [reading(1)], f"Bearer {new}")[0] == 200  # a new token is looked up at once
    clock.now_s += 2.5
    assert post(service, [reading(2)], old)[0] == 401


def test_another_greenhouses_readings_are_refused_per_record_and_403_when_none_is_accepted(gateway, reading):
    service, devices, _ = gateway
    status, body = post(service, [reading(0), reading(1, "gh-02")], devices.auth("gh-01"))
    assert status == 200
    assert [(o["error_code"], o["error"]) for o in body["offsets"]] == [(None, None), (40302, "greenhouse_id: not authorized for greenhouse 'gh-02'")]
    status, body = post(service, [reading(2, "gh-02"), reading(3, "gh-02")], devices.auth("gh-01"))
    assert status == 403 and body["error_code"] == 40302 and [o["error_code"] for o in body["offsets"]] == [40302, 40302]
    assert "not authorized" in body["message"]
    letters = dead_letters(service)
    assert {(d.error_code, d.payload["value"]["greenhouse_id"]) for d in letters} == {(40302, "gh-02")} and len(letters) == 3


def test_another_devices_readings_are_refused_per_record(gateway, reading):
    service, devices, _ = gateway
    stranger = {**reading(0), "device_id": "gh-01-weather"}
    status, body = post(service, [stranger, reading(1)], devices.auth())
    assert status == 200 and [(o["error_code"], o["error"]) for o in body["offsets"]] == [(40303, "device_id: not authorized for device 'gh-01-weather'"), (None, None)]
    status, body = post(service, [stranger], devices.auth())
    assert (status, body["error_code"]) == (403, 40303)


def test_a_foreign_partition_alone_is_403_and_mixed_with_contract_errors_still_403(gateway, reading):
    service, devices, _ = gateway
    partitions = service.settings.topics.partitions
    foreign = (partition_for_key(b"gh-01", partitions) + 1) % partitions
    status, body = post(service, [reading(0)], devices.auth(), partition=foreign)
    assert (status, body["error_code"], body["offsets"][0]["error_code"]) == (403, 40304, 40304)
    status, body = post(service, [reading(1, rh_pct=140.0), reading(2, "gh-02")], devices.auth())
    assert (status, body["error_code"]) == (403, 40302)
    assert [o["error_code"] for o in body["offsets"]] == [42206, 40302]
    status, body = post(service, [reading(1, rh_pct=140.0)], devices.auth())
    assert (status, body["error_code"]) == (422, 42206)


# -- over HTTP (in-process ASGI): the read routes and client certificates from the TLS edge ---------


@pytest.fixture
def http(gateway):
    service, devices, admin = gateway
    with TestClient(create_api(service, edge_secret=EDGE_SECRET)) as client:
        yield client, devices, admin


def produce(client: TestClient, values, **headers):
    return client.post(f"/topics/{TOPIC}", content=orjson.dumps({"records": [{"value": v} for v in values]}), headers={"content-type": JSON_V2, **headers})


def test_read_routes_need_a_credential_too(http):
    client, devices, _ = http
    for path in ("/topics", f"/topics/{TOPIC}"):
        r = client.get(path)
        assert r.status_code == 401 and r.json() == UNAUTHORIZED and r.headers["www-authenticate"].startswith("Bearer")
        assert client.get(path, headers={"authorization": "Bearer nope"}).status_code == 401
        assert client.get(path, headers={"authorization": devices.auth()}).status_code == 200
    assert client.get("/healthz").status_code == 200  # liveness stays open


def test_a_client_certificate_from_the_edge_is_a_credential_only_with_the_edge_secret(http, reading, clock):
    client, devices, admin = http
    via_edge = {CLIENT_DEVICE_HEADER: "gh-01-climate", EDGE_SECRET_HEADER: EDGE_SECRET.decode()}
    r = produce(client, [reading(0)], **via_edge)
    assert r.status_code == 200 and r.json()["offsets"][0]["error_code"] is None
    assert produce(client, [reading(1, "gh-02")], **via_edge).json()["error_code"] == 40302  # the certificate's device, its greenhouse only
    assert produce(client, [reading(2)], **{CLIENT_DEVICE_HEADER: "gh-01-climate"}).status_code == 401  # forged: no edge secret
    assert produce(client, [reading(2)], **{CLIENT_DEVICE_HEADER: "gh-01-climate", EDGE_SECRET_HEADER: "guess"}).status_code == 401
    assert produce(client, [reading(2)], **{**via_edge, CLIENT_DEVICE_HEADER: "no-such-device"}).status_code == 401
    assert produce(client, [reading(2)], **via_edge, authorization="Bearer wrong").status_code == 401  # a wrong token is not rescued by a certificate
    assert client.get("/topics", headers=via_edge).status_code == 200
    admin.revoke("gh-01-climate")
    clock.now_s += 2.5  # past the registry's cache TTL: a certificate's device is re-checked like a token
    assert produce(client, [reading(3)], **via_edge).status_code == 401


def test_without_an_edge_secret_no_certificate_header_is_trusted(gateway, reading):
    service, _, _ = gateway
    with TestClient(create_api(service)) as client:
        r = produce(client, [reading(0)], **{CLIENT_DEVICE_HEADER: "gh-01-climate", EDGE_SECRET_HEADER: ""})
        assert r.status_code == 401
