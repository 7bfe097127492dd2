"""An in-memory stand-in for ``ray.serve.metrics`` in unit tests ONLY (production always makes
its metrics with :func:`app.serve.metric_factory.serve_metric`): it records what the product's
metric classes increment, observe and set, with the same call signatures Ray's metrics have."""

from __future__ import annotations

from collections import defaultdict
from typing import Any


def _key(tags: dict[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((tags or {}).items()))


class RecordedMetric:
    """One metric: counter totals, histogram observations and gauge values per tag set."""

    def __init__(self, kind: str, name: str, tag_keys: tuple[str, ...] = (), **options: Any) -> None:
        self.kind, self.name, self.tag_keys, self.options = kind, name, tuple(tag_keys), options
        self.totals: dict[tuple, float] = defaultdict(float)
        self.observed: dict[tuple, list[float]] = defaultdict(list)
        self.values: dict[tuple, float] = {}
        self.sets = 0

    def _check(self, tags: dict[str, str] | None) -> tuple:
        assert set(tags or {}) == set(self.tag_keys), f"{self.name}: tags {tags} but tag_keys {self.tag_keys}"
        assert all(isinstance(v, str) for v in (tags or {}).values()), f"{self.name}: tag values must be strings: {tags}"
        return _key(tags)

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        assert self.kind == "counter" and value > 0, f"{self.name}: Ray refuses inc({value})"
        self.totals[self._check(tags)] += value

    def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
        assert self.kind == "histogram"
        self.observed[self._check(tags)].append(value)

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        assert self.kind == "gauge"
        self.values[self._check(tags)] = value
        self.sets += 1

    def total(self, **tags: str) -> float:
        return self.totals.get(_key(tags), 0.0)

    def value(self, **tags: str) -> float | None:
        return self.values.get(_key(tags))

    def observations(self, **tags: str) -> list[float]:
        return self.observed.get(_key(tags), [])


class MetricRecorder:
    """A :data:`~app.serve.metric_factory.MetricFactory`; ``recorder["name"]`` is the metric made."""

    def __init__(self) -> None:
        self.made: dict[str, RecordedMetric] = {}

    def __call__(self, kind: str, name: str, *, description: str = "", tag_keys: tuple[str, ...] = (), **options: Any) -> RecordedMetric:
        assert description, f"{name}: a metric needs a description"
        metric = self.made[name] = RecordedMetric(kind, name, tag_keys, **options)
        return metric

    def __getitem__(self, name: str) -> RecordedMetric:
        return self.made[name]
