"""``greenhouse lineage``: the chain of ids behind a control command, a model version or a feature set.

    greenhouse lineage COMMAND_ID                       command -> decision (and its readings)
                                                        -> model version -> MLflow run -> feature
                                                        set -> lake batches -> bus offsets
    greenhouse lineage --model-version 3 [--model-name NAME]     from a registered version
    greenhouse lineage --model-version @champion                 ... or the one an alias names
    greenhouse lineage --feature-set fs-...                      from a feature set

Prints a tree (``--json``: the chain as one JSON document on stdout). A link that cannot be
followed is printed with its reason; an unknown starting id exits 2.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.tree import Tree

from app.cli.keys import cli_settings

app = typer.Typer(name="lineage", help="The chain of ids behind a control command, a model version or a feature set, down to the bus offsets.", add_completion=False, pretty_exceptions_enable=False)
console = Console(stderr=True)  # messages; the chain goes to stdout

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML settings file (GH_* environment variables override it).")

TITLES = {
    "command": "command",
    "decision": "decision",
    "readings": "readings window",
    "model_version": "model version",
    "mlflow_run": "MLflow run",
    "feature_set": "feature set",
    "lake_batches": "lake batches",
    "bus_offsets": "bus offsets",
}
SHOWN: dict[str, tuple[str, ...]] = {
    "command": ("status", "greenhouse_id", "issued_at", "valid_until", "topic", "partition", "offset", "sequence", "key_id", "model", "requested_by", "dry_run"),
    "decision": (
        "greenhouse_id",
        "decided_at",
        "interval_start",
        "source",
        "requested_by",
        "model",
        "role",
        "rollout_id",
        "mode",
        "reason",
        "setpoints",
        "air_temp_c",
        "in_band",
        "feature_row_sha256",
        "offset_correction_c",
        "policy",
    ),
    "readings": ("first_ts", "last_ts", "count", "topic", "bus_offsets", "lake_batches"),
    "model_version": ("run_id", "source", "aliases", "status", "created_at", "tags"),
    "mlflow_run": ("run_name", "status", "started_at", "orchestration", "params", "metrics"),
    "feature_set": ("created_at", "rows", "greenhouses", "time_range", "validation_start", "test_start", "source_batch_count", "orchestration", "path"),
    "lake_batches": ("count", "found", "absent", "rows", "dates", "greenhouses", "statuses", "files"),
}
MAX_LIST_ITEMS = 4


@app.callback(invoke_without_command=True, context_settings={"allow_interspersed_args": True})
def lineage(
    command_id: str | None = typer.Argument(None, help="A control command id (the decision's command)."),
    model_version: str | None = typer.Option(None, "--model-version", help="Start from this registered version (a number, or @alias such as @champion)."),
    model_name: str | None = typer.Option(None, "--model-name", help="Registered model of --model-version (default: the settings' control.model_name)."),
    feature_set: str | None = typer.Option(None, "--feature-set", help="Start from this feature set id."),
    as_json: bool = typer.Option(False, "--json", help="Print the chain as JSON instead of a tree."),
    config: Path | None = ConfigOpt,
) -> None:
    """Print the chain of ids behind COMMAND_ID (or --model-version, or --feature-set): the decision
    record, the model version, its MLflow run (with the Airflow DAG run and Ray submission ids),
    the feature set, the lake batches and the bus offsets."""
    from app.lineage import LineageNotFound, lineage_of_command, lineage_of_feature_set, lineage_of_model_version

    given = [name for name, value in (("COMMAND_ID", command_id), ("--model-version", model_version), ("--feature-set", feature_set)) if value]
    if len(given) != 1:
        console.print("[red]error:[/red] give exactly one of COMMAND_ID, --model-version, --feature-set" + (f" (got {', '.join(given)})" if given else ""))
        raise typer.Exit(2)
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its database set-up chatter
    settings = cli_settings(config)
    try:
        if command_id:
            chain = lineage_of_command(settings, command_id)
        elif model_version:
            chain = lineage_of_model_version(settings, model_name or settings.control.model_name, model_version)
        else:
            chain = lineage_of_feature_set(settings, str(feature_set))
    except LineageNotFound as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(chain.to_dict(), default=str))
        return
    Console().print(chain_tree(chain))
    if chain.missing:
        console.print(f"[yellow]{len(chain.missing)} link(s) could not be followed:[/yellow] " + ", ".join(link.kind for link in chain.missing))


def chain_tree(chain: Any) -> Tree:
    """A ``LineageChain`` as a rich tree: one node per link under its parent, its facts below it."""
    root = Tree(f"[bold]lineage of {escape(chain.root_kind.replace('_', ' '))} {escape(chain.root_id)}[/bold]")
    nodes: dict[str, Tree] = {}
    for link in chain.links:
        parent = nodes.get(link.parent or "", root)
        title = f"[bold cyan]{TITLES.get(link.kind, link.kind)}[/bold cyan] {escape(str(link.id or '-'))}"
        if link.missing:
            title += f"  [yellow]missing: {escape(link.missing)}[/yellow]"
        node = parent.add(title)
        nodes[link.kind] = node
        for label, value in _shown_facts(link.kind, link.facts):
            node.add(f"[dim]{escape(label)}[/dim] {escape(value)}")
    return root


def _shown_facts(kind: str, facts: Mapping[str, Any]) -> list[tuple[str, str]]:
    if kind == "bus_offsets":
        return [(f"{p['topic']}[{p['partition']}]", f"offsets {p['offset_start']}..{p['offset_end']} ({p['batches']} batches, {p['rows']} rows)") for p in facts.get("partitions", [])]
    shown: list[tuple[str, Any]] = []
    for key in SHOWN.get(kind, tuple(facts)):
        value = facts.get(key)
        if key == "policy" and isinstance(value, Mapping):  # its hash and its parameters, each a line
            shown += [(f"policy {k}", v) for k, v in value.items()]
        elif key == "metrics" and isinstance(value, Mapping):  # the skills (--json has every metric)
            shown.append(("skill", {k.removeprefix("skill_"): v for k, v in value.items() if k.startswith("skill_")}))
        else:
            shown.append((key, value))
    return [(label, _fmt(value)) for label, value in shown if value not in (None, "", [], {})]


def _fmt(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in _flat(value))
    if isinstance(value, (list, tuple)):
        shown = ", ".join(_fmt(v) for v in value[:MAX_LIST_ITEMS])
        return shown + (f" ... and {len(value) - MAX_LIST_ITEMS} more" if len(value) > MAX_LIST_ITEMS else "")
    return str(value)


def _flat(mapping: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested mappings as dotted keys: ``{"a": {"b": 1}}`` -> ``[("a.b", 1)]``."""
    out: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            out += _flat(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out
