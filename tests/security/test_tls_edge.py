"""The TLS edge (HAProxy) in front of a plain HTTP upstream: verified HTTPS, device certificates
passed on with the edge secret, forged headers dropped, plain HTTP and strangers' certificates refused."""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from app.config import Settings
from app.security.edge import CLIENT_DEVICE_HEADER, EDGE_SECRET_HEADER, client_device, edge_secret_path, read_edge_secret
from app.security.pki import LocalCA
from app.serve.tls_edge import TlsEdge


def client_context(ca_path, cert) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_path))
    ctx.load_cert_chain(str(cert.cert_path), str(cert.key_path))
    return ctx


class EchoHeaders(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    root = tmp_path_factory.mktemp("edge")
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), EchoHeaders)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    settings = Settings(data_dir=root, security={"https_port": 0})
    with TlsEdge(settings, upstream.server_address[1]) as running:
        yield settings, running
    upstream.shutdown()


def test_https_is_verified_against_the_local_ca_and_no_device_is_claimed_without_a_certificate(edge):
    settings, running = edge
    res = httpx.get(f"{running.url}/x", verify=str(running.tls.ca_path), headers={CLIENT_DEVICE_HEADER: "forged-device", EDGE_SECRET_HEADER: "guess"})
    seen = res.json()
    assert res.status_code == 200 and seen["x-forwarded-proto"] == "https"
    assert CLIENT_DEVICE_HEADER not in seen  # the forged header is dropped
    assert client_device(seen, read_edge_secret(edge_secret_path(settings))) is None


def test_a_device_certificate_names_the_device_with_the_edge_secret(edge):
    settings, running = edge
    cert = LocalCA.ensure(settings.data_dir / "pki").issue("dev-7", client=True)
    seen = httpx.get(f"{running.url}/x", verify=client_context(running.tls.ca_path, cert)).json()
    assert seen[CLIENT_DEVICE_HEADER] == "dev-7"
    assert client_device(seen, read_edge_secret(edge_secret_path(settings))) == "dev-7"


def test_a_certificate_from_another_ca_is_refused(edge, tmp_path):
    _, running = edge
    stranger = LocalCA.ensure(tmp_path / "other-ca").issue("dev-7", client=True)
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, ssl.SSLError)):
        httpx.get(f"{running.url}/x", verify=client_context(running.tls.ca_path, stranger))


def test_a_client_that_does_not_trust_the_ca_refuses_the_server(edge):
    _, running = edge
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{running.url}/x")


def test_plain_http_to_the_https_port_is_refused(edge):
    _, running = edge
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError)):
        httpx.get(f"http://127.0.0.1:{running.port}/x")
    # the private files are the owner's only
    assert all(p.stat().st_mode & 0o077 == 0 for p in running.tls.bundle_path.parent.iterdir())
