"""The embedded metadata store reads one row, not the whole collection, for ``_id`` lookups."""

from __future__ import annotations

import pytest

from app.metadata import open_metadata
from app.metadata.embedded import EmbeddedCollection


def test_id_equality_uses_the_primary_key(tmp_path, monkeypatch):
    store = open_metadata(f"file://{tmp_path / 'meta'}")
    col = store.collection("audit")
    for i in range(20):
        col.insert_one({"_id": f"cmd-{i}", "status": "pending"})

    def no_scan(self):
        raise AssertionError("an _id lookup decoded the whole collection")

    monkeypatch.setattr(EmbeddedCollection, "_all", no_scan)
    assert col.find_one({"_id": "cmd-3"})["status"] == "pending"
    assert col.update_one({"_id": "cmd-3"}, {"$set": {"status": "dispatched", "offset": 3}}) == 1
    assert col.find({"_id": "cmd-3"}) == [{"_id": "cmd-3", "status": "dispatched", "offset": 3}]
    assert col.count_documents({"_id": "cmd-4"}) == 1
    assert col.update_one({"_id": "cmd-new"}, {"$set": {"status": "x"}}, upsert=True) == 0
    assert col.delete_many({"_id": "cmd-5"}) == 1
    col.insert_one({"_id": "cmd-99", "status": "pending"})  # no unique index: no scan either
    with pytest.raises(AssertionError, match="whole collection"):
        col.find_one({"status": "pending"})  # any other filter still scans
    store.close()
