"""How the Serve replicas make their Prometheus metrics: one injectable factory.

Production code calls :func:`serve_metric` (``ray.serve.metrics``: exported by the node's metrics
agent with the ``ray_`` prefix and the deployment, replica and application tags); unit tests
inject a recorder with the same signature, so the metric logic is tested without a cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MetricFactory = Callable[..., Any]
"""Makes a metric: ``factory(kind, name, description=..., tag_keys=..., boundaries=...)`` with
``kind`` one of ``"counter"``, ``"histogram"``, ``"gauge"``."""


def serve_metric(kind: str, name: str, **kwargs: Any) -> Any:
    """The production :data:`MetricFactory`: a ``ray.serve.metrics`` Counter, Histogram or Gauge."""
    from ray.serve import metrics

    cls = {"counter": metrics.Counter, "histogram": metrics.Histogram, "gauge": metrics.Gauge}[kind]
    return cls(name, **kwargs)
