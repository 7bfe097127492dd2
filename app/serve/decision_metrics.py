"""Prometheus metrics of control decisions, shared by the control app and the control loop.

Exported through Ray's metrics agent (``ray.serve.metrics``), so Prometheus scrapes them with the
rest of the cluster. Labels are bounded: decision mode, route (source), model version and horizon
(versions are few: the champion, a candidate, a few shadows), and the fallback reasons of
:func:`fallback_reason`.
"""

from __future__ import annotations

from collections.abc import Iterable

from app.control.core import ControlDecision
from app.control.fleet_decisions import Decided
from app.serve.metric_factory import MetricFactory, serve_metric

ERROR_BUCKETS_C = [0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0]

# Why a decision fell back to the thermostat (what the controller core distinguishes)
FALLBACK_NO_MODEL = "no_model"  # no forecaster: no model resolved or loaded (alias, MLflow, config)
FALLBACK_STALE_STATE = "stale_state"  # the greenhouse's newest step is too old to forecast from
FALLBACK_MODEL_ERROR = "model_error"  # the model was there but its query, prediction or choice failed


def fallback_reason(decision: ControlDecision) -> str | None:
    """Why ``decision`` is the thermostat's (one of the ``FALLBACK_*`` reasons), ``None`` for a
    model decision."""
    if decision.mode != "thermostat":
        return None
    if decision.model_error:
        return FALLBACK_MODEL_ERROR
    if decision.reason.startswith("data stale"):  # the core's wording (app/control/core.py)
        return FALLBACK_STALE_STATE
    return FALLBACK_NO_MODEL


class DecisionMetrics:
    """Decisions by mode and source; thermostat fallbacks by reason; clamped setpoints by actuator; online forecast errors by
    model version, horizon and role."""

    def __init__(self, factory: MetricFactory = serve_metric) -> None:
        self._decisions = factory("counter", "gh_control_decisions", description="control decisions by mode and source", tag_keys=("mode", "source"))
        self._fallbacks = factory("counter", "gh_control_fallbacks", description="decisions that fell back to the thermostat, by reason", tag_keys=("reason",))
        self._clamped = factory("counter", "gh_control_setpoints_clamped", description="setpoints the safety or rate limits changed, by actuator", tag_keys=("actuator",))
        self._errors = factory(
            "histogram",
            "gh_online_forecast_abs_error_celsius",
            description="absolute error of indoor temperature forecasts that fell due (serving and shadow), by model version and horizon",
            boundaries=ERROR_BUCKETS_C,
            tag_keys=("model_version", "horizon_min", "shadow"),
        )

    def observe(self, decided: Iterable[Decided]) -> None:
        """Count each decision, its fallback, its clamped setpoints and its settled forecast errors."""
        for d in decided:
            self._decisions.inc(tags={"mode": d.decision.mode, "source": d.record["source"]})
            reason = fallback_reason(d.decision)
            if reason is not None:
                self._fallbacks.inc(tags={"reason": reason})
            for actuator in d.decision.clamped:
                self._clamped.inc(tags={"actuator": actuator})
            for e in d.record["settled_errors"]:
                tags = {"model_version": f"{e['model']}/{e['version']}", "horizon_min": str(e["horizon_min"]), "shadow": str(e["shadow"]).lower()}
                self._errors.observe(abs(float(e["error_c"])), tags=tags)
