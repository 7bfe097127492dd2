"""What a dashboard shows, independent of Grafana: titles, PromQL and units.

The Grafana builder (``builder.py``), the PNG renderer (``render.py``) and the tests all read these
specs, so a panel's query is written once. Expressions are plain PromQL (no Grafana macros such as
``$__rate_interval``) so that the same text runs against Prometheus's HTTP API as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

PanelKind = Literal["timeseries", "stat"]


@dataclass(frozen=True)
class Query:
    """One PromQL expression of a panel and the legend Grafana prints for each of its series."""

    expr: str
    legend: str = ""


@dataclass(frozen=True)
class PanelSpec:
    """One panel: a title, what it means, its queries and the unit of their values (a Grafana unit id)."""

    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: PanelKind = "timeseries"
    # Shown instead of "No data" when the queries return nothing: set for counters of rare events,
    # whose series only exist once the event happened (a Ray counter cannot start at 0).
    no_value: str | None = None


@dataclass(frozen=True)
class DashboardSpec:
    """One dashboard: a stable uid (the file name and Grafana's key), a title and its panels in order."""

    uid: str
    title: str
    description: str
    panels: tuple[PanelSpec, ...]
    tags: tuple[str, ...] = field(default=("greenhouse",))

    def queries(self) -> list[tuple[PanelSpec, Query]]:
        """Every (panel, query) pair of the dashboard, in panel order."""
        return [(panel, query) for panel in self.panels for query in panel.queries]
