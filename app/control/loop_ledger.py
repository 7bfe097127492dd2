"""Who decides which greenhouse in which interval: leases, shards and claims of the control loop.

Several scheduler replicas share the fleet:

- each replica renews a lease (``control_loop_members``) every poll; one that has not renewed it
  for ``lease_s`` is gone;
- a greenhouse belongs to the live replica that wins its rendezvous hash (:func:`owner_of`), so
  when a replica goes, only its greenhouses move, and they spread over the others;
- before deciding a greenhouse for an interval a replica *claims* it (``control_claims``, one
  document per greenhouse and interval, inserted once: a unique ``_id``), so no greenhouse is
  decided twice in an interval even while replicas disagree on who is alive;
- late in the interval every replica claims what nobody has claimed yet (the sweep), and takes
  over claims left undecided (no decision record) by a replica that is gone: none is skipped while
  one replica lives. A decision of the loop is issued at its interval's start with a command id
  made of greenhouse and interval, so even a replica taken for dead that wakes up and dispatches
  sends the same command, which the dispatcher's audit lets out once.

Leases use the wall clock (they say whether a process is alive); intervals use the loop's clock
(the wall clock, or the readings' time for a simulated plant).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from app.metadata import CONTROL_CLAIMS, CONTROL_LOOP_MEMBERS, MetadataStore

CLAIMED = "claimed"


def interval_start(now: datetime, interval_s: float) -> datetime:
    """The start of the control interval holding ``now`` (intervals are aligned to the epoch)."""
    epoch_s = now.timestamp()
    return datetime.fromtimestamp(epoch_s - epoch_s % interval_s, tz=timezone.utc)


def owner_of(greenhouse_id: str, members: Sequence[str]) -> str | None:
    """The member that decides ``greenhouse_id``: highest rendezvous hash (``None`` without members)."""
    if not members:
        return None
    return max(members, key=lambda m: hashlib.sha256(f"{m}|{greenhouse_id}".encode()).digest())


def claim_id(greenhouse_id: str, start: datetime) -> str:
    return f"{greenhouse_id}|{start.isoformat()}"


class LoopLedger:
    """Leases and claims of the control loop's replicas, in the metadata store."""

    def __init__(self, store: MetadataStore, member: str, lease_s: float) -> None:
        self.member = member
        self.lease_s = lease_s
        self._members = store.collection(CONTROL_LOOP_MEMBERS)
        self._claims = store.collection(CONTROL_CLAIMS)
        self._claims.create_index([("interval_start", 1)])

    def renew(self, now: datetime, progress: dict[str, Any] | None = None) -> None:
        """Renew this replica's lease (``now``: wall clock), with its progress for ``/loop``."""
        fields: dict[str, Any] = {"renewed_at": now}
        if progress is not None:
            fields["progress"] = progress
        self._members.update_one({"_id": self.member}, {"$set": fields, "$setOnInsert": {"joined_at": now}}, upsert=True)

    def leave(self) -> None:
        """Give up the lease at once (a clean stop: the others take over within a poll)."""
        self._members.delete_many({"_id": self.member})

    def live_members(self, now: datetime) -> list[str]:
        """Members whose lease is current, this one included."""
        since = now - timedelta(seconds=self.lease_s)
        live = {str(d["_id"]) for d in self._members.find({"renewed_at": {"$gte": since}})}
        return sorted(live | {self.member})

    def members(self) -> list[dict[str, Any]]:
        """Every member document (lease and progress), for status pages."""
        return self._members.find({}, sort=[("_id", 1)])

    def claim(self, greenhouse_ids: Iterable[str], start: datetime, *, now: datetime) -> list[str]:
        """Claim ``greenhouse_ids`` for the interval starting at ``start`` (one write); those this
        replica now holds (a greenhouse another replica, or this one, claimed before is left out)."""
        wanted = {claim_id(g, start): g for g in greenhouse_ids}
        docs = [{"_id": cid, "greenhouse_id": g, "interval_start": start, "owner": self.member, "state": CLAIMED, "claimed_at": now} for cid, g in wanted.items()]
        inserted = set(self._claims.insert_many_new(docs))
        return [g for cid, g in wanted.items() if cid in inserted]

    def take_over(self, start: datetime, live: Iterable[str], decided: Callable[[], set[str]], *, now: datetime) -> list[str]:
        """Claims of the interval held by members that are gone and not decided (``decided()``:
        the greenhouses with a decision record for it, asked only when such claims exist), now
        this replica's."""
        alive = set(live)
        orphaned = [doc for doc in self._claims.find({"interval_start": start, "state": CLAIMED}) if doc.get("owner") not in alive]
        if not orphaned:
            return []
        done = decided()
        taken = []
        for doc in orphaned:
            if doc["greenhouse_id"] in done:
                continue
            owner = doc.get("owner")
            moved = self._claims.update_one({"_id": doc["_id"], "owner": owner, "state": CLAIMED}, {"$set": {"owner": self.member, "taken_over_from": owner, "claimed_at": now}})
            if moved == 1:
                taken.append(str(doc["greenhouse_id"]))
        return taken

    def claimed(self, start: datetime) -> set[str]:
        """Greenhouses claimed (by anyone) for the interval starting at ``start``."""
        return {str(d["greenhouse_id"]) for d in self._claims.find({"interval_start": start})}

    def release(self, greenhouse_id: str, start: datetime) -> None:
        """Drop this replica's undecided claim (its decision failed: another may try)."""
        self._claims.delete_many({"_id": claim_id(greenhouse_id, start), "owner": self.member, "state": CLAIMED})

    def forget_before(self, start: datetime) -> int:
        """Delete claims of intervals before ``start`` (they are only needed while it runs)."""
        return self._claims.delete_many({"interval_start": {"$lt": start}})
