"""Draw a dashboard from a real Prometheus as a PNG (for documents; Grafana is not needed).

``python -m app.observability.dashboards.render --prometheus http://127.0.0.1:9090 --out docs/img/ops-overview.png``
runs each panel's queries of the fleet overview over the last ``--minutes`` (``query_range``) and
draws a grid of small time-series plots titled like the panels.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from app.observability.dashboards.definitions import DASHBOARDS, FLEET_OVERVIEW
from app.observability.dashboards.prometheus_api import PrometheusApi, Series
from app.observability.dashboards.spec import DashboardSpec, PanelSpec

COLUMNS = 4
MAX_LINES = 6  # per panel: a picture, not an investigation
UNIT_LABELS = {"s": "seconds", "cps": "per second", "ops": "per second", "reqps": "requests/s", "celsius": "°C", "percentunit": "share", "bytes": "bytes", "short": ""}


def legend_of(template: str, labels: dict[str, str]) -> str:
    """A Grafana legend template (``{{label}}``) filled from a series' labels."""
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template).strip()
    return text or ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"


def panel_series(prometheus: PrometheusApi, panel: PanelSpec, start_s: float, end_s: float, step_s: float) -> list[tuple[str, Series]]:
    """(legend, series) of every query of ``panel`` over the range, at most MAX_LINES."""
    found = []
    for query in panel.queries:
        found += [(legend_of(query.legend, s.labels), s) for s in prometheus.query_range(query.expr, start_seconds=start_s, end_seconds=end_s, step_seconds=step_s)]
    return found[:MAX_LINES]


def _draw_panel(ax, panel: PanelSpec, lines: list[tuple[str, Series]], end_s: float, minutes: float) -> None:  # noqa: ANN001  (a matplotlib Axes)
    ax.set_title(panel.title, fontsize=9, loc="left")
    ax.set_xlim(-minutes, 0)
    ax.tick_params(labelsize=7)
    ax.grid(True, linewidth=0.4, alpha=0.5)
    unit = UNIT_LABELS.get(panel.unit, panel.unit)
    if unit:
        ax.set_ylabel(unit, fontsize=7)
    if not lines:
        ax.text(0.5, 0.5, panel.no_value or "No data", ha="center", va="center", fontsize=12, color="grey", transform=ax.transAxes)
        ax.set_yticks([])
    for legend, series in lines:
        points = [(t, v) for t, v in series.points if not math.isnan(v)]
        ax.plot([(t - end_s) / 60 for t, _ in points], [v for _, v in points], linewidth=1.2, label=legend[:40])
    if lines:
        ax.legend(fontsize=6, loc="upper left", frameon=False)
    ax.set_xlabel("minutes before the end", fontsize=7)


def render(spec: DashboardSpec, prometheus: PrometheusApi, out: Path, *, minutes: float = 30, step_s: float = 15, end_seconds: float | None = None) -> Path:
    """Draw every panel of ``spec`` over the ``minutes`` up to ``end_seconds`` (Unix time; default
    now) into the PNG ``out``."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    end_s = time.time() if end_seconds is None else end_seconds
    start_s = end_s - minutes * 60
    rows = math.ceil(len(spec.panels) / COLUMNS)
    fig, axes = plt.subplots(rows, COLUMNS, figsize=(4 * COLUMNS, 2.8 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, spec.panels, strict=False):
        _draw_panel(ax, panel, panel_series(prometheus, panel, start_s, end_s, step_s), end_s, minutes)
    for ax in list(axes.flat)[len(spec.panels) :]:
        ax.set_visible(False)
    stamp = datetime.fromtimestamp(end_s, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    fig.suptitle(f"{spec.title}  ·  {minutes:g} min to {stamp}", fontsize=11, x=0.01, ha="left")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    """Render one dashboard (default: the fleet overview) from a Prometheus server."""
    parser = argparse.ArgumentParser(
        prog="python -m app.observability.dashboards.render", description="Draw a greenhouse dashboard's panels from a real Prometheus's query_range results into a PNG (matplotlib)."
    )
    parser.add_argument("--prometheus", required=True, help="the Prometheus base URL, e.g. http://127.0.0.1:9090")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write, e.g. docs/img/ops-overview.png")
    parser.add_argument("--dashboard", default=FLEET_OVERVIEW.uid, choices=[d.uid for d in DASHBOARDS], help=f"which dashboard (default: {FLEET_OVERVIEW.uid})")
    parser.add_argument("--minutes", type=float, default=30, help="how far back to draw (default: 30)")
    parser.add_argument("--step", type=float, default=15, help="seconds between points (default: 15)")
    parser.add_argument("--end", type=float, default=None, help="Unix time the picture ends at (default: now), e.g. when a run ended")
    args = parser.parse_args(argv)
    spec = next(d for d in DASHBOARDS if d.uid == args.dashboard)
    with PrometheusApi(args.prometheus) as prometheus:
        path = render(spec, prometheus, args.out, minutes=args.minutes, step_s=args.step, end_seconds=args.end)
    print(f"{path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
