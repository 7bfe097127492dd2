"""A rollout drill: candidates rolled out one after another while the control loop runs.

The demo trains a deliberately degraded version and a good one after the first champion, then
hands them to a :class:`RolloutDrill`: at each control interval (the twin's simulated time) it
starts the next canary once the previous rollout has ended, and it remembers how each ended. The
rollouts themselves advance, roll back and promote on their own (the control loop's replicas tick
them, :class:`~app.control.rollout_store.RolloutStore`); the drill only starts them and reads back
their ``deployments`` documents for the report.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from app.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """A version to roll out, and what the drill expects of it (``"rolled_back"`` or ``"promoted"``)."""

    version: str
    label: str
    expected: str


@dataclass
class DrillResult:
    """Each rollout the drill started: id, candidate, how it ended, and its steps."""

    rollouts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def as_expected(self) -> bool:
        return bool(self.rollouts) and all(r["status"] == r["expected"] for r in self.rollouts)


class RolloutDrill:
    """Starts canaries of ``candidates`` in turn, each ``start_after_min`` after the last ended."""

    def __init__(self, settings: Settings, model_name: str, candidates: Sequence[Candidate], *, steps: Sequence[float], start_after_min: float = 30.0, by: str = "demo") -> None:
        from app.control.rollout_store import RolloutStore

        self.store = RolloutStore.from_settings(settings)
        self.model_name = model_name
        self.queue = list(candidates)
        self.steps = tuple(steps)
        self.start_after = timedelta(minutes=start_after_min)
        self.by = by
        self.idle_since: datetime | None = None
        self.started: list[tuple[str, Candidate]] = []

    def on_interval(self, now: datetime) -> None:
        """Called once per control interval: start the next candidate once nothing has been
        rolling out for ``start_after_min`` (the greenhouses settle under the champion first)."""
        if self.store.active(self.model_name) is not None:
            self.idle_since = None
            return
        self.idle_since = self.idle_since or now
        if not self.queue or now - self.idle_since < self.start_after:
            return
        candidate = self.queue.pop(0)
        plan = self.store.start(self.model_name, candidate.version, mode="canary", steps=self.steps, by=self.by, reason=f"demo drill: {candidate.label} version", now=now)
        self.started.append((plan.rollout_id, candidate))
        log.info("rollout %s: %s version %s, steps %s", plan.rollout_id, candidate.label, candidate.version, self.steps)

    def result(self) -> DrillResult:
        """How each started rollout ended, with its ``deployments`` documents (as stored)."""
        out = DrillResult()
        for rollout_id, candidate in self.started:
            plan = self.store.get(rollout_id)
            steps = [_step_row(doc) for doc in self.store.history(rollout_id)]
            status = plan.status if plan is not None else "unknown"
            out.rollouts.append({"rollout_id": rollout_id, "label": candidate.label, "candidate": candidate.version, "expected": candidate.expected, "status": status, "steps": steps})
        return out

    def close(self) -> None:
        self.store.close()


def online_errors_by_version(settings: Settings, model_name: str, since: datetime, horizon_min: int = 15) -> dict[str, dict[str, Any]]:
    """Each version's online forecast figures over the decisions since ``since`` (serving and
    shadowing alike): decisions made, time in band, 15-min RMSE and how many errors settled."""
    from app.control.rollout import figures_from_decisions
    from app.metadata import DECISIONS, open_metadata

    decisions = open_metadata(settings.metadata_url).collection(DECISIONS).find({"model.name": model_name, "decided_at": {"$gte": since}})
    versions = {str(d["model"]["version"]) for d in decisions} | {str(e["version"]) for d in decisions for e in d.get("settled_errors") or () if e.get("model") == model_name}
    return {v: figures_from_decisions(decisions, model_name, v, horizon_min).to_dict() for v in sorted(versions, key=lambda x: (len(x), x))}


def _step_row(doc: dict[str, Any]) -> dict[str, Any]:
    figures = doc.get("figures") or {}
    return {
        "event": doc.get("event"),
        "at": doc.get("at"),
        "fraction": doc.get("fraction"),
        "champion_rmse_c": (figures.get("champion") or {}).get("forecast_rmse_c"),
        "candidate_rmse_c": (figures.get("candidate") or {}).get("forecast_rmse_c"),
        "reason": doc.get("reason"),
    }
