"""A local certificate authority, so that everything on one machine speaks verified TLS.

Production uses the operator's PKI (cert-manager, a cloud CA). On one machine (the stack, the
tests, the demo) this module makes a CA and the certificates it signs, so that servers present
real certificates and clients verify them against the CA: nothing needs ``verify=False``.

- :meth:`LocalCA.ensure` creates the CA in a directory, or loads the one already there;
- :meth:`LocalCA.issue` signs a server certificate (names and addresses in the subject
  alternative name) or a client certificate whose common name is an identity (a device id for
  mTLS);
- private keys are written with mode 0600 from the start, never readable by others.

ECDSA P-256 keys: small, fast handshakes, accepted by every TLS stack the product talks to.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALID_DAYS = 3650
LEAF_VALID_DAYS = 825  # the longest validity clients commonly accept for a leaf certificate
CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"


@dataclass(frozen=True)
class IssuedCert:
    """A certificate and its private key, as PEM files."""

    cert_path: Path
    key_path: Path


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> None:
    """Write ``key`` as unencrypted PKCS#8 PEM to ``path``, mode 0600 from the first byte."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # never world-readable, not even briefly
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT


def _validity(days: int) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.timezone.utc)
    return now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)  # a little slack for clock skew


class LocalCA:
    """A CA whose certificate and key live in ``directory`` (``ca.crt``, ``ca.key``)."""

    def __init__(self, directory: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.directory = directory
        self.cert = cert
        self._key = key

    @property
    def cert_path(self) -> Path:
        """The CA certificate clients verify against (``cafile``)."""
        return self.directory / CA_CERT_FILE

    @classmethod
    def ensure(cls, directory: str | Path, name: str = "greenhouse-mlops local CA") -> LocalCA:
        """The CA in ``directory``, created there first when it holds none."""
        directory = Path(directory)
        cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
        if cert_path.is_file() and key_path.is_file():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{key_path} is not an EC private key")
            return cls(directory, x509.load_pem_x509_certificate(cert_path.read_bytes()), key)
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        not_before, not_after = _validity(CA_VALID_DAYS)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        write_private_key(key_path, key)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(directory, cert, key)

    def issue(self, name: str, *, dns_names: Iterable[str] = (), ip_addresses: Iterable[str] = (), client: bool = False, days: int = LEAF_VALID_DAYS) -> IssuedCert:
        """Sign a certificate for ``name`` into ``<directory>/<name>.crt`` and ``.key``.

        A server certificate (the default) is valid for ``dns_names`` and ``ip_addresses``; a
        ``client`` certificate identifies ``name`` (its common name) to a server that asks for one."""
        key = ec.generate_private_key(ec.SECP256R1())
        not_before, not_after = _validity(days)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )
        alt_names = [x509.DNSName(n) for n in dns_names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        issued = IssuedCert(self.directory / f"{name}.crt", self.directory / f"{name}.key")
        write_private_key(issued.key_path, key)
        issued.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return issued


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def ensure_local_server_cert(directory: str | Path) -> tuple[Path, IssuedCert]:
    """The local CA in ``directory`` and a server certificate for this machine (``localhost``,
    127.0.0.1, ::1), issued once and reused: what the stack's services and Serve present."""
    ca = LocalCA.ensure(directory)
    server = IssuedCert(ca.directory / "localhost.crt", ca.directory / "localhost.key")
    if not (server.cert_path.is_file() and server.key_path.is_file()):
        server = ca.issue("localhost", dns_names=["localhost"], ip_addresses=["127.0.0.1", "::1"])
    return ca.cert_path, server
