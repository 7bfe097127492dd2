"""The README's Operations section names every exported metric and every alert of the one
catalogue (docs/observability.md, the rules file), and shows a dashboard picture that exists."""

from __future__ import annotations

import re
from pathlib import Path

from tests.observability.test_alert_rules import EXPORTED, alerts, metric_catalogue

REPO = Path(__file__).resolve().parents[2]
HISTOGRAM_SERIES = re.compile(r"_(bucket|sum|count)$")


def operations_section() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(r"^## Operations[^\n]*\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, "README.md has no '## Operations' section"
    return match.group(1)


def test_every_exported_metric_is_named_in_the_readme():
    section = operations_section()
    exported = {HISTOGRAM_SERIES.sub("", name) for name, (status, _) in metric_catalogue().items() if status == EXPORTED and name != "up"}
    missing = sorted(name for name in exported if not re.search(rf"`{name}[{{`]", section))
    assert missing == [], f"README's Operations section does not name {missing}"


def test_every_alert_is_in_the_readme_with_meaning_and_first_response():
    section = operations_section()
    rows = {cells[0]: cells for cells in (line.strip("|").split("|") for line in section.splitlines() if line.startswith("| Gh"))}
    assert set(map(str.strip, rows)) == set(alerts())
    for cells in rows.values():
        assert len(cells) == 4 and all(cell.strip() for cell in cells), cells


def test_the_dashboard_picture_exists():
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", operations_section())
    assert pictures and all((REPO / p).is_file() for p in pictures)
