"""Rollouts in the metadata store: start, read, judge and step them, promote or abort by hand.

- ``rollouts`` holds one document per rollout (its :class:`~app.control.rollout.RolloutPlan`),
  ``_id`` the rollout id. ``active_key`` is the model name while the rollout is active and the
  rollout id once it ended; a unique index on it lets only one rollout of a model be active, and
  :meth:`RolloutStore.active` is the one query ``{"active_key": model_name}``.
- ``deployments`` holds one document per step (start, advance, rollback, promote, abort), ``_id``
  ``<rollout id>:<revision>``, so a step is never recorded twice.
- Every change is a compare-and-set on the rollout's ``revision``: when several serving replicas
  :meth:`RolloutStore.tick` at once, exactly one applies (and records) the step.
- Aliases of the registered model move through a :class:`ModelRegistry` (MLflow through
  ``app.tracking`` by default): on promotion ``champion`` moves to the candidate and the old
  champion keeps ``previous-champion``; an automatic rollback marks the candidate ``rejected``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, cast

from app.control.rollout import Mode, RolloutPlan, Status, Verdict, VersionFigures, default_steps, figures_from_decisions, judge, validate_steps
from app.metadata import DECISIONS, DEPLOYMENTS, ROLLOUTS, DuplicateKeyError, MetadataStore, open_metadata

if TYPE_CHECKING:
    from app.config import RolloutSettings, Settings

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous-champion"
REJECTED = "rejected"
EVENTS = ("start", "advance", "rollback", "promote", "abort")
_ENDED_STATUS: dict[str, Status] = {"rollback": "rolled_back", "promote": "promoted", "abort": "aborted"}


class ModelRegistry(Protocol):
    """The registry operations a rollout needs (aliases of a registered model's versions)."""

    def version_by_alias(self, name: str, alias: str) -> str | None: ...

    def set_alias(self, name: str, alias: str, version: str) -> None: ...

    def version_exists(self, name: str, version: str) -> bool: ...


class TrackingRegistry:
    """:class:`ModelRegistry` on an MLflow tracking URL (``app.tracking``), connected on first use."""

    def __init__(self, tracking_url: str) -> None:
        self.tracking_url = tracking_url
        self._tracking: Any = None

    def _client(self) -> Any:
        if self._tracking is None:
            from app.tracking import Tracking

            self._tracking = Tracking(self.tracking_url)
        return self._tracking

    def version_by_alias(self, name: str, alias: str) -> str | None:
        """The version ``alias`` points at (None when the model or alias does not exist)."""
        return self._client().version_by_alias(name, alias)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``alias`` of ``name`` at ``version``."""
        self._client().set_alias(name, alias, version)

    def version_exists(self, name: str, version: str) -> bool:
        """Whether ``version`` of registered model ``name`` exists (other registry errors raise)."""
        try:
            self._client().client.get_model_version(name, version)
        except Exception as exc:  # MlflowException; its error code says "no such version"
            if getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return False
            raise
        return True


def _utc_now() -> datetime:
    return datetime.now(UTC)


class RolloutStore:
    """Rollouts of registered models: their state (``rollouts``), their step log (``deployments``)
    and their figures (``decisions``) in one metadata store."""

    def __init__(
        self, metadata: MetadataStore, tracking_url: str, settings: RolloutSettings, *, registry: ModelRegistry | None = None, clock: Callable[[], datetime] = _utc_now, owns_metadata: bool = False
    ) -> None:
        self.metadata = metadata
        self.settings = settings
        self.registry: ModelRegistry = registry if registry is not None else TrackingRegistry(tracking_url)
        self.clock = clock  # wall clock for recorded_at; rollout times come from the callers' ``now``
        self._owns_metadata = owns_metadata
        self.rollouts = metadata.collection(ROLLOUTS)
        self.deployments = metadata.collection(DEPLOYMENTS)
        self.decisions = metadata.collection(DECISIONS)
        self.rollouts.create_index([("active_key", 1)], unique=True)
        self.rollouts.create_index([("model_name", 1), ("created_at", 1)])
        self.deployments.create_index([("rollout_id", 1), ("revision", 1)])

    @classmethod
    def from_settings(cls, settings: Settings, *, registry: ModelRegistry | None = None) -> RolloutStore:
        """A store on ``settings.metadata_url`` and ``settings.tracking_url`` (closed by :meth:`close`)."""
        return cls(open_metadata(settings.metadata_url), settings.tracking_url, settings.rollout, registry=registry, owns_metadata=True)

    def close(self) -> None:
        """Close the metadata store when this store opened it."""
        if self._owns_metadata:
            self.metadata.close()

    # -- reading ------------------------------------------------------------------------------
    def active(self, model_name: str) -> RolloutPlan | None:
        """The active rollout of ``model_name`` (one indexed query), or None."""
        doc = self.rollouts.find_one({"active_key": model_name})
        return RolloutPlan.from_document(doc) if doc is not None else None

    def get(self, rollout_id: str) -> RolloutPlan | None:
        """The rollout ``rollout_id`` in whatever status, or None."""
        doc = self.rollouts.find_one({"_id": rollout_id})
        return RolloutPlan.from_document(doc) if doc is not None else None

    def latest(self, model_name: str) -> RolloutPlan | None:
        """The newest rollout of ``model_name`` (active or ended), or None."""
        doc = self.rollouts.find_one({"model_name": model_name}, sort=[("created_at", -1)])
        return RolloutPlan.from_document(doc) if doc is not None else None

    def figures(self, plan: RolloutPlan, now: datetime | None = None) -> tuple[VersionFigures, VersionFigures]:
        """``(champion, candidate)`` figures from the model's decisions since the step started
        (up to ``now`` when given): see :func:`~app.control.rollout.figures_from_decisions`."""
        window: dict[str, Any] = {"$gte": plan.step_started_at}
        if now is not None:
            window["$lte"] = now
        decisions = self.decisions.find({"model.name": plan.model_name, "decided_at": window})
        # time in band counts once the plant has settled under this step's split
        settled = plan.step_started_at + timedelta(minutes=plan.settle_min)
        return (
            figures_from_decisions(decisions, plan.model_name, plan.champion_version, plan.horizon_min, decisions_since=settled),
            figures_from_decisions(decisions, plan.model_name, plan.candidate_version, plan.horizon_min, decisions_since=settled),
        )

    def history(self, rollout_id_or_model: str) -> list[dict[str, Any]]:
        """The ``deployments`` documents of a rollout (by id) or of every rollout of a model (by
        name), in time order."""
        docs = self.deployments.find({"rollout_id": rollout_id_or_model}, sort=[("revision", 1)])
        if docs:
            return docs
        return self.deployments.find({"model_name": rollout_id_or_model}, sort=[("recorded_at", 1), ("revision", 1)])

    # -- changing -----------------------------------------------------------------------------
    def start(
        self,
        model_name: str,
        candidate_version: str,
        *,
        mode: str = "canary",
        steps: tuple[float, ...] | list[float] | None = None,
        by: str,
        reason: str = "",
        champion_version: str | None = None,
        now: datetime | None = None,
        error_margin_c: float | None = None,
        in_band_margin_pct: float | None = None,
        min_errors_per_step: int | None = None,
        min_decisions_per_step: int | None = None,
    ) -> RolloutPlan:
        """Start rolling ``candidate_version`` of ``model_name`` out against its champion (the
        ``champion`` alias unless ``champion_version`` is given). ``ValueError`` with the reason
        when a rollout of the model is active, there is no champion, the candidate is the
        champion, a version does not exist, or the steps do not fit the mode."""
        fractions = validate_steps(steps if steps is not None else default_steps(mode, self.settings.steps), mode)
        candidate_version = str(candidate_version)
        self._refuse_if_active(model_name)
        champion = str(champion_version) if champion_version is not None else self.registry.version_by_alias(model_name, CHAMPION)
        if champion is None:
            raise ValueError(f"model {model_name!r} has no champion: promote a version directly (greenhouse promote) instead of rolling it out")
        if candidate_version == champion:
            raise ValueError(f"version {candidate_version} already is the champion of {model_name!r}")
        for version in (candidate_version, champion):
            if not self.registry.version_exists(model_name, version):
                raise ValueError(f"model {model_name!r} has no version {version!r}")
        now = now or self.clock()
        s = self.settings
        plan = RolloutPlan(
            rollout_id=f"ro-{uuid.uuid4().hex[:12]}",
            model_name=model_name,
            champion_version=champion,
            candidate_version=candidate_version,
            mode=cast(Mode, mode),  # checked by validate_steps
            steps=fractions,
            step_index=0,
            status="active",
            started_at=now,
            step_started_at=now,
            error_margin_c=s.error_margin_c if error_margin_c is None else float(error_margin_c),
            in_band_margin_pct=s.in_band_margin_pct if in_band_margin_pct is None else float(in_band_margin_pct),
            min_errors_per_step=s.min_errors_per_step if min_errors_per_step is None else int(min_errors_per_step),
            min_decisions_per_step=s.min_decisions_per_step if min_decisions_per_step is None else int(min_decisions_per_step),
            horizon_min=s.horizon_min,
            settle_min=s.settle_min,
            started_by=by,
            reason=reason,
        )
        document = {**plan.to_document(), "_id": plan.rollout_id, "active_key": model_name, "created_at": self.clock(), "updated_at": self.clock(), "ended_at": None}
        try:
            self.rollouts.insert_one(document)
        except DuplicateKeyError:
            raise ValueError(self._active_message(model_name)) from None
        self._record(plan, "start", now, by, reason or f"{mode} rollout of version {candidate_version} against {champion}", VersionFigures(), VersionFigures())
        return plan

    def tick(self, model_name: str, now: datetime, by: str = "rollout-controller") -> Verdict | None:
        """Judge the active rollout of ``model_name`` on its figures up to ``now`` and apply the
        verdict (advance, roll back, promote). None without an active rollout. When another
        caller changed the rollout first, nothing is applied and the verdict is a hold."""
        plan = self.active(model_name)
        if plan is None:
            return None
        champion, candidate = self.figures(plan, now)
        verdict = judge(plan, champion, candidate)
        if verdict.action == "hold":
            return verdict
        if not self._apply(plan, verdict.action, now, by, verdict.reason, champion, candidate):
            return Verdict("hold", f"rollout {plan.rollout_id} changed meanwhile (another replica applied {verdict.action})", champion, candidate)
        return verdict

    def promote(self, model_name: str, by: str, reason: str, now: datetime | None = None) -> RolloutPlan:
        """Promote the active rollout's candidate now, whatever its step (an operator's call)."""
        return self._end_by_hand(model_name, "promote", by, reason, now)

    def abort(self, model_name: str, by: str, reason: str, now: datetime | None = None) -> RolloutPlan:
        """Stop the active rollout: the champion serves every greenhouse again, aliases unchanged."""
        return self._end_by_hand(model_name, "abort", by, reason, now)

    # -- internals ----------------------------------------------------------------------------
    def _active_message(self, model_name: str) -> str:
        plan = self.active(model_name)
        which = f" ({plan.rollout_id}: version {plan.candidate_version} at {plan.fraction:g})" if plan else ""
        return f"a rollout of {model_name!r} is already active{which}: promote or abort it first"

    def _refuse_if_active(self, model_name: str) -> None:
        if self.active(model_name) is not None:
            raise ValueError(self._active_message(model_name))

    def _end_by_hand(self, model_name: str, action: str, by: str, reason: str, now: datetime | None) -> RolloutPlan:
        plan = self.active(model_name)
        if plan is None:
            raise ValueError(f"no active rollout of {model_name!r}")
        now = now or self.clock()
        champion, candidate = self.figures(plan, now)
        if not self._apply(plan, action, now, by, reason or f"{action} by {by}", champion, candidate):
            raise ValueError(f"rollout {plan.rollout_id} changed meanwhile: look at its status and try again")
        ended = self.get(plan.rollout_id)
        assert ended is not None
        return ended

    def _apply(self, plan: RolloutPlan, action: str, now: datetime, by: str, reason: str, champion: VersionFigures, candidate: VersionFigures) -> bool:
        """Compare-and-set ``plan`` to its state after ``action``; on success move the aliases and
        record the step. False when the rollout changed since ``plan`` was read."""
        new = plan.advanced(now) if action == "advance" else plan.ended(_ENDED_STATUS[action])
        changes: dict[str, Any] = {"status": new.status, "step_index": new.step_index, "step_started_at": new.step_started_at, "revision": new.revision, "updated_at": self.clock()}
        if new.status != "active":
            changes |= {"active_key": plan.rollout_id, "ended_at": now}
        if self.rollouts.update_one({"_id": plan.rollout_id, "revision": plan.revision, "status": "active"}, {"$set": changes}) != 1:
            return False
        if action == "promote":
            self._move_champion(plan, new)
        elif action == "rollback":
            try:
                self.registry.set_alias(plan.model_name, REJECTED, plan.candidate_version)
            except Exception:  # the rollback stands; the alias is a label
                log.exception("rollout %s: could not set alias %s on version %s", plan.rollout_id, REJECTED, plan.candidate_version)
        self._record(new, action, now, by, reason, champion, candidate)
        return True

    def _move_champion(self, plan: RolloutPlan, promoted: RolloutPlan) -> None:
        """``champion`` -> candidate, ``previous-champion`` -> old champion. When the registry
        fails, the rollout is put back to active (a new revision) and the error raised."""
        try:
            self.registry.set_alias(plan.model_name, PREVIOUS_CHAMPION, plan.champion_version)
            self.registry.set_alias(plan.model_name, CHAMPION, plan.candidate_version)
        except Exception:
            restore = {"status": "active", "active_key": plan.model_name, "ended_at": None, "revision": promoted.revision + 1, "updated_at": self.clock()}
            self.rollouts.update_one({"_id": plan.rollout_id, "revision": promoted.revision}, {"$set": restore})
            raise

    def _record(self, plan: RolloutPlan, event: str, now: datetime, by: str, reason: str, champion: VersionFigures, candidate: VersionFigures) -> None:
        """Insert the ``deployments`` document of one step (``plan`` is the state after it)."""
        self.deployments.insert_one(
            {
                "_id": f"{plan.rollout_id}:{plan.revision:04d}",
                "rollout_id": plan.rollout_id,
                "model_name": plan.model_name,
                "event": event,
                "at": now,
                "recorded_at": self.clock(),
                "by": by,
                "champion_version": plan.champion_version,
                "candidate_version": plan.candidate_version,
                "mode": plan.mode,
                "status": plan.status,
                "fraction": 1.0 if plan.status == "promoted" else plan.fraction,
                "step_index": plan.step_index,
                "revision": plan.revision,
                "figures": {"champion": champion.to_dict(), "candidate": candidate.to_dict()},
                "reason": reason,
            }
        )
