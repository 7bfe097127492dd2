"""Make the stack's TLS certificates and secrets once, under its run dir, and reuse them afterwards.

Usage: ``python stack/make_credentials.py <run dir>`` (``stack/stack up`` runs it before starting
anything; a second run changes nothing and takes well under a second).

``<run dir>/tls/`` (mode 0700), made by the project's local CA (:mod:`app.security.pki`):

- ``ca.crt``, ``ca.key``: the CA every client verifies the engines with;
- ``localhost.crt``, ``localhost.key``: the server certificate of every engine (``localhost``,
  127.0.0.1, ::1); ``localhost.pem`` is the key and the certificate in one file (Kafka's PEM keystore);
- ``client.crt``, ``client.key``, ``client.pem`` (certificate + key): the client certificate
  ``greenhouse`` that FerretDB's mutual TLS asks for.

``<run dir>/secrets/`` (mode 0700): ``kafka-password`` (SCRAM user ``greenhouse``),
``kafka-controller-password`` (the broker's login to its own KRaft controller listener), ``ray-token``
(the Ray head's token, ``RAY_AUTH_MODE=token``). Private keys and secrets are 0600 from the start.

A certificate is issued again when it is missing, was signed by another CA (the CA was deleted and
made anew), or expires within 30 days. Prints nothing on success, one line per file it made.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's app package

from cryptography import x509  # noqa: E402
from cryptography.exceptions import InvalidSignature  # noqa: E402

from app.security.pki import IssuedCert, LocalCA  # noqa: E402

SERVER_NAME = "localhost"
CLIENT_NAME = "client"  # file names; the certificate's common name is CLIENT_IDENTITY
CLIENT_IDENTITY = "greenhouse"
RENEW_BEFORE = dt.timedelta(days=30)
SECRETS = ("kafka-password", "kafka-controller-password", "ray-token")


def private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a new 0600 file (never readable by others, not even while written)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def still_good(ca: LocalCA, cert_path: Path, key_path: Path) -> bool:
    if not (cert_path.is_file() and key_path.is_file()):
        return False
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        cert.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature):  # signed by an earlier CA
        return False
    return cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc) > RENEW_BEFORE


def ensure_cert(ca: LocalCA, file_name: str, issue) -> IssuedCert:
    """The certificate ``<file_name>.crt/.key`` (issued by ``issue()`` unless still good) and the
    bundle ``<file_name>.pem`` (certificate, then key) next to it."""
    cert_path, key_path = ca.directory / f"{file_name}.crt", ca.directory / f"{file_name}.key"
    bundle = ca.directory / f"{file_name}.pem"
    if not still_good(ca, cert_path, key_path):
        issued = issue()
        if issued.cert_path != cert_path:  # pki names files after the certificate's name
            os.replace(issued.cert_path, cert_path)
            os.replace(issued.key_path, key_path)
        bundle.unlink(missing_ok=True)
        print(f"[credentials] issued {cert_path}")
    if not bundle.is_file():
        write_private(bundle, cert_path.read_bytes() + key_path.read_bytes())
    return IssuedCert(cert_path, key_path)


def ensure_secret(path: Path, make) -> None:
    if path.is_file() and path.read_text().strip():
        os.chmod(path, 0o600)
        return
    write_private(path, make().encode())
    print(f"[credentials] made {path}")


def main(run_dir: Path) -> int:
    tls = private_dir(run_dir / "tls")
    ca = LocalCA.ensure(tls)
    ensure_cert(ca, SERVER_NAME, lambda: ca.issue(SERVER_NAME, dns_names=["localhost"], ip_addresses=["127.0.0.1", "::1"]))
    ensure_cert(ca, CLIENT_NAME, lambda: ca.issue(CLIENT_IDENTITY, client=True))
    secret_dir = private_dir(run_dir / "secrets")
    # URL-safe characters only: the values go into JAAS strings and HTTP headers unquoted
    for name in SECRETS:
        ensure_secret(secret_dir / name, lambda: secrets.token_hex(32))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__.splitlines()[2], file=sys.stderr)
        sys.exit(2)
    sys.exit(main(Path(sys.argv[1]).resolve()))
