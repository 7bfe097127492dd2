"""The lake contract: the same code path on a local directory and on HDFS through WebHDFS."""

from __future__ import annotations

import uuid
from datetime import date

import pyarrow as pa
import pytest

from app.lake import STAGING, Lake
from tests.helpers.engines import engine_url


@pytest.fixture(params=["local", "webhdfs"])
def lake(request, tmp_path) -> Lake:
    if request.param == "local":
        return Lake.from_url(f"file://{tmp_path / 'lake'}")
    base = engine_url("webhdfs")
    # one root per test: HDFS keeps data between runs
    return Lake.from_url(f"{base.replace('webhdfs://', 'webhdfs://greenhouse@')}/gh-test/{uuid.uuid4().hex[:12]}")


def table(n: int, offset: int = 0) -> pa.Table:
    return pa.table({"device_id": [f"d{i % 3}" for i in range(n)], "v": [float(i + offset) for i in range(n)]})


def test_write_read_list_roundtrip(lake):
    rel = f"{Lake.raw_partition('gh-01', date(2026, 6, 1))}/part-a.parquet"
    path = lake.write_parquet(table(5), rel)
    assert path == lake.path(rel)
    assert lake.exists(rel)
    assert lake.list_files("raw") == [path]
    assert lake.read_table([path]).equals(table(5))
    assert lake.list_files(STAGING) == []  # nothing left half-written


def test_hive_partitions_are_read_back_as_columns(lake):
    lake.write_parquet(table(3), f"{Lake.raw_partition('gh-01', date(2026, 6, 1))}/a.parquet")
    lake.write_parquet(table(4, 10), f"{Lake.raw_partition('gh-02', date(2026, 6, 2))}/b.parquet")
    raw = lake.read_raw_sensors()
    assert raw.num_rows == 7
    pairs = {(g, str(d)) for g, d in zip(raw["greenhouse_id"].to_pylist(), raw["date"].to_pylist())}
    assert pairs == {("gh-01", "2026-06-01"), ("gh-02", "2026-06-02")}


def test_overwrite_is_atomic_replace_and_delete(lake):
    rel = "raw/sensors/greenhouse_id=gh-01/date=2026-06-01/x.parquet"
    lake.write_parquet(table(2), rel)
    lake.write_parquet(table(6), rel)
    assert lake.read_table([lake.path(rel)]).num_rows == 6
    lake.delete(rel)
    assert not lake.exists(rel)
    lake.delete(rel)  # deleting what is gone is not an error
    assert lake.list_files("raw") == []


def test_empty_lake_reads_empty(lake):
    assert lake.read_raw_sensors().num_rows == 0
    assert lake.list_files("raw/sensors") == []


def test_listing_a_directory_created_while_being_listed_does_not_fail():
    """fsspec-backed lakes (HDFS) check "is it a directory?" then "does it exist?"; a directory
    another writer creates between the two must be listed, not raised as NotADirectoryError."""
    import pyarrow.fs as pafs
    from fsspec.implementations.memory import MemoryFileSystem

    class CreatedMeanwhile(MemoryFileSystem):
        raced = False

        def isdir(self, path):
            answer = super().isdir(path)
            if not answer and not CreatedMeanwhile.raced and path.endswith(STAGING):
                CreatedMeanwhile.raced = True
                self.makedirs(path, exist_ok=True)  # the other writer's mkdir lands here
            return answer

    memory = CreatedMeanwhile(skip_instance_cache=True)
    lake = Lake(pafs.PyFileSystem(pafs.FSSpecHandler(memory)), f"/race-{uuid.uuid4().hex[:8]}")
    assert lake.list_files(STAGING) == []
    assert CreatedMeanwhile.raced


def test_deleting_a_file_another_writer_removed_meanwhile_is_not_an_error():
    """A sink fencing a zombie and the zombie undoing its own chunk may delete one file at once."""
    import pyarrow.fs as pafs
    from fsspec.implementations.memory import MemoryFileSystem

    class RemovedMeanwhile(MemoryFileSystem):
        armed = False

        def exists(self, path, **kwargs):  # pyarrow's handler asks just before it deletes
            if self.armed:
                self.store.pop(self._strip_protocol(path), None)  # the other writer's delete lands here
            return super().exists(path, **kwargs)

    memory = RemovedMeanwhile(skip_instance_cache=True)
    lake = Lake(pafs.PyFileSystem(pafs.FSSpecHandler(memory)), f"/gone-{uuid.uuid4().hex[:8]}")
    path = lake.write_parquet(table(3), "raw/a.parquet")
    memory.armed = True
    lake.delete(path)
    assert not lake.exists("raw/a.parquet")
