"""The alert rules of the stack's Prometheus, their promtool unit tests, and docs/observability.md.

- ``promtool check rules`` and ``promtool test rules`` on ``stack/prometheus/rules`` and
  ``stack/prometheus/tests`` (seconds), and ``promtool check config`` on ``prometheus.yml.in``
  rendered by the very ``render`` call of ``stack/stack``'s ``start_prometheus``;
- the rules file and docs/observability.md as one definition: every metric a rule reads is in the
  page's metric catalogue (exported today, or to be exported), with the labels the rule matches;
  every alert is in the page's alert catalogue with its severity, its metrics and their status; the
  promtool tests feed series of exactly the catalogue's names and labels.

promtool comes with Debian's ``prometheus`` package (``stack/stack up prometheus`` installs it).
Outside CI a missing promtool skips the promtool tests; under ``CI=true`` it fails them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.engines import missing

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "stack" / "prometheus"
RULES = PROM_DIR / "rules" / "greenhouse.rules.yml"
RULE_TESTS = PROM_DIR / "tests" / "greenhouse.rules.test.yml"
TEMPLATE = PROM_DIR / "prometheus.yml.in"
STACK_SCRIPT = REPO / "stack" / "stack"
DOC = REPO / "docs" / "observability.md"

EXPORTED, PENDING = "exported today", "to be exported"
SEVERITIES = {"warning", "critical"}
ANNOTATIONS = {"summary", "description", "first_response", "runbook"}
# Labels that come on top of a metric's own (docs/observability.md, "How the product's metrics
# reach Prometheus"): Ray's core worker, Serve, the OpenTelemetry exporter, Prometheus's target.
RAY_LABELS = {"Component", "NodeAddress", "SessionName", "Version", "WorkerId", "otel_scope_name", "otel_scope_version", "otel_scope_schema_url"}
SERVE_LABELS = {"application", "deployment", "replica"}
TARGET_LABELS = {"job", "instance"}

# --- PromQL: the metric names and label matchers of an expression --------------------------------

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless", "inf", "nan"}
_AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
_STRING = r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`'


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are neither functions, aggregations,
    keywords, label names (matchers, grouping lists) nor durations. Rules never select by
    ``__name__`` (checked below), so every metric read has its name in the expression."""
    text = re.sub(_STRING, '""', expr)
    text = re.sub(r"#[^\n]*", " ", text)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r" \1 ", text)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)", text):
        word = match.group(1)
        if word.lower() in _KEYWORDS or word in _AGGREGATIONS or text[match.end() :].lstrip().startswith("("):
            continue
        names.add(word)
    return names


def matched_labels(expr: str) -> dict[str, set[str]]:
    """Metric name -> the label names its selectors match on (``name{label="..."}``)."""
    found: dict[str, set[str]] = {}
    for match in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)\s*\{((?:" + _STRING + r"|[^}\"'`])*)\}", expr):
        labels = set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", re.sub(_STRING, '""', match.group(2))))
        found.setdefault(match.group(1), set()).update(labels)
    return found


def test_metric_names_reads_promql_like_prometheus() -> None:
    expr = 'sum by (a, b) (rate(x_total{l="a(b) {c}", m=~"y.*"}[5m])) / on (a) group_left (b) y offset 5m > bool 1e3 and absent(z{job="j"}) or deriv(max by (p) (w)[15m:1m]) > 15 * 60 unless count(up offset 1h)'
    assert metric_names(expr) == {"x_total", "y", "z", "w", "up"}
    assert matched_labels(expr) == {"x_total": {"l", "m"}, "z": {"job"}}


# --- the three files -----------------------------------------------------------------------------


def load_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in load_rules() if "alert" in rule}


def _section(text: str, heading: str) -> str:
    """The body of the ``## heading`` section of a Markdown page (up to the next ``## ``)."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"docs/observability.md has no '## {heading}' section"
    return match.group(1)


def _subsections(text: str) -> dict[str, str]:
    parts = re.split(r"^### (.+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def metric_catalogue() -> dict[str, tuple[str, set[str]]]:
    """docs/observability.md's metric catalogue: name -> (status, the metric's own label names).

    Two tables, under '### Exported today' and '### To be exported'; a row's first cell names the
    metric (several names for a histogram's series), its third cell the labels (backticked names;
    values and remarks in parentheses)."""
    subsections = _subsections(_section(DOC.read_text(), "Metric catalogue"))
    assert set(subsections) == {"Exported today", "To be exported"}, f"metric catalogue subsections: {sorted(subsections)}"
    catalogue: dict[str, tuple[str, set[str]]] = {}
    for heading, status in (("Exported today", EXPORTED), ("To be exported", PENDING)):
        rows = [line for line in subsections[heading].splitlines() if line.startswith("| `")]
        assert rows, f"no metric rows under '### {heading}'"
        for row in rows:
            cells = [cell.strip() for cell in row.strip("|").split("|")]
            labels_cell = cells[2]
            while "(" in labels_cell:  # drop "(values, remarks)", nested or not
                stripped = re.sub(r"\([^()]*\)", "", labels_cell)
                if stripped == labels_cell:
                    break
                labels_cell = stripped
            labels = set(re.findall(r"`([A-Za-z_]\w*)`", labels_cell))
            for name in re.findall(r"`([A-Za-z_:][\w:]*)`", cells[0]):
                assert name not in catalogue, f"{name} is catalogued twice"
                catalogue[name] = (status, labels)
    return catalogue


def alert_catalogue() -> dict[str, str]:
    """docs/observability.md's alert catalogue: alert name -> its section's text."""
    return _subsections(_section(DOC.read_text(), "Alert catalogue"))


def allowed_labels(name: str, own: set[str]) -> set[str]:
    return own | TARGET_LABELS | (RAY_LABELS | SERVE_LABELS if name.startswith("ray_") else set())


# --- the catalogue checks (no promtool needed) ----------------------------------------------------


def test_rules_read_only_catalogued_metrics_with_their_labels() -> None:
    catalogue = metric_catalogue()
    for name, rule in alerts().items():
        expr = rule["expr"]
        assert "__name__" not in expr, f"{name}: select metrics by name, not by __name__, so the catalogue check sees them"
        used = metric_names(expr)
        assert used, f"{name}: no metric found in its expression"
        unknown = used - set(catalogue)
        assert not unknown, f"{name} reads {sorted(unknown)}, missing from docs/observability.md's metric catalogue"
        for metric, labels in matched_labels(expr).items():
            extra = labels - allowed_labels(metric, catalogue[metric][1])
            assert not extra, f"{name} matches {metric} on {sorted(extra)}, labels docs/observability.md does not list for it"


def test_every_alert_is_catalogued_with_its_severity_metrics_and_status() -> None:
    catalogue = metric_catalogue()
    documented = alert_catalogue()
    rules = alerts()
    assert set(documented) == set(rules), f"only in the rules: {sorted(set(rules) - set(documented))}; only in the docs: {sorted(set(documented) - set(rules))}"
    for name, rule in rules.items():
        section = documented[name]
        severity = re.search(r"^- \*\*Severity\*\*: (\w+)$", section, re.M)
        assert severity and severity.group(1) == rule["labels"]["severity"], f"{name}: the docs' severity differs from the rule's {rule['labels']['severity']}"
        metrics_line = re.search(r"^- \*\*Metrics\*\*: (.+)$", section, re.M)
        assert metrics_line, f"{name}: no '- **Metrics**:' line in its docs section"
        listed = dict(re.findall(rf"`([A-Za-z_:][\w:]*)` \(({EXPORTED}|{PENDING})\)", metrics_line.group(1)))
        used = metric_names(rule["expr"])
        assert set(listed) == used, f"{name}: the docs list {sorted(listed)}, the rule reads {sorted(used)}"
        for metric, status in listed.items():
            assert status == catalogue[metric][0], f"{name}: the docs call {metric} '{status}', the metric catalogue '{catalogue[metric][0]}'"
        # Inert: every product metric it reads is still to be exported (``up``, a guard in some
        # rules, does not make an alert work); an "or" of an exported and a pending one works.
        product = used - {"up"}
        status_line = re.search(r"^- \*\*Status\*\*: (.+)$", section, re.M)
        expected = "inert until its metrics are exported" if product and all(catalogue[m][0] == PENDING for m in product) else "works today"
        assert status_line and status_line.group(1) == expected, f"{name}: its docs status must be '{expected}'"
        assert rule["annotations"]["runbook"] == f"docs/observability.md#{name.lower()}"


def test_every_alert_has_severity_annotations_and_a_for() -> None:
    for name, rule in alerts().items():
        assert rule["labels"].get("severity") in SEVERITIES, name
        assert ANNOTATIONS <= set(rule["annotations"]), f"{name} lacks {sorted(ANNOTATIONS - set(rule['annotations']))}"
        assert "for" in rule, f"{name}: say 'for' explicitly, even 0m"


def test_promtool_tests_feed_catalogued_series_and_cover_every_alert() -> None:
    catalogue = metric_catalogue()
    tests = yaml.safe_load(RULE_TESTS.read_text())
    assert tests["rule_files"] == ["../rules/greenhouse.rules.yml"]
    fed: set[str] = set()
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for series in case["input_series"]:
            match = re.fullmatch(r"\s*([A-Za-z_:][\w:]*)\s*(?:\{(.*)\})?\s*", series["series"])
            assert match, series["series"]
            name, labels = match.group(1), set(re.findall(r"([A-Za-z_]\w*)\s*=", re.sub(_STRING, '""', match.group(2) or "")))
            assert name in catalogue, f"the promtool tests feed {name}, missing from docs/observability.md's metric catalogue"
            extra = labels - allowed_labels(name, catalogue[name][1])
            assert not extra, f"the promtool tests give {name} the labels {sorted(extra)}, which docs/observability.md does not list"
            fed.add(name)
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    rules = alerts()
    for name, rule in rules.items():
        assert metric_names(rule["expr"]) <= fed, f"{name}: the promtool tests feed none of {sorted(metric_names(rule['expr']) - fed)}"
    assert set(rules) <= fired, f"no promtool case where these fire: {sorted(set(rules) - fired)}"
    assert set(rules) <= quiet, f"no promtool case where these stay quiet: {sorted(set(rules) - quiet)}"


# --- promtool ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if path is None:
        missing("promtool is not installed: apt-get install -y --no-install-recommends prometheus (stack/stack up prometheus does it)")
    assert path is not None
    return path


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, cwd=cwd)


def test_promtool_check_rules(promtool: str) -> None:
    done = _run(promtool, "check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in done.stdout


def test_promtool_test_rules(promtool: str) -> None:
    done = _run(promtool, "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def _function(script: str, name: str) -> str:
    match = re.search(rf"^{name}\(\) \{{.*?^\}}$", script, re.S | re.M)
    assert match, f"stack/stack has no function {name}()"
    return match.group(0)


def test_stack_renders_a_config_promtool_accepts(promtool: str, tmp_path: Path) -> None:
    """``start_prometheus``'s own ``render`` call, run with the script's ``render``, into a temp
    dir (nothing is started): no placeholder left, the rules loaded, ``promtool check config`` OK."""
    script = STACK_SCRIPT.read_text()
    start = _function(script, "start_prometheus")
    call = re.search(r'^\s*render "\$STACK_DIR/prometheus/prometheus\.yml\.in".*?[^\\]$', start, re.S | re.M)
    assert call, "start_prometheus no longer renders prometheus.yml.in"
    placeholders = set(re.findall(r"@([A-Z_]+)@", TEMPLATE.read_text()))
    assert placeholders == set(re.findall(r'"([A-Z_]+)=', call.group(0))), "prometheus.yml.in's placeholders differ from what start_prometheus renders"
    conf = tmp_path / "conf"
    program = "\n".join(["set -euo pipefail", f"STACK_DIR='{REPO / 'stack'}'; CONF_DIR='{conf}'; RAY_TMP_DIR='{tmp_path / 'ray'}'", 'mkdir -p "$CONF_DIR"', _function(script, "render"), call.group(0)])
    done = _run("bash", "-c", program)
    assert done.returncode == 0, done.stderr
    rendered = (conf / "prometheus.yml").read_text()
    assert not re.search(r"@[A-Z_]+@", rendered), "a placeholder was left in the rendered config"
    config = yaml.safe_load(rendered)
    globs = [Path(pattern) for pattern in config["rule_files"]]
    assert any(RULES in pattern.parent.glob(pattern.name) for pattern in globs), f"rule_files {config['rule_files']} does not load {RULES}"
    done = _run(promtool, "check", "config", str(conf / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in done.stdout


def test_the_exposition_lint_catches_a_product_metric_and_spares_rays_labels(promtool: str) -> None:
    from tests.serve.prometheus_text import product_lint_problems

    ray_only = '# HELP ray_gh_ok_total a\n# TYPE ray_gh_ok_total counter\nray_gh_ok_total{NodeAddress="a",WorkerId="w"} 1\n'
    assert product_lint_problems(ray_only, promtool) == []
    badly_named = '# HELP ray_gh_latency_ms a\n# TYPE ray_gh_latency_ms counter\nray_gh_latency_ms{route="x"} 1\n'
    assert product_lint_problems(badly_named, promtool) == ['ray_gh_latency_ms counter metrics should have "_total" suffix', "ray_gh_latency_ms metric names should not contain abbreviated units"]
