"""The local CA: real TLS handshakes against its certificates, verified by the client, and mTLS
with a device certificate; keys never readable by others."""

from __future__ import annotations

import socket
import ssl
import stat
import threading

import pytest

from app.security.pki import LocalCA, ensure_local_server_cert


def serve_once(server_ctx: ssl.SSLContext) -> tuple[int, dict, threading.Thread]:
    """A TLS server on a free loopback port that completes one handshake and records the peer."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: dict = {}

    def run() -> None:
        with listener:
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    seen["peer"] = tls.getpeercert()
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError) as exc:
                seen["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener.getsockname()[1], seen, thread


def handshake(port: int, client_ctx: ssl.SSLContext, server_hostname: str = "localhost") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
        return tls.recv(2)


def server_context(cert, cafile=None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert.cert_path, cert.key_path)
    if cafile is not None:  # mTLS: a client certificate from this CA is required
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile)
    return ctx


def test_the_ca_is_created_once_and_keys_are_private(tmp_path):
    ca_file, server = ensure_local_server_cert(tmp_path / "pki")
    first = (ca_file.read_bytes(), server.cert_path.read_bytes())
    again_ca, again = ensure_local_server_cert(tmp_path / "pki")
    assert (again_ca.read_bytes(), again.cert_path.read_bytes()) == first  # reused, not reissued
    for key in (tmp_path / "pki" / "ca.key", server.key_path):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_a_client_verifies_the_server_against_the_local_ca_and_refuses_others(tmp_path):
    ca_file, server = ensure_local_server_cert(tmp_path / "pki")
    port, seen, thread = serve_once(server_context(server))
    assert handshake(port, ssl.create_default_context(cafile=ca_file)) == b"ok"
    thread.join(5)

    other_ca = LocalCA.ensure(tmp_path / "other")  # a stranger's CA: the server is not trusted
    port, seen, thread = serve_once(server_context(server))
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(port, ssl.create_default_context(cafile=other_ca.cert_path))
    thread.join(5)

    port, seen, thread = serve_once(server_context(server))
    with pytest.raises(ssl.SSLCertVerificationError, match="match|mismatch"):
        handshake(port, ssl.create_default_context(cafile=ca_file), server_hostname="greenhouse.example")
    thread.join(5)


def test_mtls_names_the_device_and_a_client_without_a_certificate_is_refused(tmp_path):
    ca = LocalCA.ensure(tmp_path / "pki")
    _, server = ensure_local_server_cert(tmp_path / "pki")
    device = ca.issue("gh-01-climate", client=True)

    client = ssl.create_default_context(cafile=ca.cert_path)
    client.load_cert_chain(device.cert_path, device.key_path)
    port, seen, thread = serve_once(server_context(server, cafile=ca.cert_path))
    assert handshake(port, client) == b"ok"
    thread.join(5)
    assert dict(x[0] for x in seen["peer"]["subject"])["commonName"] == "gh-01-climate"

    port, seen, thread = serve_once(server_context(server, cafile=ca.cert_path))
    with pytest.raises((ssl.SSLError, ConnectionError)):  # TLS 1.3: the refusal arrives with the first read
        handshake(port, ssl.create_default_context(cafile=ca.cert_path))
    thread.join(5)
    assert "error" in seen and "peer" not in seen
