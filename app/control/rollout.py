"""Canary, blue-green and shadow rollouts of a forecast model: the pure policy (no I/O, no clock).

A rollout moves greenhouses from the ``champion`` version of a registered model to a
``candidate`` version in steps (fractions of the greenhouses served by the candidate). Which
greenhouse is on the candidate follows a stable hash of the rollout id and the greenhouse id
(:func:`serves_candidate`), so a greenhouse never flips back as the fraction grows. During a
rollout both versions forecast every greenhouse (the one not serving shadows), so their online
forecast errors are compared on the same greenhouses.

- ``canary``: steps such as ``(0.1, 0.5, 1.0)``, judged one after the other, then promoted;
- ``blue_green``: steps ``(0.0, 1.0)``: the candidate is loaded and shadows everything, then all
  greenhouses switch at once;
- ``shadow``: steps ``(0.0,)``: the candidate only shadows; never promoted automatically.

:func:`judge` says what a rollout should do next (hold, advance, roll back, promote) from the
figures of both versions since the step started (:class:`VersionFigures`); the store
(``control/rollout_store.py``) reads those figures and applies the verdict.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any, Literal

Mode = Literal["canary", "blue_green", "shadow"]
Status = Literal["active", "promoted", "rolled_back", "aborted"]
Action = Literal["hold", "advance", "rollback", "promote"]
Role = Literal["candidate", "champion"]

MODES: tuple[str, ...] = ("canary", "blue_green", "shadow")
STATUSES: tuple[str, ...] = ("active", "promoted", "rolled_back", "aborted")
BLUE_GREEN_STEPS: tuple[float, ...] = (0.0, 1.0)
SHADOW_STEPS: tuple[float, ...] = (0.0,)


def serves_candidate(rollout_id: str, greenhouse_id: str, fraction: float) -> bool:
    """Whether ``greenhouse_id`` is served by the candidate of ``rollout_id`` at ``fraction``.

    The greenhouse's point in [0, 1) is the first 8 bytes of sha256(``rollout_id``/``greenhouse_id``):
    fixed for the rollout, so the set served by the candidate only grows with the fraction, and a
    new rollout draws a new set."""
    if fraction <= 0.0:
        return False
    if fraction >= 1.0:
        return True
    digest = hashlib.sha256(f"{rollout_id}/{greenhouse_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < fraction


def validate_steps(steps: tuple[float, ...] | list[float], mode: str) -> tuple[float, ...]:
    """``steps`` as a tuple, checked for ``mode``; ``ValueError`` with the reason otherwise.

    Fractions lie in [0, 1] and increase strictly; a canary or blue-green rollout ends at 1.0
    (it promotes from its last step); a shadow rollout is ``(0.0,)``."""
    if mode not in MODES:
        raise ValueError(f"unknown rollout mode {mode!r}: one of {', '.join(MODES)}")
    fractions = tuple(float(s) for s in steps)
    if not fractions:
        raise ValueError("a rollout needs at least one step")
    if any(not 0.0 <= f <= 1.0 for f in fractions):
        raise ValueError(f"steps are fractions of greenhouses in [0, 1], got {list(fractions)}")
    if any(b <= a for a, b in zip(fractions, fractions[1:], strict=False)):
        raise ValueError(f"steps must increase strictly, got {list(fractions)}")
    if mode == "shadow" and fractions != SHADOW_STEPS:
        raise ValueError("a shadow rollout has the one step 0.0 (the candidate only shadows)")
    if mode != "shadow" and fractions[-1] != 1.0:
        raise ValueError(f"a {mode} rollout ends at 1.0 (all greenhouses on the candidate), got {list(fractions)}")
    return fractions


def default_steps(mode: str, canary_steps: tuple[float, ...] | list[float]) -> tuple[float, ...]:
    """The steps of ``mode`` when none are given: the settings' canary steps, or blue-green's
    ``(0.0, 1.0)``, or shadow's ``(0.0,)``."""
    if mode == "blue_green":
        return BLUE_GREEN_STEPS
    if mode == "shadow":
        return SHADOW_STEPS
    return tuple(float(s) for s in canary_steps)


@dataclass(frozen=True)
class RolloutPlan:
    """One rollout's state: versions, mode, steps, where it stands, and the judging thresholds
    (copied from the settings when it started, so a change of settings does not move the goal)."""

    rollout_id: str
    model_name: str
    champion_version: str
    candidate_version: str
    mode: Mode
    steps: tuple[float, ...]
    step_index: int
    status: Status
    started_at: datetime
    step_started_at: datetime
    revision: int = 0
    error_margin_c: float = 0.15
    in_band_margin_pct: float = 5.0
    min_errors_per_step: int = 30
    min_decisions_per_step: int = 12
    horizon_min: int = 15
    settle_min: float = 30.0
    started_by: str = ""
    reason: str = ""

    @property
    def fraction(self) -> float:
        """The share of greenhouses the candidate serves now (0 once the rollout ended)."""
        return self.steps[self.step_index] if self.status == "active" else 0.0

    @property
    def is_last_step(self) -> bool:
        """Whether the current step is the last one (passing it promotes)."""
        return self.step_index >= len(self.steps) - 1

    def version_for(self, greenhouse_id: str) -> tuple[str, Role]:
        """``(version, role)`` serving ``greenhouse_id``: the candidate for the greenhouses the hash
        puts under the fraction, the champion for the others. After a promotion the candidate is
        the champion; after a rollback or an abort the champion serves all."""
        if self.status == "promoted":
            return self.candidate_version, "champion"
        if self.status == "active" and serves_candidate(self.rollout_id, greenhouse_id, self.fraction):
            return self.candidate_version, "candidate"
        return self.champion_version, "champion"

    def shadow_version_for(self, greenhouse_id: str) -> str | None:
        """The version that forecasts ``greenhouse_id`` alongside the serving one (None when the
        rollout ended): the other of champion and candidate."""
        if self.status != "active":
            return None
        version, role = self.version_for(greenhouse_id)
        return self.champion_version if role == "candidate" else self.candidate_version

    def to_document(self) -> dict[str, Any]:
        """The plan as a metadata document body (steps as a list)."""
        doc = asdict(self)
        doc["steps"] = list(self.steps)
        return doc

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> RolloutPlan:
        """A plan back from :meth:`to_document`'s fields (other keys are ignored)."""
        names = cls.__dataclass_fields__
        fields = {k: v for k, v in doc.items() if k in names}
        fields["steps"] = tuple(float(s) for s in fields["steps"])
        return cls(**fields)

    def advanced(self, now: datetime) -> RolloutPlan:
        """The plan on its next step, started at ``now``, one revision on."""
        return replace(self, step_index=self.step_index + 1, step_started_at=now, revision=self.revision + 1)

    def ended(self, status: Status) -> RolloutPlan:
        """The plan with ``status`` (promoted, rolled back, aborted), one revision on."""
        return replace(self, status=status, revision=self.revision + 1)


@dataclass(frozen=True)
class VersionFigures:
    """What one version did since the step started: its decisions (and the share in band) and its
    settled online forecast errors at the judged horizon (their RMSE; None without errors)."""

    decisions: int = 0
    in_band_pct: float | None = None
    errors_n: int = 0
    forecast_rmse_c: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The figures as a JSON-ready dict."""
        return asdict(self)

    def describe(self) -> str:
        """``rmse 0.31 C over 42 errors, 88.0% in band over 20 decisions``."""
        rmse = "no errors" if self.forecast_rmse_c is None else f"rmse {self.forecast_rmse_c:.3f} C over {self.errors_n} errors"
        band = "no decisions" if self.in_band_pct is None else f"{self.in_band_pct:.1f}% in band over {self.decisions} decisions"
        return f"{rmse}, {band}"


@dataclass(frozen=True)
class Verdict:
    """What a rollout should do next, why, and the figures it was judged on."""

    action: Action
    reason: str
    champion: VersionFigures
    candidate: VersionFigures
    plan: RolloutPlan | None = None  # the rollout as judged (before the action applies)

    def figures(self) -> dict[str, dict[str, Any]]:
        """``{"champion": {...}, "candidate": {...}}``."""
        return {"champion": self.champion.to_dict(), "candidate": self.candidate.to_dict()}


def _missing_errors(plan: RolloutPlan, champion: VersionFigures, candidate: VersionFigures) -> str | None:
    """Why the forecasts cannot be compared yet (None when they can)."""
    wanted = plan.min_errors_per_step
    if champion.errors_n < wanted or candidate.errors_n < wanted:
        return f"waiting for {wanted} settled {plan.horizon_min}-min errors of each version (champion {champion.errors_n}, candidate {candidate.errors_n})"
    return None


def _missing_decisions(plan: RolloutPlan, champion: VersionFigures, candidate: VersionFigures) -> str | None:
    """Why the candidate's control cannot be judged yet (None when it can)."""
    if plan.fraction > 0.0 and candidate.decisions < plan.min_decisions_per_step and not _none_drawn(plan, champion, candidate):
        return f"waiting for {plan.min_decisions_per_step} decisions by the candidate (has {candidate.decisions})"
    return None


def _none_drawn(plan: RolloutPlan, champion: VersionFigures, candidate: VersionFigures) -> bool:
    """True when the step's fraction drew no greenhouse of a small fleet: the champion made a
    step's worth of decisions and the candidate none. The step is then judged on the forecast
    errors alone (the candidate shadowed every greenhouse) rather than held for ever."""
    return candidate.decisions == 0 and champion.decisions >= plan.min_decisions_per_step


def _forecast_failure(plan: RolloutPlan, champion: VersionFigures, candidate: VersionFigures) -> str | None:
    """Why the candidate forecasts worse than the champion beyond the margin (None when it does not)."""
    if champion.forecast_rmse_c is not None and candidate.forecast_rmse_c is not None:
        if candidate.forecast_rmse_c > champion.forecast_rmse_c + plan.error_margin_c:
            return f"candidate forecast rmse {candidate.forecast_rmse_c:.3f} C exceeds champion {champion.forecast_rmse_c:.3f} C + {plan.error_margin_c} C"
    return None


def _control_failure(plan: RolloutPlan, champion: VersionFigures, candidate: VersionFigures) -> str | None:
    """Why the candidate keeps less time in band than the champion beyond the margin (None when
    it does not, or when one of them made no decisions). A few decisions say little, on either
    side: the candidate fails only when even the upper 95 % confidence bound of the difference of
    the two shares in band (:func:`share_difference_upper`) lies more than the margin below zero.
    (Against the champion's share taken as exact, a good candidate drawn onto a harder
    greenhouse for 14 decisions was rolled back in the demo: 78.6 % against 100 %, with equal
    forecast errors.)"""
    if champion.decisions > 0 and candidate.decisions > 0 and champion.in_band_pct is not None and candidate.in_band_pct is not None:
        upper_pct = 100.0 * share_difference_upper(candidate.in_band_pct / 100.0, candidate.decisions, champion.in_band_pct / 100.0, champion.decisions)
        if upper_pct < -plan.in_band_margin_pct:
            return (
                f"candidate in band {candidate.in_band_pct:.1f}% over {candidate.decisions} decisions is below champion {champion.in_band_pct:.1f}%"
                f" over {champion.decisions} (by at least {-upper_pct:.1f} points at 95% confidence, more than {plan.in_band_margin_pct})"
            )
    return None


def share_difference_upper(share: float, n: int, other: float, other_n: int, z: float = 1.96) -> float:
    """The upper 95 % bound of ``share - other``, shares observed over ``n`` and ``other_n``
    trials (Newcombe's hybrid score interval, from the two Wilson intervals)."""
    above = wilson_upper(share, n, z) - share
    below = other - wilson_lower(other, other_n, z)
    return share - other + math.sqrt(above * above + below * below)


def wilson_upper(share: float, n: int, z: float = 1.96) -> float:
    """The upper bound of the Wilson score interval of a share observed over ``n`` trials."""
    if n <= 0:
        return 1.0
    centre, spread = _wilson(share, n, z)
    return min(1.0, (centre + spread) / (1 + z * z / n))


def wilson_lower(share: float, n: int, z: float = 1.96) -> float:
    """The lower bound of the Wilson score interval of a share observed over ``n`` trials."""
    if n <= 0:
        return 0.0
    centre, spread = _wilson(share, n, z)
    return max(0.0, (centre - spread) / (1 + z * z / n))


def _wilson(share: float, n: int, z: float) -> tuple[float, float]:
    return share + z * z / (2 * n), z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n))


def judge(plan: RolloutPlan, champion: VersionFigures, candidate: VersionFigures) -> Verdict:
    """What ``plan`` should do next given both versions' figures since its step started.

    - hold until both versions have ``min_errors_per_step`` settled errors;
    - roll back when the candidate's RMSE exceeds the champion's by more than ``error_margin_c``
      (at once: worse forecasts need no decisions to show);
    - hold until (at a fraction above 0) the candidate has ``min_decisions_per_step`` decisions
      counted after the step settled (:func:`_none_drawn` excepted);
    - roll back when its time in band is more than ``in_band_margin_pct`` points below the
      champion's (only when both versions made decisions);
    - else advance to the next step, or promote from the last one. A shadow rollout never
      changes by itself: it holds, saying whether the candidate passes."""

    def verdict(action: Action, reason: str) -> Verdict:
        return Verdict(action, reason, champion, candidate, plan)

    if plan.status != "active":
        return verdict("hold", f"the rollout is {plan.status}")
    waiting = _missing_errors(plan, champion, candidate)
    if waiting is not None:
        return verdict("hold", waiting)
    # worse forecasts roll back at once: no need to wait for the candidate's control to show it
    failure = _forecast_failure(plan, champion, candidate)
    if failure is None:
        waiting = _missing_decisions(plan, champion, candidate)
        if waiting is not None and plan.mode != "shadow":
            return verdict("hold", waiting)
        failure = _control_failure(plan, champion, candidate)
    if plan.mode == "shadow":
        outcome = f"fails: {failure}" if failure else "passes the margins"
        return verdict("hold", f"shadow only (promote or abort by hand): candidate {outcome}; champion {champion.describe()}; candidate {candidate.describe()}")
    if failure is not None:
        return verdict("rollback", failure)
    passed = f"candidate within the margins at {plan.fraction:g} (champion {champion.describe()}; candidate {candidate.describe()})"
    if plan.is_last_step:
        return verdict("promote", passed)
    return verdict("advance", f"{passed}: on to {plan.steps[plan.step_index + 1]:g}")


def figures_from_decisions(decisions: list[dict[str, Any]], model_name: str, version: str, horizon_min: int, *, decisions_since: datetime | None = None) -> VersionFigures:
    """``version``'s figures from ``decisions`` documents (the ``decisions`` collection's shape).

    Its decisions are the ones ``model`` says it made (pinned greenhouses left out), with the share
    ``in_band``; its errors are the ``settled_errors`` entries of that model and version at
    ``horizon_min``, from every decision (it may have forecast as the shadow)."""
    made = [
        d
        for d in decisions
        if (d.get("model") or {}).get("name") == model_name
        and str((d.get("model") or {}).get("version")) == version
        and d.get("role") != "pinned"
        and (decisions_since is None or d["decided_at"] >= decisions_since)
    ]
    in_band = sum(1 for d in made if d.get("in_band"))
    errors = [
        float(e["error_c"])
        for d in decisions
        for e in d.get("settled_errors") or ()
        if e.get("model") == model_name and str(e.get("version")) == version and int(e.get("horizon_min", -1)) == horizon_min and e.get("error_c") is not None
    ]
    rmse = (sum(x * x for x in errors) / len(errors)) ** 0.5 if errors else None
    return VersionFigures(decisions=len(made), in_band_pct=100.0 * in_band / len(made) if made else None, errors_n=len(errors), forecast_rmse_c=rmse)
