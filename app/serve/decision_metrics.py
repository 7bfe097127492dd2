"""Prometheus metrics of control decisions, shared by the control app and the control loop.

Exported through Ray's metrics agent (``ray.serve.metrics``), so Prometheus scrapes them with the
rest of the cluster. Labels are bounded: decision mode, route (source), model version and horizon
(versions are few: the champion, a candidate, a few shadows).
"""

from __future__ import annotations

from collections.abc import Iterable

from app.control.fleet_decisions import Decided

ERROR_BUCKETS_C = [0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0]


class DecisionMetrics:
    """Decisions by mode and source; online forecast errors by model version, horizon and role."""

    def __init__(self) -> None:
        from ray.serve.metrics import Counter, Histogram

        self._decisions = Counter("gh_control_decisions", description="control decisions by mode and source", tag_keys=("mode", "source"))
        self._errors = Histogram(
            "gh_online_forecast_abs_error_celsius",
            description="absolute error of indoor temperature forecasts that fell due (serving and shadow), by model version and horizon",
            boundaries=ERROR_BUCKETS_C,
            tag_keys=("model_version", "horizon_min", "shadow"),
        )

    def observe(self, decided: Iterable[Decided]) -> None:
        """Count each decision and its settled forecast errors."""
        for d in decided:
            self._decisions.inc(tags={"mode": d.decision.mode, "source": d.record["source"]})
            for e in d.record["settled_errors"]:
                tags = {"model_version": f"{e['model']}/{e['version']}", "horizon_min": str(e["horizon_min"]), "shadow": str(e["shadow"]).lower()}
                self._errors.observe(abs(float(e["error_c"])), tags=tags)
