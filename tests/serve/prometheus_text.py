"""Reading the local Ray node's metrics agent in tests: its ``/metrics`` text and the samples in it."""

from __future__ import annotations

import re
import urllib.request
from typing import Any


def exposition(ray: Any) -> str:
    """The local node's metrics agent's ``/metrics`` text."""
    port = ray.nodes()[0]["MetricsExportPort"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of ``name`` in an exposition: its labels and value."""
    out = []
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1 :].rsplit("} ", 1)
            out.append((dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels)), float(value)))
    return out


def value_of(text: str, name: str, **labels: str) -> float | None:
    """The sum over the series of ``name`` whose labels include ``labels`` (None: no such series)."""
    found = [v for lab, v in samples(text, name) if all(lab.get(k) == want for k, want in labels.items())]
    return sum(found) if found else None


def max_of(text: str, name: str, **labels: str) -> float | None:
    """The largest value over the series of ``name`` whose labels include ``labels`` (None: no such
    series): for gauges that several replicas set to the same figure, as the rules aggregate them."""
    found = [v for lab, v in samples(text, name) if all(lab.get(k) == want for k, want in labels.items())]
    return max(found) if found else None


# promtool's lint of label names; every Ray metric has Ray's camelCase labels (NodeAddress,
# SessionName, WorkerId, ...: docs/observability.md), which the product cannot rename.
RAY_LABEL_LINT = "label names should be written in 'snake_case' not 'camelCase'"


def product_lint_problems(text: str, promtool: str) -> list[str]:
    """``promtool check metrics`` on an exposition: its problems with the product's metrics
    (``gh_*``, ``ray_gh_*``), except the camelCase lint Ray's own labels cause."""
    import subprocess

    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    problems = (done.stdout + done.stderr).splitlines()
    return [p for p in problems if p.startswith(("gh_", "ray_gh_")) and not p.endswith(RAY_LABEL_LINT)]
