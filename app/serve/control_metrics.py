"""Prometheus metrics of the control app's requests, forecasts, refusals and dispatches.

Exported through Ray's metrics agent (``ray.serve.metrics``, see
:mod:`app.serve.metric_factory`); decisions themselves are counted by
:class:`~app.serve.decision_metrics.DecisionMetrics`. Labels are bounded: the route (a handful),
the refusal and dispatch-failure reasons named below.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from app.serve.metric_factory import MetricFactory, serve_metric

log = logging.getLogger(__name__)

REQUEST_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
FORECAST_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]


class ControlMetrics:
    """Request and forecast durations, refused operator credentials, failed dispatches."""

    def __init__(self, factory: MetricFactory = serve_metric) -> None:
        self._requests = factory("histogram", "gh_control_request_duration_seconds", description="time to answer a control app request, by route", boundaries=REQUEST_BUCKETS_S, tag_keys=("route",))
        self._forecasts = factory(
            "histogram", "gh_forecast_duration_seconds", description="time a control replica waits for one batched forecast call to the Forecaster deployment", boundaries=FORECAST_BUCKETS_S
        )
        self._auth_failures = factory("counter", "gh_auth_failures", description="requests refused for their credential, by surface and reason", tag_keys=("surface", "reason"))
        self._dispatch_failures = factory("counter", "gh_control_dispatch_failures", description="commands that could not be dispatched, by reason", tag_keys=("reason",))

    def request(self, route: str, duration_s: float) -> None:
        """A request to ``route`` answered after ``duration_s``."""
        self._requests.observe(duration_s, tags={"route": route})

    def forecast(self, duration_s: float) -> None:
        """One forecast call that took ``duration_s``."""
        self._forecasts.observe(duration_s)

    def auth_failure(self, reason: str) -> None:
        """An operator credential refused (:mod:`app.serve.control_auth`'s ``REFUSED_*``)."""
        self._auth_failures.inc(1, tags={"surface": "control", "reason": reason})

    def dispatch_failure(self, reason: str) -> None:
        """A command not dispatched (:mod:`app.control.dispatch`'s ``FAILED_*``)."""
        self._dispatch_failures.inc(1, tags={"reason": reason})


def timed(call: Callable[..., Awaitable[Any]], observe: Callable[[float], None], clock: Callable[[], float]) -> Callable[..., Awaitable[Any]]:
    """``call`` (a coroutine function) with each call's duration passed to ``observe``, whether it
    answered or raised."""

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = clock()
        try:
            return await call(*args, **kwargs)
        finally:
            try:
                observe(clock() - started)
            except Exception:  # metrics never fail a forecast
                log.exception("forecast duration metric failed")

    return wrapper
