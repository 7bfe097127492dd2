"""The device auth matrix over real HTTPS: the gateway's app under uvicorn, the TLS edge (HAProxy)
in front, clients that verify the local CA. No token, a wrong one, a revoked device, another
greenhouse's device, a device certificate, plain HTTP: each gets its documented answer."""

from __future__ import annotations

import ssl
import threading
import time
from datetime import datetime, timezone

import httpx
import pytest
import uvicorn

from app.bus import open_bus
from app.config import Settings
from app.ingest.api import create_api
from app.ingest.gateway import JSON_V2, IngestService
from app.security.credentials import DeviceRegistry
from app.security.edge import edge_secret_path, read_edge_secret
from app.security.pki import LocalCA
from app.serve.tls_edge import TlsEdge
from app.serve.tuning import free_port

TOPIC = "greenhouse.sensors"
TTL_S = 0.5


def reading(greenhouse: str, device: str) -> dict:
    return {"greenhouse_id": greenhouse, "device_id": device, "ts": datetime.now(timezone.utc).isoformat(), "measurements": {"air_temp_c": 21.0}}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """``(https url, CA path, settings, tokens)``: dev-a and dev-b of gh-a, dev-z of gh-z, dev-r revoked."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("https"), security={"https_port": 0, "credential_cache_ttl_s": TTL_S})
    admin = DeviceRegistry.from_settings(settings)
    tokens = {d: admin.add(d, gh) for d, gh in [("dev-a", "gh-a"), ("dev-b", "gh-a"), ("dev-z", "gh-z"), ("dev-r", "gh-a")]}
    admin.revoke("dev-r")
    service = IngestService(settings, open_bus(settings.bus_url), DeviceRegistry.from_settings(settings))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_api(service, edge_secret=lambda: read_edge_secret(edge_secret_path(settings))), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    with TlsEdge(settings, port) as edge:
        yield edge.url, str(edge.tls.ca_path), settings, tokens, admin
    server.should_exit = True
    thread.join(10)


def post(gateway, records: list[dict], *, token: str | None = None, verify=None) -> httpx.Response:
    url, ca, *_ = gateway
    headers = {"Content-Type": JSON_V2, **({"Authorization": f"Bearer {token}"} if token else {})}
    return httpx.post(f"{url}/topics/{TOPIC}", json={"records": [{"value": r} for r in records]}, headers=headers, verify=verify or ca, timeout=30)


def test_a_device_posts_its_own_readings(gateway):
    *_, tokens, _ = gateway
    res = post(gateway, [reading("gh-a", "dev-a")], token=tokens["dev-a"])
    assert res.status_code == 200 and res.json()["offsets"][0]["error_code"] is None


@pytest.mark.parametrize("token", [None, "ghd_0123456789abcdef_" + "A" * 43, "not-a-token"])
def test_no_or_a_wrong_token_is_401(gateway, token):
    res = post(gateway, [reading("gh-a", "dev-a")], token=token)
    assert res.status_code == 401 and res.json()["error_code"] == 40101


def test_a_revoked_device_is_401_and_a_revocation_takes_effect_within_the_ttl(gateway):
    *_, tokens, admin = gateway
    assert post(gateway, [reading("gh-a", "dev-r")], token=tokens["dev-r"]).status_code == 401
    assert post(gateway, [reading("gh-a", "dev-b")], token=tokens["dev-b"]).status_code == 200
    admin.revoke("dev-b")
    time.sleep(TTL_S + 0.2)
    assert post(gateway, [reading("gh-a", "dev-b")], token=tokens["dev-b"]).status_code == 401


def test_another_greenhouses_device_is_403_per_record(gateway):
    *_, tokens, _ = gateway
    refused = post(gateway, [reading("gh-a", "dev-z")], token=tokens["dev-z"])
    assert refused.status_code == 403 and refused.json()["error_code"] == 40302
    mixed = post(gateway, [reading("gh-z", "dev-z"), reading("gh-a", "dev-z")], token=tokens["dev-z"]).json()
    assert [o["error_code"] for o in mixed["offsets"]] == [None, 40302]


def test_a_device_certificate_is_a_credential_and_a_strangers_is_refused(gateway, tmp_path):
    _, ca, settings, _, _ = gateway
    own = LocalCA.ensure(settings.data_dir / "pki").issue("dev-a", client=True)
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(str(own.cert_path), str(own.key_path))
    assert post(gateway, [reading("gh-a", "dev-a")], verify=ctx).status_code == 200
    assert post(gateway, [reading("gh-z", "dev-a")], verify=ctx).json()["error_code"] == 40302
    stranger = LocalCA.ensure(tmp_path / "other").issue("dev-a", client=True)
    bad = ssl.create_default_context(cafile=ca)
    bad.load_cert_chain(str(stranger.cert_path), str(stranger.key_path))
    with pytest.raises(httpx.HTTPError):
        post(gateway, [reading("gh-a", "dev-a")], verify=bad)


def test_plain_http_and_unverified_servers_are_refused(gateway):
    url, _, _, tokens, _ = gateway
    with pytest.raises(httpx.HTTPError):
        httpx.post(url.replace("https://localhost", "http://127.0.0.1") + f"/topics/{TOPIC}", json={"records": []})
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        post(gateway, [reading("gh-a", "dev-a")], token=tokens["dev-a"], verify=True)
