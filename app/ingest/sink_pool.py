"""Several lake sink workers in one job: Ray actors sharing the sensor topic's partitions.

Each actor runs one :class:`~app.ingest.sink.LakeSink` under its own worker name
(``<sink.group_id>-<i>``); the partition leases (:mod:`app.ingest.leases`) spread the partitions
over them and fence every commit, so the actors need no coordination of their own. An actor whose
process or node dies is restarted by Ray under the same name and takes its partitions back at once
(a restarted worker reclaims its own leases); until then, or if it cannot be restarted, the others
take its partitions when its leases expire.
"""

from __future__ import annotations

from typing import Any

from app.config import Settings
from app.ingest.sink_stats import SinkStats, merge_stats

# A sink worker polls, parses and writes Parquet: half a core keeps two of them (and Serve) on a
# 2-core node; the sink is I/O-bound for a good part of its time.
WORKER_NUM_CPUS = 0.5


class SinkWorker:
    """One sink worker (a Ray actor's body)."""

    def __init__(self, settings: Settings, worker_id: str) -> None:
        from app.bus import open_bus
        from app.ingest.sink import LakeSink
        from app.lake import Lake
        from app.metadata import open_metadata

        self.sink = LakeSink(settings, open_bus(settings.bus_url, topics=settings.topics), Lake.from_url(settings.lake_url), open_metadata(settings.metadata_url), worker_id=worker_id)

    def run(self, run_options: dict[str, Any]) -> dict[str, Any]:
        """:meth:`LakeSink.run` with ``run_options``; the worker's stats."""
        return {"worker": self.sink.worker_id, **self.sink.run(**run_options).as_dict()}


def worker_names(settings: Settings, workers: int) -> list[str]:
    """The workers' names: stable, so a restarted worker is the same worker."""
    return [f"{settings.sink.group_id}-{i}" for i in range(workers)]


def run_sink_workers(settings: Settings, workers: int, run_options: dict[str, Any]) -> dict[str, Any]:
    """Run ``workers`` sink actors on the connected Ray cluster until each stops (see
    :meth:`LakeSink.run` for ``run_options``); the merged stats and each worker's."""
    import ray

    # SPREAD: one worker per node where there are enough, so a lost node takes one worker's
    # partitions (the others take them over) and each node's network and disks carry a share
    actor = ray.remote(num_cpus=WORKER_NUM_CPUS, max_restarts=3, max_task_retries=3, scheduling_strategy="SPREAD")(SinkWorker)
    actors = [actor.remote(settings, name) for name in worker_names(settings, workers)]  # type: ignore[attr-defined]
    try:
        per_worker: list[dict[str, Any]] = ray.get([a.run.remote(run_options) for a in actors])
    finally:
        for a in actors:
            ray.kill(a)
    merged = merge_stats([SinkStats(**{k: v for k, v in w.items() if k != "worker"}) for w in per_worker])
    return {**merged.as_dict(), "workers": per_worker}
