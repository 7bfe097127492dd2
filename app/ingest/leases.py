"""Partition leases: which sink worker reads which bus partition, fenced by an epoch.

Several sink workers share a topic's partitions. Each partition has one lease document
(``sink_leases``: owner, epoch, expires_at). A worker takes a partition only when its lease is
free, released or expired, by a compare-and-set on the epoch that raises it by one, and keeps it by
renewing before it expires. Each worker also keeps a heartbeat document (``sink_workers``); it
counts the live workers and holds at most its fair share of partitions (``ceil(partitions /
workers)``), releasing what it holds above that. So a new worker gets partitions from the others,
and a killed worker's partitions move to the survivors once its leases expire.

The epoch is the fence. A worker that takes a partition stamps its epoch on the partition's
checkpoint, and the sink moves a checkpoint only with a filter on its own epoch
(:mod:`app.ingest.sink`): a worker that lost its lease (paused past the TTL, cut off from the
store) can never commit, whatever it believes, and the files it wrote carry its epoch in their
names, so they never replace another worker's.

Timestamps are the store's UTC datetimes; workers on different hosts need clocks within a small
fraction of the TTL of each other (NTP gives milliseconds; the default TTL is 20 s).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from app.metadata import Collection, DuplicateKeyError, MetadataStore

SINK_LEASES = "sink_leases"
SINK_WORKERS = "sink_workers"
RELEASED = datetime(1970, 1, 1, tzinfo=timezone.utc)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def fair_share(partitions: int, live_workers: int) -> int:
    """The most partitions one of ``live_workers`` workers should hold (at least one worker)."""
    return math.ceil(partitions / max(1, live_workers))


@dataclass(frozen=True)
class RebalancePlan:
    """What a worker does on one tick: partitions to try to take, partitions to give back."""

    take: list[int]
    release: list[int]


def plan_rebalance(owned: Iterable[int], free: Iterable[int], share: int) -> RebalancePlan:
    """Give back the highest-numbered partitions held above ``share``; try to take free ones (the
    lowest-numbered first) up to it. Pure: the caller knows what is owned and what is free."""
    mine = sorted(owned)
    if len(mine) > share:
        return RebalancePlan(take=[], release=mine[share:])
    room = share - len(mine)
    return RebalancePlan(take=sorted(set(free) - set(mine))[:room], release=[])


class PartitionLeases:
    """The lease documents of one consumer group and topic, seen by one worker."""

    def __init__(self, store: MetadataStore, group: str, topic: str, worker_id: str, *, ttl_s: float = 20.0, now: Callable[[], datetime] = utc_now) -> None:
        self.leases: Collection = store.collection(SINK_LEASES)
        self.workers: Collection = store.collection(SINK_WORKERS)
        self.group, self.topic, self.worker_id = group, topic, worker_id
        self.ttl = timedelta(seconds=ttl_s)
        self.now = now

    def lease_id(self, partition: int) -> str:
        return f"{self.group}|{self.topic}|{partition}"

    def _scope(self) -> dict[str, str]:
        return {"group": self.group, "topic": self.topic}

    def heartbeat(self) -> int:
        """Say this worker is alive; the number of live workers of the group (this one included)."""
        now = self.now()
        key, fields = {"_id": f"{self.group}|{self.topic}|{self.worker_id}"}, {"$set": {**self._scope(), "worker": self.worker_id, "expires_at": now + self.ttl}}
        try:
            self.workers.update_one(key, fields, upsert=True)
        except DuplicateKeyError:
            # two workers under one name upserting at once: both found nothing and inserted, one
            # lost; the document is there now, so the second try updates it
            self.workers.update_one(key, fields, upsert=True)
        return max(1, self.workers.count_documents({**self._scope(), "expires_at": {"$gt": now}}))

    def free_partitions(self, partitions: int, *, reclaim: bool = False) -> list[int]:
        """Partitions whose lease is absent, released or expired (with ``reclaim``, also those
        still leased to this worker's name)."""
        now = self.now()
        held = {int(d["partition"]) for d in self.leases.find({**self._scope(), "expires_at": {"$gt": now}}) if not (reclaim and d.get("owner") == self.worker_id)}
        return [p for p in range(partitions) if p not in held]

    def acquire(self, partition: int, *, reclaim: bool = False) -> int | None:
        """Take ``partition`` if its lease is free, released or expired (with ``reclaim``, also
        when it is leased to this worker's name: a restarted worker takes its partitions back at
        once): the new epoch, else None."""
        lease_id, now = self.lease_id(partition), self.now()
        taken = {"owner": self.worker_id, "expires_at": now + self.ttl, "acquired_at": now}
        doc = self.leases.find_one({"_id": lease_id})
        if doc is None:
            try:
                self.leases.insert_one({"_id": lease_id, **self._scope(), "partition": partition, "epoch": 1, **taken})
            except DuplicateKeyError:  # another worker created it first
                return None
            return 1
        epoch = int(doc["epoch"]) + 1
        mine = reclaim and doc.get("owner") == self.worker_id
        guard = {"owner": self.worker_id} if mine else {"expires_at": {"$lte": now}}
        matched = self.leases.update_one({"_id": lease_id, "epoch": epoch - 1, **guard}, {"$set": {"epoch": epoch, **taken}})
        return epoch if matched else None

    def renew(self, partition: int, epoch: int) -> bool:
        """Extend this worker's lease; False when it is no longer this worker's (fenced)."""
        return bool(self.leases.update_one({"_id": self.lease_id(partition), "epoch": epoch, "owner": self.worker_id}, {"$set": {"expires_at": self.now() + self.ttl}}))

    def release(self, partition: int, epoch: int) -> None:
        """Give the lease back now (another worker may take it at once)."""
        self.leases.update_one({"_id": self.lease_id(partition), "epoch": epoch, "owner": self.worker_id}, {"$set": {"expires_at": RELEASED}})

    def leave(self, owned: dict[int, int]) -> None:
        """Release every lease in ``owned`` (partition -> epoch) and retire this worker."""
        for partition, epoch in owned.items():
            self.release(partition, epoch)
        self.workers.delete_many({"_id": f"{self.group}|{self.topic}|{self.worker_id}"})
