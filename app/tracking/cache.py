"""A node-local cache of registered model versions, so that a new replica or batch-inference actor
on a node that already downloaded a version loads it from disk instead of fetching it again.

A registered version is immutable in MLflow (its source never changes), so ``<name>/<version>``
on one tracking server names the same files forever: the cache keeps each under
``<root>/<tracking server digest>/<name>/<version>/`` (aliases are resolved to versions before,
since they move). A download lands in a temporary directory next to its final place and is renamed
into place: a reader never sees half a model, and two processes fetching the same version at once
both end up with one complete copy (the second rename loses and its copy is dropped).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

TMP_PREFIX = ".download-"


def version_dir(root: str | Path, tracking_url: str, name: str, version: str) -> Path:
    """Where version ``version`` of registered model ``name`` on ``tracking_url`` is cached."""
    server = hashlib.sha256(tracking_url.encode()).hexdigest()[:16]
    return Path(root).expanduser() / server / quote(name, safe="") / quote(str(version), safe="")


def cached_version(root: str | Path, tracking_url: str, name: str, version: str, download: Callable[[Path], Path]) -> tuple[Path, bool]:
    """The local directory of the cached version, and whether it was downloaded now.

    ``download(dst)`` fetches the version's files into the empty directory ``dst`` and returns
    the directory holding them (``dst`` or one inside it); it is called only on a miss."""
    final = version_dir(root, tracking_url, name, version)
    if final.is_dir():
        return final, False
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f"{TMP_PREFIX}{final.name}-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        os.rename(download(staging), final)
    except OSError:
        if not final.is_dir():  # not another process winning the race: a real failure
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final, True
