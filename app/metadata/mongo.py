"""The MongoDB metadata store: the :class:`~app.metadata.base.MetadataStore` interface on pymongo.

Works against MongoDB and MongoDB-wire servers such as FerretDB (no transactions, no change
streams used). Datetimes come back timezone-aware UTC (BSON keeps milliseconds).

TLS and credentials are pymongo's own URL options, e.g.
``mongodb://host:27017/greenhouse?tls=true&tlsCAFile=/ca.crt&tlsCertificateKeyFile=/client.pem``
(a client certificate, as the stack's FerretDB requires) or ``mongodb://user:pass@host/db?tls=true``.
Options that switch certificate or hostname verification off are refused.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pymongo
from pymongo import MongoClient
from pymongo.errors import BulkWriteError, OperationFailure
from pymongo.errors import DuplicateKeyError as MongoDuplicateKeyError
from pymongo.uri_parser import parse_uri

from app.metadata.base import DuplicateKeyError, Filter, SortSpec

DUPLICATE_KEY = 11000  # MongoDB's error code for a unique index violation

DEFAULT_DATABASE = "greenhouse"
# pymongo options that turn verification off (parse_uri reports them in this spelling)
_UNVERIFIED_TLS_OPTIONS = ("tlsInsecure", "tlsAllowInvalidCertificates", "tlsAllowInvalidHostnames")


class MongoStore:
    """A :class:`~app.metadata.base.MetadataStore` on a MongoDB-wire server."""

    def __init__(self, url: str, *, server_selection_timeout_ms: int = 10_000) -> None:
        self.url = url
        parsed = parse_uri(url)
        options = {k.lower(): v for k, v in parsed["options"].items()}
        off = [k for k in _UNVERIFIED_TLS_OPTIONS if options.get(k.lower())]
        if off:
            raise ValueError(f"metadata URL switches TLS verification off ({', '.join(off)}): refused")
        self.client: MongoClient = MongoClient(url, tz_aware=True, serverSelectionTimeoutMS=server_selection_timeout_ms)
        name = parsed.get("database") or DEFAULT_DATABASE
        self.db = self.client[name]

    def __reduce__(self):
        return (MongoStore, (self.url,))

    def collection(self, name: str) -> MongoCollection:
        return MongoCollection(self.db[name])

    def list_collections(self) -> list[str]:
        return sorted(self.db.list_collection_names())

    def close(self) -> None:
        self.client.close()


class MongoCollection:
    """One collection; a thin mapping of the interface onto pymongo."""

    def __init__(self, collection: pymongo.collection.Collection) -> None:
        self._c = collection
        self.name = collection.name

    def insert_one(self, document: Mapping[str, Any]) -> Any:
        doc = dict(document)
        doc.setdefault("_id", uuid.uuid4().hex)  # the same id form as the embedded store
        try:
            return self._c.insert_one(doc).inserted_id
        except MongoDuplicateKeyError as exc:
            raise DuplicateKeyError(f"{self.name}: {exc}") from exc

    def insert_many_new(self, documents: Sequence[Mapping[str, Any]]) -> list[Any]:
        docs = [dict(d) for d in documents]
        for doc in docs:
            doc.setdefault("_id", uuid.uuid4().hex)
        if not docs:
            return []
        try:
            self._c.insert_many(docs, ordered=False)
            return [d["_id"] for d in docs]
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            skipped = {e["index"] for e in errors}
            return [d["_id"] for i, d in enumerate(docs) if i not in skipped]

    def find(self, filter: Filter | None = None, *, sort: SortSpec | None = None, limit: int = 0) -> list[dict[str, Any]]:
        cursor = self._c.find(dict(filter or {}))
        if sort:
            cursor = cursor.sort(list(sort))
        if limit:
            cursor = cursor.limit(limit)
        return list(cursor)

    def find_one(self, filter: Filter | None = None, *, sort: SortSpec | None = None) -> dict[str, Any] | None:
        found = self.find(filter, sort=sort, limit=1)
        return found[0] if found else None

    def update_one(self, filter: Filter, update: Mapping[str, Any], *, upsert: bool = False) -> int:
        update = dict(update)
        if upsert and "_id" not in filter:
            # Keep generated ids in one form across stores.
            on_insert = dict(update.get("$setOnInsert", {}))
            on_insert.setdefault("_id", uuid.uuid4().hex)
            update["$setOnInsert"] = on_insert
        try:
            return self._c.update_one(dict(filter), update, upsert=upsert).matched_count
        except MongoDuplicateKeyError as exc:
            raise DuplicateKeyError(f"{self.name}: {exc}") from exc
        except OperationFailure as exc:
            # FerretDB (SQLite backend) reports a unique-index violation on update as an internal
            # error carrying SQLite's message instead of E11000.
            if "UNIQUE constraint failed" in str(exc):
                raise DuplicateKeyError(f"{self.name}: {exc}") from exc
            raise

    def update_many(self, filter: Filter, update: Mapping[str, Any]) -> int:
        return self._c.update_many(dict(filter), dict(update)).matched_count

    def delete_many(self, filter: Filter) -> int:
        return self._c.delete_many(dict(filter)).deleted_count

    def count_documents(self, filter: Filter | None = None) -> int:
        return self._c.count_documents(dict(filter or {}))

    def create_index(self, keys: Sequence[tuple[str, int]], *, unique: bool = False) -> str:
        return self._c.create_index(list(keys), unique=unique)
