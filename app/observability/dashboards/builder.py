"""Turn dashboard specs into Grafana dashboard JSON with grafana-foundation-sdk (Grafana's own
builder library), and write them as files Grafana's file provisioning loads."""

from __future__ import annotations

import json
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import DataSourceRef

from app.observability.dashboards.spec import DashboardSpec, PanelSpec

# The dashboards never name a datasource: a variable lets the user pick their Prometheus, and the
# provisioned datasource (stack/grafana/provisioning) is the default choice.
DATASOURCE_VARIABLE = "datasource"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${" + DATASOURCE_VARIABLE + "}")
PANEL_WIDTH = 8  # of Grafana's 24 columns: three panels a row
PANEL_HEIGHT = 8
REFERENCE_IDS = "ABCDEFGHIJ"


def _targets(panel: PanelSpec) -> list[prometheus.Dataquery]:
    return [prometheus.Dataquery().expr(query.expr).legend_format(query.legend or "__auto").ref_id(REFERENCE_IDS[index]).datasource(DATASOURCE) for index, query in enumerate(panel.queries)]


def panel_builder(panel: PanelSpec) -> timeseries.Panel | stat.Panel:
    """The grafana-foundation-sdk builder of one panel (a time series or a stat)."""
    if panel.kind == "stat":
        built = stat.Panel().graph_mode(common.BigValueGraphMode.AREA).reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
    else:
        built = (
            timeseries.Panel()
            .line_width(1)
            .fill_opacity(10)
            .legend(common_builders.VizLegendOptions().show_legend(True).display_mode(common.LegendDisplayMode.LIST).placement(common.LegendPlacement.BOTTOM))
        )
    built = built.title(panel.title).description(panel.description).datasource(DATASOURCE).unit(panel.unit).span(PANEL_WIDTH).height(PANEL_HEIGHT)
    if panel.no_value is not None:
        built = built.no_value(panel.no_value)
    for target in _targets(panel):
        built = built.with_target(target)
    return built


def dashboard_builder(spec: DashboardSpec) -> dashboard_builders.Dashboard:
    """The grafana-foundation-sdk builder of one dashboard, with its datasource variable."""
    built = (
        dashboard_builders.Dashboard(spec.title)
        .uid(spec.uid)
        .description(spec.description)
        .tags(list(spec.tags))
        .editable()
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("utc")
        .with_variable(dashboard_builders.DatasourceVariable(DATASOURCE_VARIABLE).label("Prometheus").type("prometheus"))
    )
    for panel in spec.panels:
        built = built.with_panel(panel_builder(panel))
    return built


def dashboard_json(spec: DashboardSpec) -> str:
    """The dashboard as the JSON text Grafana provisions (stable: sorted keys, two-space indent)."""
    model = dashboard_builder(spec).build()
    return json.dumps(model, cls=JSONEncoder, sort_keys=True, indent=2) + "\n"


def write_dashboards(specs: tuple[DashboardSpec, ...], out_dir: Path) -> list[Path]:
    """Write ``<uid>.json`` for every spec into ``out_dir`` (created if needed); the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in specs:
        path = out_dir / f"{spec.uid}.json"
        path.write_text(dashboard_json(spec))
        written.append(path)
    return written
