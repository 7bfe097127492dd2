"""Ed25519 keys that sign control commands, and the public keys actuator sites verify them with.

- The serving side holds one private key (PEM, mode 0600): :class:`CommandSigner` signs with it and
  names it by its key id.
- An actuator site holds public keys only, one file per key id (``<key_id>.pub.pem``) in a
  directory: :class:`CommandVerifier` accepts a signature by any of them, so old and new keys are
  both valid during a rotation, and it notices added or removed files without a restart.
- On one machine (the demo, the tests) :func:`ensure_local_signing_key` makes a key for this
  machine and publishes its public key; elsewhere the operator sets ``control.signing_key_file``
  (``greenhouse keys new`` makes one).

The key id is derived from the public key (the first 16 hex digits of the SHA-256 of its raw 32
bytes), so it cannot be chosen to impersonate another key and every site computes the same one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from app.config import Settings
from app.contracts.command import ControlCommand
from app.security.pki import write_private_key

log = logging.getLogger(__name__)

KEY_ID_HEX_CHARS = 16
PUBLIC_KEY_SUFFIX = ".pub.pem"
LOCAL_SIGNING_KEY_FILE = "command-signing.key"
PUBLIC_KEYS_DIR_NAME = "command-keys"

Verdict = Literal["valid", "unsigned", "unknown_key", "bad_signature"]


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """The key id of ``public_key``: 16 hex digits of the SHA-256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_HEX_CHARS]


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in the PEM file ``path`` (``ValueError`` for any other kind)."""
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The Ed25519 public key in the PEM file ``path`` (``ValueError`` for any other kind)."""
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key


def publish_public_key(public_key: Ed25519PublicKey, directory: Path) -> Path:
    """Write ``public_key`` as ``<key_id>.pub.pem`` into ``directory`` (created if missing);
    atomic, so a verifier re-reading the directory never sees half a file."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{key_id_of(public_key)}{PUBLIC_KEY_SUFFIX}"
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if path.is_file() and path.read_bytes() == pem:
        return path
    tmp = directory / f".{path.name}.{secrets.token_hex(4)}.tmp"  # not *.pub.pem: never loaded
    tmp.write_bytes(pem)
    os.replace(tmp, path)
    return path


def public_keys_dir(settings: Settings) -> Path:
    """The directory of accepted public keys: ``control.public_keys_dir`` or its default."""
    return settings.control.public_keys_dir or settings.secrets_dir / PUBLIC_KEYS_DIR_NAME


def new_signing_key(key_dir: Path, public_dir: Path) -> tuple[Path, CommandSigner]:
    """Create a new private key as ``key_dir/command-signing-<key_id>.key`` (the directory made
    with mode 0700 if missing), publish its public key into ``public_dir``, and return both."""
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    signer = CommandSigner(key, key_id_of(key.public_key()))
    path = key_dir / f"command-signing-{signer.key_id}.key"
    if not _create_key_file(path, key):
        raise FileExistsError(f"{path} exists: a signing key is never overwritten")
    publish_public_key(key.public_key(), public_dir)
    return path, signer


def ensure_local_signing_key(secrets_dir: Path, public_dir: Path | None = None) -> Path:
    """The path of this machine's signing key under ``secrets_dir`` (mode 0700), created with
    mode 0600 on first use; its public key is (re)published into ``public_dir`` (default
    ``secrets_dir/command-keys``). Safe when several processes call it at once: one key wins."""
    secrets_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(secrets_dir, 0o700)
    path = secrets_dir / LOCAL_SIGNING_KEY_FILE
    if not path.is_file():
        _create_key_file(path, Ed25519PrivateKey.generate())
    publish_public_key(load_private_key(path).public_key(), public_dir or secrets_dir / PUBLIC_KEYS_DIR_NAME)
    return path


def _create_key_file(path: Path, key: Ed25519PrivateKey) -> bool:
    """Write ``key`` to ``path`` unless a key is there already; False when one was.

    The key is written in full to a temporary name, then hard-linked into place: the link fails
    when ``path`` exists, so concurrent callers never overwrite each other or read half a key."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    write_private_key(tmp, key)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()


@dataclass(frozen=True)
class CommandSigner:
    """A private key and its key id: signs commands on the serving side."""

    private_key: Ed25519PrivateKey
    key_id: str

    @classmethod
    def from_file(cls, path: Path) -> CommandSigner:
        """The signer of the private key PEM at ``path``."""
        key = load_private_key(path)
        return cls(key, key_id_of(key.public_key()))

    @classmethod
    def from_settings(cls, settings: Settings) -> CommandSigner:
        """The key ``control.signing_key_file`` names, or this machine's (made on first use)."""
        path = settings.control.signing_key_file or ensure_local_signing_key(settings.secrets_dir, public_keys_dir(settings))
        return cls.from_file(path)

    def sign(self, command: ControlCommand) -> ControlCommand:
        """``command`` naming this key and signed by it."""
        return command.signed(self.private_key, self.key_id)


class CommandVerifier:
    """The public keys in a directory (``*.pub.pem``), kept current while it runs.

    The directory is stat'ed on each lookup and re-read when it changed (a key file added or
    removed: a rotation needs no restart), at least every ``refresh_s``, and when a command names
    an unknown key id, at most every ``min_reload_interval_s`` so that a stream of made-up key ids
    cannot keep the site busy reading files.
    """

    def __init__(self, directory: Path, *, refresh_s: float = 30.0, min_reload_interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = Path(directory)
        self.refresh_s = refresh_s
        self.min_reload_interval_s = min_reload_interval_s
        self._clock = clock
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._stamp: int | None = None
        self._loaded_at = float("-inf")
        self._load()

    @classmethod
    def from_settings(cls, settings: Settings) -> CommandVerifier:
        """The verifier of ``control.public_keys_dir`` (or its default)."""
        return cls(public_keys_dir(settings))

    @property
    def key_ids(self) -> list[str]:
        """The key ids accepted now (sorted)."""
        self._refresh(unknown=False)
        return sorted(self._keys)

    def public_key(self, key_id: str) -> Ed25519PublicKey | None:
        """The public key named ``key_id``, or None when the directory holds none by that id."""
        self._refresh(unknown=key_id not in self._keys)
        return self._keys.get(key_id)

    def check(self, command: ControlCommand) -> Verdict:
        """Why ``command`` is not to be trusted, or ``"valid"``."""
        if not command.signature or not command.key_id:
            return "unsigned"
        key = self.public_key(command.key_id)
        if key is None:
            return "unknown_key"
        return "valid" if command.verify(key) else "bad_signature"

    def _refresh(self, *, unknown: bool) -> None:
        since = self._clock() - self._loaded_at
        if self._dir_stamp() != self._stamp or since >= self.refresh_s or (unknown and since >= self.min_reload_interval_s):
            self._load()

    def _dir_stamp(self) -> int | None:
        try:
            return self.directory.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def _load(self) -> None:
        self._stamp = self._dir_stamp()  # before listing: a change while listing is seen next time
        self._loaded_at = self._clock()
        keys: dict[str, Ed25519PublicKey] = {}
        paths = sorted(self.directory.glob(f"*{PUBLIC_KEY_SUFFIX}")) if self._stamp is not None else []
        for path in paths:
            try:
                key = load_public_key(path)
            except (OSError, ValueError) as exc:
                log.warning("public key %s skipped: %s", path, exc)
                continue
            key_id = key_id_of(key)
            if path.name != f"{key_id}{PUBLIC_KEY_SUFFIX}":  # the id is the key's, whatever the file is called
                log.warning("public key %s has key id %s", path, key_id)
            keys[key_id] = key
        if keys.keys() != self._keys.keys():
            log.info("command public keys in %s: %s", self.directory, ", ".join(sorted(keys)) or "none")
        self._keys = keys
