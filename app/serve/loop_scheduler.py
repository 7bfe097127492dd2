"""The control loop's schedule: every active greenhouse decided once per control interval.

:class:`LoopScheduler` runs inside each replica of the :class:`~app.serve.control_loop.ControlLoop`
deployment. Every ``loop.poll_s`` it renews its lease, sees which interval it is in, claims the
greenhouses it owns (rendezvous hash over the live replicas, :mod:`app.control.loop_ledger`) and
decides them in batches through :class:`~app.control.fleet_decisions.FleetDecider` (one forecaster
call per batch and model version); after ``sweep_after_s`` it also claims whatever nobody has, and
takes over the claims of replicas that are gone. When a new interval starts it reports the last
one (decided, late, skipped) and lets the active rollout take its next step.

A greenhouse is *active* while its newest reading is younger than ``control.stale_after_s``: a
silent greenhouse gets no new commands, and its last one expires (``command_ttl_s``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from app.config import Settings
from app.control.core import GreenhouseState
from app.control.decision_record import DecisionContext
from app.control.fleet_decisions import Assignment, Decided, FleetDecider
from app.control.loop_ledger import LoopLedger, interval_start, owner_of
from app.control.rollout import Verdict
from app.security.redact import redact

log = logging.getLogger(__name__)

LOOP_CALLER = "control-loop"
AS_OF_WAIT_S = 2.0  # event time: how long a greenhouse's reading at the interval start is waited for


@dataclass
class IntervalProgress:
    """What this replica did in one interval."""

    start: datetime
    decided: set[str] = field(default_factory=set)
    late: set[str] = field(default_factory=set)
    """Decided by the sweep or a take-over: another replica owned them or died holding them."""
    failed: set[str] = field(default_factory=set)
    active: set[str] = field(default_factory=set)
    first_seen_wall: float = field(default_factory=time.monotonic)
    busy_s: float = 0.0
    """Time spent deciding (features, forecasts, dispatch, records) in this interval."""
    batches: int = 0

    def summary(self, skipped: int | None = None) -> dict[str, Any]:
        out = {
            "interval_start": self.start,
            "decided": len(self.decided),
            "late": len(self.late),
            "failed": len(self.failed),
            "active_seen": len(self.active),
            "busy_s": round(self.busy_s, 3),
            "batches": self.batches,
        }
        if skipped is not None:
            out["skipped"] = skipped
        return out


class LoopScheduler:
    """One replica's share of the control loop (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        online: Any,
        models: Any,
        decider: FleetDecider,
        dispatch: Any,
        ledger: LoopLedger,
        records: Any,
        rollouts: Any = None,
        metrics: Any = None,
        on_verdict: Callable[[Verdict], None] | None = None,
    ) -> None:
        self.settings = settings
        self.online, self.models, self.decider, self.dispatch = online, models, decider, dispatch
        self.ledger, self.records, self.rollouts, self.metrics = ledger, records, rollouts, metrics
        self.on_verdict = on_verdict  # each rollout verdict, with the figures it was judged on (metrics)
        interval_s = settings.control.interval_s
        self.interval_s = interval_s
        self.sweep_after_s = settings.loop.sweep_after_s or interval_s / 2
        self.event_time = settings.loop.event_time
        if self.event_time and not settings.control.simulated_plant:
            raise ValueError("loop.event_time needs control.simulated_plant: only a simulated plant runs on its readings' clock")
        self.current: IntervalProgress | None = None
        self.history: list[dict[str, Any]] = []
        self._stop = asyncio.Event()

    def loop_now(self) -> datetime | None:
        """The loop's clock: the wall clock, or (event time) the newest reading's time."""
        if not self.event_time:
            return datetime.now(timezone.utc)
        window = self.online.window
        times = [t for t in (window.latest_ts(g) for g in window.greenhouses()) if t is not None]
        return max(times) if times else None

    async def run(self) -> None:
        """Turn until :meth:`stop`; a failing turn is logged and retried at the next poll."""
        while not self._stop.is_set():
            try:
                await self.turn()
            except Exception as exc:
                log.warning("control loop turn failed: %s", redact(f"{type(exc).__name__}: {exc}"))
            try:
                await asyncio.wait_for(self._stop.wait(), self.settings.loop.poll_s)
            except TimeoutError:
                pass

    def stop(self) -> None:
        self._stop.set()

    async def turn(self) -> None:
        """One look at the clock: renew the lease, start a new interval, decide what is due."""
        wall = datetime.now(timezone.utc)
        progress = self.history[-1] if self.history else None
        live = await asyncio.to_thread(self._renew, wall, progress)
        now = self.loop_now()
        if now is None:
            return
        start = interval_start(now, self.interval_s)
        if self.current is None or start > self.current.start:
            await self._begin(start, now)
        current = self.current
        assert current is not None
        current.active = self._active(now)
        due = await asyncio.to_thread(self._claim_due, current, live, wall)
        if due:
            started = time.perf_counter()
            await self._decide(due, current, now)
            current.busy_s += time.perf_counter() - started

    def _renew(self, wall: datetime, progress: dict[str, Any] | None) -> list[str]:
        self.ledger.renew(wall, progress)
        return self.ledger.live_members(wall)

    def _active(self, now: datetime) -> set[str]:
        window, stale = self.online.window, timedelta(seconds=self.settings.control.stale_after_s)
        return {g for g in window.greenhouses() if (t := window.latest_ts(g)) is not None and now - t <= stale}

    async def _begin(self, start: datetime, now: datetime) -> None:
        """A new interval: report the last one, let the rollout step, forget old claims."""
        previous = self.current
        self.current = IntervalProgress(start)
        if previous is None:
            return
        claimed = await asyncio.to_thread(self.ledger.claimed, previous.start)
        report = previous.summary(skipped=len(previous.active - claimed))
        self.history = [*self.history[-49:], report]
        log.info("control loop interval %s: %s", previous.start.isoformat(), {k: v for k, v in report.items() if k != "interval_start"})
        await asyncio.to_thread(self.ledger.forget_before, start - timedelta(seconds=10 * self.interval_s))
        await self._step_rollouts(now)

    async def _step_rollouts(self, now: datetime) -> None:
        if self.rollouts is None:
            return
        for name in self.models.rollouts():
            try:
                verdict = await asyncio.to_thread(self.rollouts.tick, name, now, LOOP_CALLER)
                if verdict is not None and verdict.action != "hold":
                    log.info("rollout of %s: %s (%s)", name, verdict.action, verdict.reason)
                if verdict is not None and self.on_verdict is not None:
                    self.on_verdict(verdict)
            except Exception as exc:
                log.warning("rollout step of %s failed: %s", name, redact(str(exc)))

    def _claim_due(self, current: IntervalProgress, live: list[str], wall: datetime) -> list[tuple[str, bool]]:
        """Greenhouses this replica now decides: its own, and after the sweep time whatever is
        unclaimed or held by a replica that is gone; each with whether it is late."""
        done = current.decided | current.failed
        mine = [g for g in sorted(current.active - done) if owner_of(g, live) == self.ledger.member]
        due = [(g, False) for g in self.ledger.claim(mine, current.start, now=wall)]
        if time.monotonic() - current.first_seen_wall >= self.sweep_after_s:
            taken = set(self.ledger.take_over(current.start, live, lambda: self._decided_in(current.start), now=wall))
            unclaimed = current.active - done - self.ledger.claimed(current.start) - {g for g, _ in due}
            due += [(g, True) for g in self.ledger.claim(sorted(unclaimed), current.start, now=wall)]
            due += [(g, True) for g in sorted(taken - done)]
        return due

    def _decided_in(self, start: datetime) -> set[str]:
        """Greenhouses with a loop decision record for the interval starting at ``start``."""
        return {str(d["greenhouse_id"]) for d in self.records.find({"source": "loop", "interval_start": start})}

    async def _decide(self, due: list[tuple[str, bool]], current: IntervalProgress, now: datetime) -> None:
        """Decide ``due`` in batches, dispatch the commands, write the records, mark the claims."""
        as_of = current.start if self.event_time else None
        # issued at the interval's start: the command id is the same whoever decides (see loop_ledger)
        decided_at = current.start
        late = {g for g, is_late in due if is_late}
        size = self.settings.loop.batch_size
        names = [g for g, _ in due]
        for first in range(0, len(names), size):
            items = [a for a in [await self._assignment(g, as_of, current) for g in names[first : first + size]] if a is not None]
            if not items:
                continue
            context = DecisionContext("loop", LOOP_CALLER, interval_start=current.start)
            try:
                decided = await self.decider.decide(items, decided_at, context, dry_run=self._dry_run())
            except Exception as exc:  # a bug or a bad state: free the claims, say which
                log.warning("control loop: deciding %d greenhouses failed: %s", len(items), redact(f"{type(exc).__name__}: {exc}"))
                for a in items:
                    current.failed.add(a.state.greenhouse_id)
                    await asyncio.to_thread(self.ledger.release, a.state.greenhouse_id, current.start)
                continue
            current.batches += 1
            await self._deliver(decided, current, late)

    async def _assignment(self, greenhouse_id: str, as_of: datetime | None, current: IntervalProgress) -> Assignment | None:
        served = await self.models.route(greenhouse_id)
        if as_of is not None:
            await self.online.wait_for(greenhouse_id, as_of, AS_OF_WAIT_S)
        features = self.online.window.features(greenhouse_id, served.params, as_of)
        if features is None:
            current.failed.add(greenhouse_id)
            await asyncio.to_thread(self.ledger.release, greenhouse_id, current.start)
            return None
        state = GreenhouseState(greenhouse_id, features)
        provenance = self.online.window.provenance(greenhouse_id, as_of)
        return Assignment(state, served.forecaster, served.route, served.shadows, served.unavailable, provenance, request_id=f"loop:{current.start.isoformat()}")

    def _dry_run(self) -> bool:
        return bool(self.models.config.dry_run) or self.settings.control.dry_run

    async def _deliver(self, decided: list[Decided], current: IntervalProgress, late: set[str]) -> None:
        commands = [d.decision.command.model_copy(update={"requested_by": LOOP_CALLER}) for d in decided]
        results = await asyncio.gather(*(self.dispatch.dispatch(c) for c in commands), return_exceptions=True)
        await asyncio.to_thread(self._settle, decided, results, current)
        for d, result in zip(decided, results):
            g = d.decision.greenhouse_id
            (current.failed if isinstance(result, BaseException) else current.decided).add(g)
            if g in late and not isinstance(result, BaseException):
                current.late.add(g)
        if self.metrics is not None:
            self.metrics.observe(decided)

    def _settle(self, decided: list[Decided], results: list[Any], current: IntervalProgress) -> None:
        """Records of the decisions that went out (one write); the claims of the others released."""
        records = []
        for d, result in zip(decided, results):
            if isinstance(result, BaseException):
                log.warning("control loop: dispatch for %s failed: %s", d.decision.greenhouse_id, redact(str(result)))
                self.ledger.release(d.decision.greenhouse_id, current.start)
            else:
                records.append({**d.record, "requested_by": LOOP_CALLER})
        self.records.insert_many_new(records)  # a record already there is the same command's

    def status(self) -> dict[str, Any]:
        """This replica's view: member id, current interval, recent intervals."""
        current = self.current.summary() if self.current else None
        return {"member": self.ledger.member, "event_time": self.event_time, "interval_s": self.interval_s, "current": current, "recent": self.history[-10:]}
