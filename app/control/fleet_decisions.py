"""Decisions for many greenhouses at once, with shadow models and decision records.

Both the control loop service (a batch of greenhouses per interval) and ``POST /control`` (a batch
of one) decide through :class:`FleetDecider`:

1. greenhouses are grouped by the model version that serves them (a rollout puts some on the
   candidate) and each group is decided by the controller core with one forecaster call;
2. each shadow version forecasts its greenhouses under the setpoints just chosen, with one call per
   version; it never actuates, and its forecasts settle against what happened like the serving
   model's (the online forecast error per version and horizon);
3. every decision gets its ``decisions`` record (:mod:`app.control.decision_record`).

No I/O: forecasters are callables, the caller writes the records and dispatches the commands.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from app.control.core import ControlDecision, Controller, GreenhouseState, ModelForecaster, offsets_key
from app.control.decision_record import DecisionContext, Route, decision_document, policy_fingerprint, settled_entries
from app.control.planner import candidate_matrix


@dataclass(frozen=True)
class Assignment:
    """One greenhouse to decide: its state, the forecaster serving it (``None``: the thermostat,
    ``unavailable`` says why), its route and the forecasters shadowing it."""

    state: GreenhouseState
    serving: ModelForecaster | None
    route: Route = field(default_factory=Route)
    shadows: tuple[ModelForecaster, ...] = ()
    unavailable: str | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)
    request_id: str | None = None


@dataclass(frozen=True)
class Decided:
    """A decision and its ``decisions`` document."""

    decision: ControlDecision
    record: dict[str, Any]


class FleetDecider:
    """Batched decisions and shadow forecasts under one controller (one per replica or loop)."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.policy = policy_fingerprint(controller.policy)
        targets = controller.policy.targets
        self.band_c = (targets.band_low_c, targets.band_high_c)

    async def decide(self, items: Sequence[Assignment], now: datetime, context: DecisionContext, *, dry_run: bool = False) -> list[Decided]:
        """Decide every item at ``now`` (one forecaster call per serving version, one per shadow
        version); results in the order of ``items``."""
        decisions: dict[int, ControlDecision] = {}
        for group in _group_by_model(items, lambda a: [a.serving]).values():
            first = group[0]
            made = await self.controller.decide_many([a.state for a in group], first.serving, now, unavailable=first.unavailable, dry_run=dry_run, request_ids=[a.request_id for a in group])
            decisions.update({id(a): d for a, d in zip(group, made)})
        shadows = await self._shadow(items, decisions)
        out = []
        for a in items:
            d = decisions[id(a)]
            errors, forecasts = shadows.get(id(a), ([], {}))
            ctx = DecisionContext(context.source, context.requested_by, a.route, context.interval_start)
            record = decision_document(
                d,
                ctx,
                features=a.state.features,
                provenance=a.provenance,
                policy=self.policy,
                band_c=self.band_c,
                shadow_errors=errors,
                shadow_forecasts=forecasts,
                serving=a.serving.ref if a.serving else None,
            )
            out.append(Decided(d, record))
        return out

    async def _shadow(self, items: Sequence[Assignment], decisions: Mapping[int, ControlDecision]) -> dict[int, tuple[list[dict[str, Any]], dict[str, dict[str, float]]]]:
        """Each shadow version's forecasts under the chosen setpoints, settled and remembered."""
        found: dict[int, tuple[list[dict[str, Any]], dict[str, dict[str, float]]]] = {id(a): ([], {}) for a in items}
        for model_id, group in _group_by_model(items, lambda a: list(a.shadows)).items():
            shadow = next(s for s in group[0].shadows if _model_id(s) == model_id)
            errors = {id(a): self._settle(shadow, a.state) for a in group}
            try:
                rows = await self._forecast(shadow, group, decisions)
            except Exception:  # a shadow that cannot forecast never affects control
                rows = None
            for i, a in enumerate(group):
                entries, forecasts = found[id(a)]
                entries += settled_entries(shadow.ref.name, shadow.ref.version, errors[id(a)], shadow=True)
                if rows is not None:
                    forecast = dict(zip(shadow.output_keys, rows[i].tolist()))
                    self.controller.offsets.record(offsets_key(shadow.ref, a.state.greenhouse_id), a.state.ts, forecast)
                    forecasts[model_id] = {k: round(v, 3) for k, v in forecast.items()}
        return found

    def _settle(self, shadow: ModelForecaster, state: GreenhouseState) -> dict[int, float]:
        return self.controller.offsets.observe(offsets_key(shadow.ref, state.greenhouse_id), state.ts, float(state.features["air_temp_c"]))

    async def _forecast(self, shadow: ModelForecaster, group: Sequence[Assignment], decisions: Mapping[int, ControlDecision]) -> np.ndarray:
        taus = self.controller.policy.actuator_time_constants_s
        parts = [candidate_matrix(a.state.features, [decisions[id(a)].setpoints], shadow.feature_columns, shadow.horizons_min, taus) for a in group]
        out = shadow.predict(np.concatenate([m for m, _ in parts]), parts[0][1], None)
        return np.asarray(await out if inspect.isawaitable(out) else out)


def _model_id(forecaster: ModelForecaster | None) -> str:
    return "" if forecaster is None else f"{forecaster.ref.name}/{forecaster.ref.version}"


def _group_by_model(items: Sequence[Assignment], models_of: Any) -> dict[str, list[Assignment]]:
    """Items grouped by each forecaster ``models_of(item)`` names (``""`` for none)."""
    groups: dict[str, list[Assignment]] = {}
    for a in items:
        for forecaster in models_of(a):
            groups.setdefault(_model_id(forecaster), []).append(a)
    return groups
