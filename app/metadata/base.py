"""The metadata store interface: a small, pymongo-shaped document API.

It covers what the product needs and what both MongoDB and FerretDB support: insert (one, or many
skipping those already there), find with
equality/comparison filters, sort and limit, updates (one document, or every match) with ``$set``/``$inc``/
``$setOnInsert``/``$unset`` and upsert, deletes, counts and (unique) indexes. No transactions.
Datetimes round-trip as timezone-aware UTC.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

Filter = Mapping[str, Any]
SortSpec = Sequence[tuple[str, int]]


class DuplicateKeyError(RuntimeError):
    """An insert or upsert violated a unique index."""


@runtime_checkable
class Collection(Protocol):
    name: str

    def insert_one(self, document: Mapping[str, Any]) -> Any:
        """Insert a document (``_id`` assigned when missing); return its ``_id``."""
        ...

    def insert_many_new(self, documents: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Insert each document whose ``_id`` (and unique index keys) are not taken yet, in one
        write; the ``_id`` of each inserted document (the others are skipped, not an error)."""
        ...

    def find(self, filter: Filter | None = None, *, sort: SortSpec | None = None, limit: int = 0) -> list[dict[str, Any]]: ...

    def find_one(self, filter: Filter | None = None, *, sort: SortSpec | None = None) -> dict[str, Any] | None: ...

    def update_one(self, filter: Filter, update: Mapping[str, Any], *, upsert: bool = False) -> int:
        """Apply an update to the first match; return how many documents matched (0 or 1)."""
        ...

    def update_many(self, filter: Filter, update: Mapping[str, Any]) -> int:
        """Apply an update to every match, in one write (no upsert); return how many matched."""
        ...

    def delete_many(self, filter: Filter) -> int: ...

    def count_documents(self, filter: Filter | None = None) -> int: ...

    def create_index(self, keys: Sequence[tuple[str, int]], *, unique: bool = False) -> str: ...


@runtime_checkable
class MetadataStore(Protocol):
    def collection(self, name: str) -> Collection: ...

    def list_collections(self) -> list[str]: ...

    def close(self) -> None: ...
