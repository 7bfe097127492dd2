"""The data lake: Parquet files under one root on a pyarrow filesystem, chosen by URL.

``file:///dir`` is a local directory; ``webhdfs://host:9870/root`` is HDFS through WebHDFS (fsspec
wrapped for pyarrow). Both go through the same code path. Layout::

    raw/sensors/greenhouse_id=<id>/date=YYYY-MM-DD/<file>.parquet
    features/<feature_set_id>/...

Files appear atomically: written under ``_staging/`` and renamed into place, so a reader (or a sink
recovering from a crash) never sees half a file.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from collections.abc import Iterable
from datetime import date
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from app.lake.webhdfs import WebHdfsFiles

RAW_SENSORS = "raw/sensors"
STAGING = "_staging"


def filesystem_from_url(url: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the absolute root path inside it for a lake URL."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return pafs.LocalFileSystem(), parsed.path.rstrip("/") or "/"
    if parsed.scheme == "webhdfs":
        import requests
        from fsspec.implementations.webhdfs import WebHDFS

        fs = WebHDFS(host=parsed.hostname or "127.0.0.1", port=parsed.port or 9870, user=_webhdfs_user(url))
        # requests reads the environment's proxy variables on every request: once is enough
        fs.session.proxies = requests.utils.get_environ_proxies(fs.url)
        fs.session.trust_env = False
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), parsed.path.rstrip("/") or "/"
    raise ValueError(f"unsupported lake URL {url!r}: use file:///dir or webhdfs://host:port/root")


def _webhdfs_user(url: str) -> str:
    return urlparse(url).username or os.environ.get("HADOOP_USER_NAME") or os.environ.get("USER") or "root"


def _direct_files(url: str) -> WebHdfsFiles | None:
    """The direct WebHDFS writer for a ``webhdfs://`` lake (None for any other)."""
    parsed = urlparse(url)
    if parsed.scheme != "webhdfs":
        return None
    return WebHdfsFiles(parsed.hostname or "127.0.0.1", parsed.port or 9870, _webhdfs_user(url))


class Lake:
    """Parquet files under ``root`` on ``filesystem``; paths given to methods are relative to root."""

    def __init__(self, filesystem: pafs.FileSystem, root: str, *, direct: WebHdfsFiles | None = None) -> None:
        self.filesystem = filesystem
        self.root = root.rstrip("/") or "/"
        self._local = isinstance(filesystem, pafs.LocalFileSystem)
        self._direct = direct  # writes of a WebHDFS lake (see app.lake.webhdfs)
        self._dirs: set[str] = set()  # directories this object created (dropped only by whole-tree deletes elsewhere)

    @classmethod
    def from_url(cls, url: str) -> Lake:
        fs, root = filesystem_from_url(url)
        return cls(fs, root, direct=_direct_files(url))

    def path(self, relative: str) -> str:
        """Absolute path inside the filesystem for a root-relative path."""
        return posixpath.join(self.root, relative.lstrip("/"))

    @staticmethod
    def raw_partition(greenhouse_id: str, day: date) -> str:
        """Root-relative directory of one greenhouse-day of raw sensor readings."""
        return f"{RAW_SENSORS}/greenhouse_id={greenhouse_id}/date={day.isoformat()}"

    def write_parquet(self, table: pa.Table, relative: str, *, staging_prefix: str = "", replace: bool = True) -> str:
        """Write ``table`` to ``relative`` atomically and durably; return the absolute path. The
        staged file's name starts with ``staging_prefix`` (so a writer can find its own leftovers).
        ``replace=False`` is the writer's promise that no file is at ``relative`` (a name it made
        unique), which saves a round trip to a remote lake."""
        final = self.path(relative)
        staging = self.path(f"{STAGING}/{staging_prefix}{uuid.uuid4().hex}.parquet")
        self._ensure_dir(posixpath.dirname(final))
        if self._direct is not None:
            return self._write_direct(self._direct, table, staging, final, replace=replace)
        self._ensure_dir(posixpath.dirname(staging))
        if self._local:
            # pyarrow does not fsync; a file reported durable must survive a power cut.
            with open(staging, "wb") as fh:
                pq.write_table(table, fh, compression="zstd")
                fh.flush()
                os.fsync(fh.fileno())
        else:
            with self.filesystem.open_output_stream(staging) as out:
                pq.write_table(table, out, compression="zstd")
        if replace and not self._local and self.filesystem.get_file_info(final).type == pafs.FileType.File:
            # HDFS rename does not replace an existing file (it reports failure and leaves both):
            # replacing is delete-then-rename there, briefly without the file. The sink never
            # replaces files it has committed, so this only affects explicit rewrites.
            self.filesystem.delete_file(final)
        self.filesystem.move(staging, final)
        if self.filesystem.get_file_info(final).type != pafs.FileType.File:
            raise OSError(f"lake: moving {staging} to {final} did not produce the file")
        if self._local:
            fd = os.open(posixpath.dirname(final), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return final

    def _write_direct(self, direct: WebHdfsFiles, table: pa.Table, staging: str, final: str, *, replace: bool) -> str:
        """:meth:`write_parquet` on WebHDFS in three round trips (see app.lake.webhdfs)."""
        buffer = pa.BufferOutputStream()
        pq.write_table(table, buffer, compression="zstd")
        direct.create(staging, buffer.getvalue().to_pybytes())  # CREATE makes the staging folder
        if replace and self.filesystem.get_file_info(final).type == pafs.FileType.File:
            self.filesystem.delete_file(final)  # HDFS rename does not replace (see write_parquet)
        if not direct.rename(staging, final):
            raise OSError(f"lake: moving {staging} to {final} did not produce the file")
        return final

    def _ensure_dir(self, path: str) -> None:
        """Create a directory (and its parents) unless this lake made it already (remote lakes
        only: there each call is a round trip; locally it is one cheap syscall)."""
        if self._local or path not in self._dirs:
            self.filesystem.create_dir(path, recursive=True)
            self._dirs.add(path)

    def exists(self, relative: str) -> bool:
        return self.filesystem.get_file_info(self.path(relative)).type != pafs.FileType.NotFound

    def delete(self, relative_or_absolute: str) -> None:
        """Delete one file if it exists (absolute paths inside the root are accepted too)."""
        path = relative_or_absolute if relative_or_absolute.startswith(self.root + "/") else self.path(relative_or_absolute)
        if self.filesystem.get_file_info(path).type == pafs.FileType.File:
            try:
                self.filesystem.delete_file(path)
            except FileNotFoundError:  # another writer deleted it meanwhile (a sink fencing a zombie's files)
                pass

    def list_files(self, relative_dir: str, suffix: str = ".parquet") -> list[str]:
        """Absolute paths of files under a root-relative directory (recursive), sorted."""
        selector = pafs.FileSelector(self.path(relative_dir), recursive=True, allow_not_found=True)
        try:
            infos = self.filesystem.get_file_info(selector)
        except (NotADirectoryError, FileNotFoundError):
            # fsspec's handler asks "is it a directory?" then "does it exist?": a directory
            # another writer creates between the two reads as "not a directory". Arrow's local
            # filesystem fails to open a directory that is not there yet, then finds it there
            # (created meanwhile) and reports "not found". Either way: ask once more.
            infos = self.filesystem.get_file_info(selector)
        return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix))

    def read_table(self, paths: Iterable[str], columns: list[str] | None = None) -> pa.Table:
        """Read and concatenate Parquet files (absolute paths) into one table."""
        tables = [pq.read_table(p, filesystem=self.filesystem, columns=columns) for p in paths]
        if not tables:
            return pa.table({})
        return pa.concat_tables(tables, promote_options="default")

    def read_raw_sensors(self, columns: list[str] | None = None) -> pa.Table:
        """Every raw reading with the hive partition columns (``greenhouse_id``, ``date``)."""
        import pyarrow.dataset as ds

        base = self.path(RAW_SENSORS)
        if self.filesystem.get_file_info(base).type == pafs.FileType.NotFound:
            return pa.table({})
        dataset = ds.dataset(base, filesystem=self.filesystem, format="parquet", partitioning="hive")
        return dataset.to_table(columns=columns)
