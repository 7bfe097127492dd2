"""Which partitions a lake sink worker writes, and under which epoch (see :mod:`app.ingest.sink`).

A worker reads only the partitions whose lease it holds (:mod:`app.ingest.leases`); every lease
carries an epoch. Taking a partition stamps the epoch on its checkpoint (one ``sink_checkpoints``
document per group/topic/partition), which fences every earlier epoch out of the commit point
(:meth:`PartitionOwnership.commit` moves the checkpoint only under the owner's own epoch), and
settles what earlier epochs left half done: their pending files are rolled back or forward, their
staged files deleted.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timezone

from app.bus import TopicPartition
from app.ingest.leases import PartitionLeases, fair_share, plan_rebalance
from app.ingest.sink_stats import SinkStats
from app.lake import STAGING, Lake
from app.metadata import LAKE_BATCHES, DuplicateKeyError, MetadataStore

log = logging.getLogger(__name__)

SINK_CHECKPOINTS = "sink_checkpoints"


def checkpoint_id(group: str, tp: TopicPartition) -> str:
    """The ``sink_checkpoints`` document of one partition for one sink group."""
    return f"{group}|{tp.topic}|{tp.partition}"


def checkpointed_offsets(store: MetadataStore, group: str, topic: str) -> dict[int, int]:
    """Per partition, the next offset sink ``group`` has committed for ``topic`` (its durable
    checkpoint; partitions without one are absent). What the sink leaves behind, so a reader
    outside the sink (the monitor's lag) sees it stand still when the sink is stopped."""
    docs = store.collection(SINK_CHECKPOINTS).find({"group": group, "topic": topic})
    return {int(d["partition"]): int(d["next_offset"]) for d in docs if d.get("next_offset") is not None and d.get("partition") is not None}


class PartitionFenced(RuntimeError):
    """Another worker took the partition (a newer epoch stamped its checkpoint)."""


def file_stem(topic: str, partition: int, epoch: int) -> str:
    """The start of every file name one worker epoch writes for one partition."""
    return f"{topic}-p{partition:03d}-e{epoch:06d}-"


def stem_epoch(name: str, topic: str, partition: int) -> int | None:
    """The epoch in a file name written for ``topic``/``partition``, or None (not one of those)."""
    found = re.match(re.escape(f"{topic}-p{partition:03d}-e") + r"(\d+)-", name)
    return int(found.group(1)) if found else None


def chunk_file_name(topic: str, partition: int, epoch: int, first: int, last: int) -> str:
    """The name of the file one worker epoch writes for offsets ``first..last`` of a partition."""
    return f"{file_stem(topic, partition, epoch)}o{first:012d}-{last:012d}.parquet"


def chunk_of_file(name: str, topic: str) -> tuple[int, int] | None:
    """``(partition, last offset)`` of a :func:`chunk_file_name` of ``topic``, or None (a file
    written by other means)."""
    found = re.fullmatch(re.escape(topic) + r"-p(\d+)-e\d+-o\d+-(\d+)\.parquet", name)
    return (int(found.group(1)), int(found.group(2))) if found else None


class PartitionOwnership:
    """The partitions of ``topic`` one worker of sink ``group`` owns (``owned``: partition ->
    epoch), their leases, checkpoints and recovery; counts go to ``stats``."""

    def __init__(self, store: MetadataStore, lake: Lake, *, topic: str, group: str, worker_id: str, partitions: int, lease_ttl_s: float, stats: SinkStats) -> None:
        self.store = store
        self.lake = lake
        self.topic = topic
        self.group = group
        self.partitions = partitions
        self.stats = stats
        self.batches = store.collection(LAKE_BATCHES)
        self.checkpoints = store.collection(SINK_CHECKPOINTS)
        self.leases = PartitionLeases(store, group, topic, worker_id, ttl_s=lease_ttl_s)
        self.owned: dict[int, int] = {}  # partition -> the epoch of this worker's lease

    def checkpoint(self, tp: TopicPartition) -> int | None:
        """The partition's checkpointed next offset (None: nothing committed yet)."""
        doc = self.checkpoints.find_one({"_id": checkpoint_id(self.group, tp)})
        return None if doc is None or doc.get("next_offset") is None else int(doc["next_offset"])

    def committed_offsets_total(self) -> int:
        """Sum over partitions of the checkpointed next offset: how many records are settled."""
        return sum(checkpointed_offsets(self.store, self.group, self.topic).values())

    def committed_files(self, paths: list[str]) -> list[str]:
        """The files among ``paths`` whose readings are committed. A chunk's file counts once the
        checkpoint of its partition has passed the chunk: before that it is a chunk being written,
        or the file of a fenced epoch about to be undone, whose readings the lake may never keep
        (deduplicating against it would lose them). A file of another name counts (written by
        other means)."""
        next_offsets: dict[int, int | None] = {}
        out = []
        for path in paths:
            chunk = chunk_of_file(path.rsplit("/", 1)[-1], self.topic)
            if chunk is None:
                out.append(path)
                continue
            partition, last = chunk
            if partition not in next_offsets:
                next_offsets[partition] = self.checkpoint(TopicPartition(self.topic, partition))
            if (next_offsets[partition] or 0) > last:
                out.append(path)
        return out

    def stamp(self, tp: TopicPartition, epoch: int) -> bool:
        """Put ``epoch`` on the partition's checkpoint unless a newer one is there: the fence that
        stops every earlier epoch's commits. False when a newer epoch got there first."""
        cp_id = checkpoint_id(self.group, tp)
        if self.checkpoints.update_one({"_id": cp_id, "epoch": {"$lt": epoch}}, {"$set": {"epoch": epoch}}):
            return True
        doc = self.checkpoints.find_one({"_id": cp_id})
        if doc is None:
            try:
                self.checkpoints.insert_one({"_id": cp_id, "group": self.group, "topic": tp.topic, "partition": tp.partition, "epoch": epoch})
            except DuplicateKeyError:
                return False
            return True
        if "epoch" not in doc:  # written before the sink had leases
            return bool(self.checkpoints.update_one({"_id": cp_id, "epoch": {"$exists": False}}, {"$set": {"epoch": epoch}}))
        return False

    def recover(self, partition: int, epoch: int) -> None:
        """Settle what earlier epochs left half done in ``partition`` (see the module docstring)."""
        tp = TopicPartition(self.topic, partition)
        checkpoint = self.checkpoint(tp)
        pending = self.batches.find({"status": "pending", "sink_group": self.group, "topic": self.topic, "partition": partition})
        rolled = 0
        for doc in pending:
            if int(doc.get("epoch", 0)) >= epoch:
                continue
            rolled += 1
            if checkpoint is not None and checkpoint > int(doc["chunk_end"]):
                self.batches.update_one({"_id": doc["_id"]}, {"$set": {"status": "committed"}})
                self.stats.rolled_forward_files += 1
            else:
                self.lake.delete(doc["path"])
                self.batches.delete_many({"_id": doc["_id"]})
                self.stats.rolled_back_files += 1
        for path in self.lake.list_files(STAGING):  # staged files of a crashed write
            staged_epoch = stem_epoch(path.rsplit("/", 1)[-1], self.topic, partition)
            if staged_epoch is not None and staged_epoch < epoch:
                self.lake.delete(path)
        if rolled:
            log.info("partition %d: recovered %d files of earlier epochs", partition, rolled)

    def take(self, partition: int, epoch: int) -> bool:
        """Fence earlier epochs out of ``partition`` and settle what they left."""
        if not self.stamp(TopicPartition(self.topic, partition), epoch):
            return False
        self.recover(partition, epoch)
        self.owned[partition] = epoch
        self.stats.partitions_taken += 1
        return True

    def rebalance(self, *, first: bool = False) -> bool:
        """One lease tick: renew, give back what is above the fair share, take free partitions
        (on the ``first`` tick also those still leased to this worker's name: a restart). True
        when the partitions this worker reads changed."""
        live = self.leases.heartbeat()
        before = dict(self.owned)
        for partition, epoch in list(self.owned.items()):
            if not self.leases.renew(partition, epoch):
                log.warning("partition %d: lease lost (epoch %d)", partition, epoch)
                del self.owned[partition]
        plan = plan_rebalance(self.owned, self.leases.free_partitions(self.partitions, reclaim=first), fair_share(self.partitions, live))
        for partition in plan.release:
            self.leases.release(partition, self.owned.pop(partition))
            self.stats.partitions_released += 1
        for partition in plan.take:
            taken = self.leases.acquire(partition, reclaim=first)
            if taken is not None and not self.take(partition, taken):
                self.leases.release(partition, taken)
        return self.owned != before

    def hold(self, partition: int) -> int:
        """Renew the partition's lease before writing under it; its epoch, or
        :class:`PartitionFenced` when the lease expired and another worker took it."""
        epoch = self.owned[partition]
        if not self.leases.renew(partition, epoch):
            raise PartitionFenced(f"partition {partition}: the lease of epoch {epoch} expired and was taken")
        return epoch

    def still_holds(self, partition: int, epoch: int) -> bool:
        """Whether the lease of ``epoch`` is still this worker's (renewing it)."""
        return self.leases.renew(partition, epoch)

    def commit(self, tp: TopicPartition, epoch: int, next_offset: int) -> bool:
        """Move the partition's checkpoint to ``next_offset`` under ``epoch`` only: the commit
        point. False when a newer epoch fenced this one."""
        moved = self.checkpoints.update_one(
            {"_id": checkpoint_id(self.group, tp), "epoch": epoch},
            {"$set": {"next_offset": next_offset, "updated_at": datetime.now(timezone.utc), "group": self.group, "topic": tp.topic, "partition": tp.partition}},
        )
        return bool(moved)

    def drop(self, partition: int) -> None:
        """Forget a partition another epoch fenced this worker out of."""
        self.owned.pop(partition, None)

    def leave(self) -> None:
        """Give every lease back (the worker stops)."""
        self.leases.leave(self.owned)
        self.owned.clear()
