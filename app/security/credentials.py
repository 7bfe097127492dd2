"""Device and operator credentials: opaque bearer tokens, stored only as salted HMAC-SHA256 hashes.

A token reads ``gh<kind>_<credential id>_<secret>``: the credential id finds the stored record, the
32 random bytes of the secret prove possession. The registry keeps ``HMAC-SHA256(salt, secret)``
and the salt, never the token, so a copy of the metadata store lets no one post readings or
steer a greenhouse.

Why opaque tokens and not JWTs for operators: revocation takes effect within seconds (a JWT stays
valid until it expires), devices and operators share one code path and one store, no identity
provider is needed to run the product, and no signing key has to be distributed. Why HMAC and not
a password hash (scrypt, argon2): the secret has 256 bits of entropy, so a slow hash adds no
protection against guessing, while it would cost milliseconds on every device request.

:class:`CredentialStore` is the shared mechanism (issue, rotate, revoke, verify with a short TTL
cache); :class:`DeviceRegistry` and :class:`OperatorRegistry` say what a credential means.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Final

from app.config import Settings
from app.contracts.reading import ID_PATTERN
from app.metadata import DEVICES, OPERATORS, Collection, DuplicateKeyError, MetadataStore, open_metadata

FORECAST_READ: Final = "forecast:read"
CONTROL_WRITE: Final = "control:write"
CONTROL_SIMULATE: Final = "control:simulate"
SCOPES: Final = (FORECAST_READ, CONTROL_WRITE, CONTROL_SIMULATE)

ACTIVE: Final = "active"
REVOKED: Final = "revoked"
_CACHE_MAX_ENTRIES = 10_000  # bounds memory under a flood of made-up tokens
_LAST_SEEN_EVERY_S = 60.0  # at most one last-seen write per credential and minute
_SECRET_BYTES = 32
_PRIVATE_FIELDS = ("salt", "token_hash")

log = logging.getLogger(__name__)


class CredentialError(ValueError):
    """A registry operation that cannot be done (unknown id, already exists, bad scope)."""


@dataclass(frozen=True)
class DeviceIdentity:
    """Who a verified device credential belongs to."""

    device_id: str
    greenhouse_id: str


@dataclass(frozen=True)
class OperatorIdentity:
    """A verified person or service and what it may do."""

    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _hash(salt: bytes, secret: str) -> str:
    return hmac.new(salt, secret.encode(), hashlib.sha256).hexdigest()


def _split_token(token: str, kind: str) -> tuple[str, str] | None:
    """``(credential id, secret)`` of a token of this kind, or ``None`` when it is not one."""
    prefix, _, rest = token.partition("_")
    credential_id, _, secret = rest.partition("_")
    if prefix != f"gh{kind}" or len(credential_id) != 16 or len(secret) < 40:
        return None
    return credential_id, secret


@dataclass
class _Cached:
    document: dict[str, Any] | None
    checked_at_s: float
    seen_written_at_s: float


class CredentialStore:
    """Hashed bearer credentials of one kind in one collection, one document per subject id.

    Args:
        collection: where the documents live (``_id`` is the subject: a device id, an operator name).
        kind: one letter in the token prefix (``d`` devices, ``o`` operators).
        cache_ttl_s: how long a verified (or refused) token is trusted before the collection is
            read again: the longest a revoked credential keeps working.
        clock: monotonic seconds (injected for tests).
    """

    def __init__(self, collection: Collection, kind: str, *, cache_ttl_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._docs = collection
        self._kind = kind
        self._ttl_s = cache_ttl_s
        self._clock = clock
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        collection.create_index([("credential_id", 1)], unique=True)

    def issue(self, subject_id: str, fields: Mapping[str, Any]) -> str:
        """Create the subject with a new credential; the token (shown once). Raises
        :class:`CredentialError` when the subject exists."""
        token, secret_fields = self._new_secret()
        now = _utcnow()
        try:
            self._docs.insert_one({"_id": subject_id, **fields, **secret_fields, "status": ACTIVE, "created_at": now, "rotated_at": now})
        except DuplicateKeyError:
            raise CredentialError(f"{subject_id!r} already exists: rotate its token instead") from None
        return token

    def rotate(self, subject_id: str, fields: Mapping[str, Any] | None = None) -> str:
        """Replace the subject's credential (the old token stops working at once here, within the
        cache TTL elsewhere) and re-activate it; the new token."""
        token, secret_fields = self._new_secret()
        update = {**(fields or {}), **secret_fields, "status": ACTIVE, "rotated_at": _utcnow()}
        if not self._docs.update_one({"_id": subject_id}, {"$set": update, "$unset": {"revoked_at": ""}}):
            raise CredentialError(f"no such id {subject_id!r}")
        self._cache.clear()
        return token

    def revoke(self, subject_id: str) -> None:
        """Refuse the subject's credential from now on (elsewhere within the cache TTL)."""
        if not self._docs.update_one({"_id": subject_id}, {"$set": {"status": REVOKED, "revoked_at": _utcnow()}}):
            raise CredentialError(f"no such id {subject_id!r}")
        self._cache.clear()

    def get(self, subject_id: str) -> dict[str, Any] | None:
        """The subject's document without its hash and salt, or ``None``."""
        doc = self._docs.find_one({"_id": subject_id})
        return _public(doc) if doc else None

    def list(self) -> list[dict[str, Any]]:
        """Every subject's document without hashes and salts, by id."""
        return [_public(doc) for doc in self._docs.find(sort=[("_id", 1)])]

    def verify(self, token: str | None) -> dict[str, Any] | None:
        """The active subject's document that ``token`` proves, or ``None``."""
        if not token:
            return None
        now_s = self._clock()
        cached = self._cache.get(token)
        if cached is None or now_s - cached.checked_at_s > self._ttl_s:
            cached = _Cached(self._lookup(token), now_s, cached.seen_written_at_s if cached else float("-inf"))
            self._remember(token, cached)
        if cached.document is not None and now_s - cached.seen_written_at_s > _LAST_SEEN_EVERY_S:
            cached.seen_written_at_s = now_s
            self._docs.update_one({"_id": cached.document["_id"]}, {"$set": {"last_seen_at": _utcnow()}})
        return cached.document

    def _lookup(self, token: str) -> dict[str, Any] | None:
        parts = _split_token(token, self._kind)
        if parts is None:
            log.info("a credential refused: not a gh%s_ token", self._kind)
            return None
        credential_id, secret = parts
        doc = self._docs.find_one({"credential_id": credential_id})
        if doc is None or doc.get("status") != ACTIVE:
            log.info("credential %s refused: %s", credential_id, "unknown" if doc is None else doc.get("status"))
            return None
        if not hmac.compare_digest(_hash(bytes.fromhex(doc["salt"]), secret), doc["token_hash"]):
            log.info("credential %s refused: the secret does not match", credential_id)
            return None
        return _public(doc)

    def _remember(self, token: str, cached: _Cached) -> None:
        self._cache[token] = cached
        self._cache.move_to_end(token)
        while len(self._cache) > _CACHE_MAX_ENTRIES:
            self._cache.popitem(last=False)

    def _new_secret(self) -> tuple[str, dict[str, str]]:
        credential_id = secrets.token_hex(8)
        secret = base64.urlsafe_b64encode(secrets.token_bytes(_SECRET_BYTES)).decode().rstrip("=")
        salt = secrets.token_bytes(16)
        return f"gh{self._kind}_{credential_id}_{secret}", {"credential_id": credential_id, "salt": salt.hex(), "token_hash": _hash(salt, secret)}


def _public(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in _PRIVATE_FIELDS}


class DeviceRegistry:
    """Devices allowed to post readings, each bound to one greenhouse (the ``devices`` collection)."""

    def __init__(self, store: MetadataStore, *, cache_ttl_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self.credentials = CredentialStore(store.collection(DEVICES), "d", cache_ttl_s=cache_ttl_s, clock=clock)
        self._ttl_s, self._clock = cache_ttl_s, clock
        self._certified: OrderedDict[str, tuple[DeviceIdentity | None, float]] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Settings) -> DeviceRegistry:
        """The registry in the settings' metadata store, with its configured cache TTL."""
        return cls(open_metadata(settings.metadata_url), cache_ttl_s=settings.security.credential_cache_ttl_s)

    def add(self, device_id: str, greenhouse_id: str) -> str:
        """Register a device for ``greenhouse_id``; its token (shown once)."""
        _check_id("device_id", device_id)
        _check_id("greenhouse_id", greenhouse_id)
        return self.credentials.issue(device_id, {"greenhouse_id": greenhouse_id})

    def rotate(self, device_id: str) -> str:
        """A new token for the device (the old one stops working); the new token."""
        return self.credentials.rotate(device_id)

    def revoke(self, device_id: str) -> None:
        """Refuse the device from now on (within the cache TTL on running gateways)."""
        self.credentials.revoke(device_id)

    def list(self) -> list[dict[str, Any]]:
        """Every device: id, greenhouse, status and dates (never hashes)."""
        return self.credentials.list()

    def authenticate(self, token: str | None) -> DeviceIdentity | None:
        """The device ``token`` belongs to, or ``None`` (missing, unknown, wrong or revoked)."""
        doc = self.credentials.verify(token)
        return DeviceIdentity(doc["_id"], doc["greenhouse_id"]) if doc else None

    def by_certificate(self, device_id: str) -> DeviceIdentity | None:
        """An active device named by a client certificate the TLS edge verified (mTLS); cached
        like tokens, so a revocation takes effect within the cache TTL."""
        now_s = self._clock()
        cached = self._certified.get(device_id)
        if cached is not None and now_s - cached[1] <= self._ttl_s:
            return cached[0]
        doc = self.credentials.get(device_id)
        identity = DeviceIdentity(doc["_id"], doc["greenhouse_id"]) if doc and doc.get("status") == ACTIVE else None
        self._certified[device_id] = (identity, now_s)
        self._certified.move_to_end(device_id)
        while len(self._certified) > _CACHE_MAX_ENTRIES:
            self._certified.popitem(last=False)
        return identity

    def close(self) -> None:
        self._store.close()


class OperatorRegistry:
    """People and services allowed to read forecasts or steer greenhouses (``operators``)."""

    def __init__(self, store: MetadataStore, *, cache_ttl_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self.credentials = CredentialStore(store.collection(OPERATORS), "o", cache_ttl_s=cache_ttl_s, clock=clock)

    @classmethod
    def from_settings(cls, settings: Settings) -> OperatorRegistry:
        """The registry in the settings' metadata store, with its configured cache TTL."""
        return cls(open_metadata(settings.metadata_url), cache_ttl_s=settings.security.credential_cache_ttl_s)

    def add(self, name: str, scopes: Iterable[str], *, valid_days: float = 90.0) -> str:
        """Register an operator with ``scopes`` whose token expires after ``valid_days``; the token."""
        _check_id("name", name)
        return self.credentials.issue(name, {"scopes": _checked_scopes(scopes), "expires_at": _utcnow() + timedelta(days=valid_days)})

    def rotate(self, name: str, *, valid_days: float = 90.0) -> str:
        """A new token (the old one stops working) valid for ``valid_days``; the new token."""
        return self.credentials.rotate(name, {"expires_at": _utcnow() + timedelta(days=valid_days)})

    def revoke(self, name: str) -> None:
        """Refuse the operator from now on (within the cache TTL on running apps)."""
        self.credentials.revoke(name)

    def list(self) -> list[dict[str, Any]]:
        """Every operator: name, scopes, status and dates (never hashes)."""
        return self.credentials.list()

    def authenticate(self, token: str | None) -> OperatorIdentity | None:
        """The operator ``token`` belongs to, or ``None`` (missing, unknown, wrong, revoked or expired)."""
        doc = self.credentials.verify(token)
        if doc is not None and _as_utc(doc["expires_at"]) <= _utcnow():
            log.info("operator %s refused: the token expired at %s", doc["_id"], doc["expires_at"])
            return None
        if doc is None:
            return None
        return OperatorIdentity(doc["_id"], frozenset(doc["scopes"]))

    def close(self) -> None:
        self._store.close()


def _as_utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _checked_scopes(scopes: Iterable[str]) -> list[str]:
    chosen = sorted(set(scopes))
    unknown = [s for s in chosen if s not in SCOPES]
    if unknown or not chosen:
        raise CredentialError(f"scopes must be some of {', '.join(SCOPES)} (got {', '.join(chosen) or 'none'})")
    return chosen


def _check_id(field: str, value: str) -> None:
    if not re.fullmatch(ID_PATTERN, value):
        raise CredentialError(f"{field} {value!r} must match {ID_PATTERN}")


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or ``None``."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
