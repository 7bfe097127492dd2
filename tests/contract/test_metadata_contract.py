"""The metadata store contract: every MetadataStore implementation must pass this suite."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest

from app.metadata import DuplicateKeyError, MetadataStore, open_metadata
from tests.helpers.engines import engine_url, with_database


@pytest.fixture(params=["embedded", "mongodb"])
def store_url(request, tmp_path) -> str:
    if request.param == "embedded":
        yield f"file://{tmp_path / 'meta'}"
        return
    base = engine_url("mongodb")
    database = f"gh_test_{uuid.uuid4().hex[:10]}"  # one database per test: real servers keep data
    yield with_database(base, database)
    store = open_metadata(with_database(base, database))
    store.client.drop_database(database)
    store.close()


@pytest.fixture
def store(store_url) -> MetadataStore:
    s = open_metadata(store_url)
    yield s
    s.close()


def test_insert_find_roundtrip_with_datetimes(store):
    col = store.collection("lake_batches")
    ts = datetime(2026, 6, 1, 12, 30, tzinfo=timezone.utc)
    _id = col.insert_one({"_id": "a", "rows": 3, "ts_min": ts, "nested": {"x": 1}})
    assert _id == "a"
    doc = col.find_one({"_id": "a"})
    assert doc["rows"] == 3 and doc["nested"] == {"x": 1}
    assert doc["ts_min"] == ts and doc["ts_min"].tzinfo is not None
    assert "lake_batches" in store.list_collections()


def test_generated_ids_and_duplicate_id(store):
    col = store.collection("c")
    a = col.insert_one({"v": 1})
    b = col.insert_one({"v": 2})
    assert a != b
    with pytest.raises(DuplicateKeyError):
        col.insert_one({"_id": a, "v": 3})


def test_filters_sort_limit(store):
    col = store.collection("c")
    for i in range(10):
        col.insert_one({"_id": f"d{i}", "i": i, "even": i % 2 == 0, "tag": {"k": "x" if i < 5 else "y"}})
    assert [d["i"] for d in col.find({"i": {"$gte": 3, "$lt": 6}}, sort=[("i", 1)])] == [3, 4, 5]
    assert [d["i"] for d in col.find({"tag.k": "y"}, sort=[("i", -1)], limit=2)] == [9, 8]
    assert col.count_documents({"even": True}) == 5
    assert col.count_documents({"i": {"$in": [1, 2, 42]}}) == 2
    assert col.count_documents({"i": {"$ne": 1}}) == 9
    assert col.count_documents({"$or": [{"i": 0}, {"i": 9}]}) == 2
    assert col.count_documents({"missing": {"$exists": False}}) == 10
    assert col.find_one({"i": 99}) is None


def test_update_set_inc_unset_and_upsert(store):
    col = store.collection("c")
    col.insert_one({"_id": "x", "n": 1, "status": "pending", "gone": True})
    assert col.update_one({"_id": "x"}, {"$set": {"status": "committed"}, "$inc": {"n": 2}, "$unset": {"gone": ""}}) == 1
    doc = col.find_one({"_id": "x"})
    assert doc["status"] == "committed" and doc["n"] == 3 and "gone" not in doc
    assert col.update_one({"_id": "nope"}, {"$set": {"a": 1}}) == 0
    assert col.find_one({"_id": "nope"}) is None
    col.update_one({"_id": "cp"}, {"$set": {"next_offset": 5}, "$setOnInsert": {"created": 1}}, upsert=True)
    col.update_one({"_id": "cp"}, {"$set": {"next_offset": 9}, "$setOnInsert": {"created": 2}}, upsert=True)
    doc = col.find_one({"_id": "cp"})
    assert doc["next_offset"] == 9 and doc["created"] == 1


def test_update_many_by_ids_and_by_filter(store):
    col = store.collection("c")
    col.create_index([("path", 1)], unique=True)
    for i in range(6):
        col.insert_one({"_id": f"d{i}", "path": f"/p{i}", "status": "pending", "i": i})
    assert col.update_many({"_id": {"$in": ["d0", "d2", "d9"]}}, {"$set": {"status": "committed"}}) == 2
    assert sorted(d["_id"] for d in col.find({"status": "committed"})) == ["d0", "d2"]
    assert col.update_many({"i": {"$gte": 4}}, {"$inc": {"i": 10}}) == 2
    assert sorted(d["i"] for d in col.find({})) == [0, 1, 2, 3, 14, 15]
    assert col.update_many({"i": 99}, {"$set": {"x": 1}}) == 0


def test_compare_and_set_on_a_missing_field(store):
    """The sink's fence: ``$lt`` never matches a document without the field; ``$exists`` does."""
    col = store.collection("c")
    col.insert_one({"_id": "cp", "next_offset": 5})
    if col.update_one({"_id": "cp", "epoch": {"$lt": 3}}, {"$set": {"epoch": 3}}) == 0:
        assert col.update_one({"_id": "cp", "epoch": {"$exists": False}}, {"$set": {"epoch": 3}}) == 1
    assert col.update_one({"_id": "cp", "epoch": {"$lt": 3}}, {"$set": {"epoch": 2}}) == 0
    assert col.update_one({"_id": "cp", "epoch": 3}, {"$set": {"next_offset": 9}}) == 1
    assert col.find_one({"_id": "cp"}) == {"_id": "cp", "next_offset": 9, "epoch": 3}


def test_delete_many(store):
    col = store.collection("c")
    for i in range(4):
        col.insert_one({"i": i})
    assert col.delete_many({"i": {"$lt": 2}}) == 2
    assert col.count_documents() == 2


def test_unique_index(store):
    col = store.collection("c")
    col.create_index([("path", 1)], unique=True)
    col.insert_one({"path": "/a"})
    with pytest.raises(DuplicateKeyError):
        col.insert_one({"path": "/a"})
    col.insert_one({"path": "/b"})
    assert col.count_documents() == 2


def test_data_survives_reopen(store, store_url):
    col = store.collection("c")
    col.insert_one({"_id": "keep", "v": 1})
    reopened = open_metadata(store_url)
    assert reopened.collection("c").find_one({"_id": "keep"})["v"] == 1
    reopened.close()


def test_lookups_by_id_among_many_documents(store):
    col = store.collection("c")
    for i in range(30):
        col.insert_one({"_id": f"k{i:02d}", "i": i})
    col.insert_one({"_id": 7, "i": "int id"})
    assert col.find_one({"_id": "k07"})["i"] == 7
    assert col.find_one({"_id": 7})["i"] == "int id"
    assert [d["i"] for d in col.find({"_id": "k03"}, sort=[("i", -1)], limit=5)] == [3]
    assert col.find_one({"_id": "nope"}) is None and col.find({"_id": "nope"}) == []
    assert col.count_documents({"_id": "k12"}) == 1 and col.count_documents({"_id": "nope"}) == 0
    assert col.update_one({"_id": "k05"}, {"$set": {"status": "done"}}) == 1
    assert col.find_one({"_id": "k05"}) == {"_id": "k05", "i": 5, "status": "done"}
    assert col.update_one({"_id": "new"}, {"$set": {"i": 99}}, upsert=True) == 0
    assert col.find_one({"_id": "new"})["i"] == 99
    assert col.delete_many({"_id": "k01"}) == 1 and col.delete_many({"_id": "k01"}) == 0
    assert col.count_documents() == 31
    with pytest.raises(DuplicateKeyError):
        col.insert_one({"_id": "k02", "i": -1})
    assert col.find_one({"_id": "k02"})["i"] == 2


def test_unique_index_holds_on_updates_by_id(store):
    col = store.collection("c")
    col.create_index([("path", 1)], unique=True)
    col.insert_one({"_id": "a", "path": "/a"})
    col.insert_one({"_id": "b", "path": "/b"})
    with pytest.raises(DuplicateKeyError):
        col.update_one({"_id": "b"}, {"$set": {"path": "/a"}})
    with pytest.raises(DuplicateKeyError):
        col.update_one({"_id": "c"}, {"$set": {"path": "/a"}}, upsert=True)
    assert col.update_one({"_id": "b"}, {"$set": {"path": "/b", "n": 1}}) == 1  # its own value is fine
    assert col.find_one({"_id": "b"})["n"] == 1 and col.count_documents() == 2


def test_embedded_store_opened_by_several_threads_at_once(tmp_path):
    """A new SQLite file switched to WAL by one connection while others open it used to fail at
    once with "database is locked" (2 in 200 tries); the set-up now waits it out."""
    import threading

    from app.metadata import open_metadata

    errors: list[BaseException] = []
    for attempt in range(60):

        def open_and_read(path=tmp_path / str(attempt)) -> None:
            try:
                open_metadata(f"file://{path}").collection("c").find_one({"_id": "x"})
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_and_read) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_insert_many_new_skips_what_is_there(store):
    c = store.collection("many")
    c.create_index([("name", 1)], unique=True)
    c.insert_one({"_id": "a", "name": "alpha"})
    inserted = c.insert_many_new([{"_id": "a", "name": "again"}, {"_id": "b", "name": "beta"}, {"_id": "c", "name": "alpha"}, {"_id": "d", "name": "delta"}])
    assert inserted == ["b", "d"]  # "a" taken by _id, "c" by the unique name
    assert sorted(d["_id"] for d in c.find()) == ["a", "b", "d"] and c.find_one({"_id": "a"})["name"] == "alpha"
    assert c.insert_many_new([]) == []
