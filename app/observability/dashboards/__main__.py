"""``python -m app.observability.dashboards --out DIR``: write the Grafana dashboard JSON files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.observability.dashboards.builder import write_dashboards
from app.observability.dashboards.definitions import DASHBOARDS

DEFAULT_OUT = Path("stack/grafana/dashboards")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: where to write."""
    parser = argparse.ArgumentParser(
        prog="python -m app.observability.dashboards",
        description=(
            "Generate the greenhouse Grafana dashboards (fleet overview, ingest, lake and jobs, model quality, control, security) "
            "as JSON files, one <uid>.json per dashboard, for Grafana's file provisioning (stack/grafana/provisioning). "
            "The committed copies under stack/grafana/dashboards must equal this output: regenerate, never edit them by hand."
        ),
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder to write the JSON files into (default: {DEFAULT_OUT})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Write every dashboard and print the paths written."""
    args = parse_args(argv)
    for path in write_dashboards(DASHBOARDS, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
