"""The decision record: one ``decisions`` document per control decision.

It is the first link of the lineage chain (``greenhouse lineage COMMAND_ID``: the readings window
and its bus offsets, the feature row's hash, the model version, the offset correction, the policy,
the caller) and the source of a rollout's figures (each version's online forecast errors and time
in band). Pure: the caller writes the document.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from app.contracts.command import ModelRef
from app.control.core import ControlDecision, ControlPolicy

ROLE_CHAMPION = "champion"
ROLE_CANDIDATE = "candidate"
ROLE_PINNED = "pinned"
"""A version named by the app's config (``model_version`` or per greenhouse), outside any rollout."""


@dataclass(frozen=True)
class Route:
    """Which model version serves a greenhouse, in which role, and which versions shadow it."""

    role: str = ROLE_CHAMPION
    rollout_id: str | None = None
    shadows: tuple[str, ...] = ()
    """Versions (of the serving model's name) that forecast this greenhouse without actuating."""


@dataclass(frozen=True)
class DecisionContext:
    """What a decision record holds besides the decision: where it came from and who asked."""

    source: str
    """``"loop"`` (the control loop service) or ``"on_demand"`` (``POST /control``)."""
    requested_by: str
    route: Route = field(default_factory=Route)
    interval_start: datetime | None = None


def index_decisions(decisions: Any) -> None:
    """Create the indexes the ``decisions`` collection is read by: a rollout's figures (model and
    time) and the control loop's intervals (source and interval)."""
    decisions.create_index([("model.name", 1), ("decided_at", 1)])
    decisions.create_index([("source", 1), ("interval_start", 1)])


def policy_fingerprint(policy: ControlPolicy) -> dict[str, Any]:
    """The policy's parameters and their SHA-256 (same parameters, same hash)."""
    params = jsonable(dataclasses.asdict(policy))
    return {"sha256": hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS)).hexdigest(), "params": params}


def feature_row_sha256(features: Mapping[str, Any]) -> str:
    """SHA-256 of the feature row a decision used (sorted keys; times as ISO 8601)."""
    return hashlib.sha256(orjson.dumps(jsonable(dict(features)), option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)).hexdigest()


def settled_entries(model: str, version: str, errors_c: Mapping[int, float], *, shadow: bool) -> list[dict[str, Any]]:
    """Settled forecast errors of one version as ``settled_errors`` entries."""
    return [{"model": model, "version": version, "horizon_min": int(h), "error_c": float(e), "shadow": shadow} for h, e in sorted(errors_c.items())]


def decision_document(
    decision: ControlDecision,
    context: DecisionContext,
    *,
    features: Mapping[str, Any],
    provenance: Mapping[str, Any],
    policy: Mapping[str, Any],
    band_c: tuple[float, float],
    shadow_errors: list[dict[str, Any]] = (),  # type: ignore[assignment]
    shadow_forecasts: Mapping[str, Mapping[str, float]] | None = None,
    serving: ModelRef | None = None,
) -> dict[str, Any]:
    """The ``decisions`` document of ``decision`` (``_id`` is its command id). ``model`` is the
    version that served the greenhouse (``serving``), even when its decision fell back to the
    thermostat (``mode`` says so): a version that fails counts against it in a rollout."""
    command = decision.command
    model = serving or command.model
    air_temp_c = float(features["air_temp_c"])
    served = settled_entries(model.name, model.version, decision.settled_errors_c, shadow=False)
    return {
        "_id": command.command_id,
        "command_id": command.command_id,
        "greenhouse_id": decision.greenhouse_id,
        "decided_at": command.issued_at,
        "interval_start": context.interval_start,
        "source": context.source,
        "requested_by": context.requested_by,
        "model": {"name": model.name, "version": model.version},
        "role": context.route.role,
        "rollout_id": context.route.rollout_id,
        "mode": decision.mode,
        "reason": decision.reason,
        "setpoints": command.setpoints.model_dump(),
        "dry_run": command.dry_run,
        "air_temp_c": air_temp_c,
        "in_band": band_c[0] <= air_temp_c <= band_c[1],
        "state_ts": decision.state_ts,
        "readings": dict(provenance),
        "feature_row_sha256": feature_row_sha256(features),
        "offset_correction_c": {str(h): c for h, c in decision.corrections_c.items()},
        "forecast": dict(decision.forecast),
        "policy": dict(policy),
        "settled_errors": served + list(shadow_errors),
        "shadow_forecasts": {k: dict(v) for k, v in (shadow_forecasts or {}).items()},
    }


def jsonable(value: Any) -> Any:
    """``value`` as JSON-ready data: mapping keys as strings, tuples as lists, times as ISO 8601,
    pydantic models dumped, numpy scalars as Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value
