"""The multi-node Ray cluster of the tests in this folder: a head and two worker nodes on this
machine (tests/helpers/ray_cluster.py), one per test module: the tests of a module share it (about
20-40 s to start), and it is gone before the rest of the suite runs (its nodes hold about 2 GB
and some CPU even when idle; a fault test also kills and adds nodes). Outside CI a cluster that
does not start skips these tests; under CI=true it fails them."""

from __future__ import annotations

import pytest

from tests.helpers.engines import missing
from tests.helpers.ray_cluster import LocalRayCluster


@pytest.fixture(scope="module")
def ray_cluster():
    """A running :class:`LocalRayCluster` (head: 1 CPU; worker-1, worker-2: 1 CPU each)."""
    cluster = LocalRayCluster(workers=2, head_cpus=1, worker_cpus=1)
    try:
        cluster.start()
    except (OSError, RuntimeError, TimeoutError) as exc:
        missing(f"a multi-node Ray cluster did not start on this machine: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()
