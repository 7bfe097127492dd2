"""Lineage: one chain of ids from a control command back to everything behind it.

A chain is a list of :class:`LineageLink` (kind, id, facts, and a ``missing`` reason when a link
cannot be followed), each hanging from a ``parent`` link::

    command        the signed command as audited (control_audit): status, control-topic offset
    decision       the decision record (decisions): greenhouse, caller, mode, feature row hash,
                   offset correction, policy parameters and hash, rollout role
      readings     the readings window the decision rests on: first/last time, count, the newest
                   sensor-topic offset per partition, and the lake batches holding those offsets
      model_version  the registered version (MLflow registry): run id, source, aliases
        mlflow_run   params, metrics, tags (the Airflow DAG run and Ray submission ids: lineage.*)
          feature_set  the feature set (feature_sets): rows, range, its own orchestration ids
            lake_batches  the raw batches it was built from (lake_batches): dates, files, rows
              bus_offsets the sensor-topic offsets they hold, per topic partition (min start,
                          max end)

:func:`lineage_of_command` starts at a command id, :func:`lineage_of_model_version` at a
registered version, :func:`lineage_of_feature_set` at a feature set. An unknown starting id raises
:class:`LineageNotFound`; a link further down that cannot be followed is kept with its reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from app.config import Settings
from app.control.decision_record import jsonable
from app.metadata import CONTROL_AUDIT, DECISIONS, FEATURE_SETS, LAKE_BATCHES, MetadataStore, open_metadata
from app.tracking import LINEAGE_TAG_PREFIX

_BATCH_LOOKUP_CHUNK = 500  # ids per ``$in`` query
_AUDIT_HIDDEN = ("_id", "payload", "signature")  # the signed payload is long; its parts are facts already
_DECISION_HIDDEN = ("_id", "command_id", "readings")


class LineageNotFound(LookupError):
    """The id a lineage starts from is unknown to the stores."""


@dataclass(frozen=True)
class LineageLink:
    """One link of a chain: what it is, its id, what the store says about it, and why it could not
    be followed when it could not (``missing``)."""

    kind: str
    id: str | None
    facts: dict[str, Any] = field(default_factory=dict)
    missing: str | None = None
    parent: str | None = None
    """The kind of the link this one hangs from (``None`` for the chain's root)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (datetimes as ISO 8601)."""
        return {"kind": self.kind, "id": self.id, "parent": self.parent, "missing": self.missing, "facts": jsonable(self.facts)}


@dataclass(frozen=True)
class LineageChain:
    """The links from a starting id (``root_kind``/``root_id``) down to the bus offsets."""

    root_kind: str
    root_id: str
    links: list[LineageLink]

    def link(self, kind: str) -> LineageLink:
        """The link of ``kind``; ``KeyError`` when the chain has none."""
        for link in self.links:
            if link.kind == kind:
                return link
        raise KeyError(kind)

    def kinds(self) -> list[str]:
        """The kinds of the links, in chain order."""
        return [link.kind for link in self.links]

    @property
    def missing(self) -> list[LineageLink]:
        """The links that could not be followed."""
        return [link for link in self.links if link.missing]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"root_kind": self.root_kind, "root_id": self.root_id, "complete": not self.missing, "links": [link.to_dict() for link in self.links]}


def lineage_of_command(settings: Settings, command_id: str) -> LineageChain:
    """The chain behind control command ``command_id``: its audit, its decision record and readings
    window, then the model version's chain (see the module docstring). ``LineageNotFound`` when
    neither an audit nor a decision record has that id."""
    store = open_metadata(settings.metadata_url)
    try:
        audit = _command_audit(store, command_id)
        decision = store.collection(DECISIONS).find_one({"_id": command_id})
        if audit is None and decision is None:
            raise LineageNotFound(f"no command {command_id!r}: neither {CONTROL_AUDIT} nor {DECISIONS} has it")
        links = [_command_link(settings, command_id, audit), _decision_link(command_id, decision)]
        links.append(_readings_link(settings, store, decision))
        model = (decision or {}).get("model") or (audit or {}).get("model") or {}
        if (decision or {}).get("mode") == "thermostat":
            links.append(LineageLink("model_version", _model_id(model), missing="a rule-based thermostat decision: no registered model behind it", parent="decision"))
        elif not model.get("name") or not model.get("version"):
            links.append(LineageLink("model_version", None, missing="the command names no model", parent="decision"))
        else:
            links += _model_links(settings, store, str(model["name"]), str(model["version"]), parent="decision")
        return LineageChain("command", command_id, links)
    finally:
        store.close()


def lineage_of_model_version(settings: Settings, model_name: str, version: str) -> LineageChain:
    """The chain behind registered version ``version`` of ``model_name`` (a number, or ``@alias``
    such as ``@champion``): the version, its MLflow run, feature set, lake batches and bus offsets.
    ``LineageNotFound`` when the registry has no such version."""
    from app.tracking import Tracking

    if version.startswith("@"):
        resolved = Tracking(settings.tracking_url).version_by_alias(model_name, version[1:])
        if resolved is None:
            raise LineageNotFound(f"model {model_name!r} has no alias {version[1:]!r}")
        version = resolved
    store = open_metadata(settings.metadata_url)
    try:
        links = _model_links(settings, store, model_name, version, parent=None)
    finally:
        store.close()
    if links[0].missing:
        raise LineageNotFound(links[0].missing)
    return LineageChain("model_version", f"{model_name}/{version}", links)


def lineage_of_feature_set(settings: Settings, feature_set_id: str) -> LineageChain:
    """The chain behind feature set ``feature_set_id``: the set, its lake batches and their bus
    offsets. ``LineageNotFound`` when no feature set has that id."""
    store = open_metadata(settings.metadata_url)
    try:
        links = _feature_set_links(store, feature_set_id, parent=None)
    finally:
        store.close()
    if links[0].missing:
        raise LineageNotFound(links[0].missing)
    return LineageChain("feature_set", feature_set_id, links)


# -- the command and its decision ----------------------------------------------------------------


def _command_audit(store: MetadataStore, command_id: str) -> dict[str, Any] | None:
    """The audit of a dispatched command, else of its dry run (audited under ``dry-run:<id>``)."""
    audit = store.collection(CONTROL_AUDIT)
    return audit.find_one({"_id": command_id}) or audit.find_one({"_id": f"dry-run:{command_id}"})


def _command_link(settings: Settings, command_id: str, audit: Mapping[str, Any] | None) -> LineageLink:
    if audit is None:
        return LineageLink("command", command_id, missing=f"no {CONTROL_AUDIT} document: the command was not dispatched (yet)")
    facts = {k: v for k, v in audit.items() if k not in _AUDIT_HIDDEN}
    facts["audit_id"] = audit["_id"]
    if not audit.get("dry_run"):
        facts["topic"] = settings.topics.control
    return LineageLink("command", command_id, facts)


def _decision_link(command_id: str, decision: Mapping[str, Any] | None) -> LineageLink:
    if decision is None:
        return LineageLink("decision", command_id, missing=f"no {DECISIONS} record for this command", parent="command")
    return LineageLink("decision", command_id, {k: v for k, v in decision.items() if k not in _DECISION_HIDDEN}, parent="command")


def _readings_link(settings: Settings, store: MetadataStore, decision: Mapping[str, Any] | None) -> LineageLink:
    """The decision's readings window, its newest sensor-topic offset per partition, and the lake
    batches holding the window's readings (once the sink has written them)."""
    readings = (decision or {}).get("readings")
    if not decision or not readings:
        return LineageLink("readings", None, missing="the decision record has no readings window", parent="decision")
    topic = settings.topics.sensors
    offsets = {str(p): int(o) for p, o in (readings.get("bus_offsets") or {}).items()}
    batches: list[str] = []
    for partition, offset in sorted(offsets.items()):
        query: dict[str, Any] = {"topic": topic, "partition": int(partition), "greenhouse_id": decision.get("greenhouse_id"), "offset_start": {"$lte": offset}}
        if readings.get("first_ts") and readings.get("last_ts"):
            query |= {"ts_max": {"$gte": readings["first_ts"]}, "ts_min": {"$lte": readings["last_ts"]}}
        else:
            query |= {"offset_end": {"$gte": offset}}
        batches += sorted(str(d["_id"]) for d in store.collection(LAKE_BATCHES).find(query))
    facts = {**readings, "topic": topic, "bus_offsets": offsets, "lake_batches": batches}
    window = f"{topic}:" + ",".join(f"p{p}@{o}" for p, o in sorted(offsets.items())) if offsets else None
    return LineageLink("readings", window, facts, parent="decision")


# -- the model, its run, the feature set, the batches, the offsets -------------------------------


def _model_links(settings: Settings, store: MetadataStore, model_name: str, version: str, *, parent: str | None) -> list[LineageLink]:
    """The registered version, its MLflow run and the run's feature set chain."""
    from app.tracking import Tracking

    tracking = Tracking(settings.tracking_url)
    model_id = f"{model_name}/{version}"
    registered = tracking.model_version(model_name, version)
    if registered is None:
        return [LineageLink("model_version", model_id, missing=f"the registry at {tracking.url} has no version {version} of model {model_name!r}", parent=parent)]
    created_at = _from_ms(registered.pop("created_at_ms", None))
    facts = {**registered, "created_at": created_at}
    links = [LineageLink("model_version", model_id, facts, parent=parent)]
    run = tracking.find_run(registered["run_id"]) if registered.get("run_id") else None
    if run is None:
        links.append(LineageLink("mlflow_run", registered.get("run_id"), missing="the registered version's MLflow run is not on the tracking server", parent="model_version"))
        return links
    links.append(_run_link(run))
    fs_id = run["tags"].get("feature_set_id") or run["params"].get("feature_set_id")
    if not fs_id:
        links.append(LineageLink("feature_set", None, missing="the MLflow run names no feature_set_id", parent="mlflow_run"))
        return links
    return links + _feature_set_links(store, str(fs_id), parent="mlflow_run")


def _run_link(run: Mapping[str, Any]) -> LineageLink:
    tags = dict(run["tags"])
    facts = {
        "run_name": run.get("run_name"),
        "experiment_id": run.get("experiment_id"),
        "status": run.get("status"),
        "started_at": _from_ms(run.get("start_time_ms")),
        "ended_at": _from_ms(run.get("end_time_ms")),
        "orchestration": {k.removeprefix(LINEAGE_TAG_PREFIX): v for k, v in tags.items() if k.startswith(LINEAGE_TAG_PREFIX)},
        "params": dict(run["params"]),
        "metrics": dict(run["metrics"]),
        "tags": tags,
    }
    return LineageLink("mlflow_run", str(run["run_id"]), facts, parent="model_version")


def _feature_set_links(store: MetadataStore, feature_set_id: str, *, parent: str | None) -> list[LineageLink]:
    """The feature set, its lake batches and their bus offsets."""
    doc = store.collection(FEATURE_SETS).find_one({"_id": feature_set_id})
    if doc is None:
        return [LineageLink("feature_set", feature_set_id, missing=f"no {FEATURE_SETS} document {feature_set_id!r}", parent=parent)]
    batch_ids = [str(b) for b in doc.get("source_batches", [])]
    kept = ("created_at", "rows", "greenhouses", "time_range", "validation_start", "test_start", "path", "lake_url", "params", "source_batch_count")
    facts = {k: doc[k] for k in kept if k in doc}
    facts["orchestration"] = dict(doc.get("lineage") or {})
    batches = _find_batches(store, batch_ids)
    return [LineageLink("feature_set", feature_set_id, facts, parent=parent), _batches_link(feature_set_id, batch_ids, batches), _offsets_link(batches)]


def _find_batches(store: MetadataStore, ids: list[str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    batches = store.collection(LAKE_BATCHES)
    for start in range(0, len(ids), _BATCH_LOOKUP_CHUNK):
        found += batches.find({"_id": {"$in": ids[start : start + _BATCH_LOOKUP_CHUNK]}})
    return sorted(found, key=lambda d: str(d["_id"]))


def _batches_link(feature_set_id: str, ids: list[str], batches: list[dict[str, Any]]) -> LineageLink:
    """The lake batches a feature set lists: how many, which are gone, dates, times, rows, files."""
    link_id = f"{feature_set_id}:source_batches"
    if not ids:
        return LineageLink("lake_batches", link_id, missing="the feature set lists no source batches", parent="feature_set")
    absent = sorted(set(ids) - {str(d["_id"]) for d in batches})
    facts = {
        "count": len(ids),
        "found": len(batches),
        "absent": absent,
        "rows": sum(int(d.get("rows", 0)) for d in batches),
        "dates": _span(d.get("date") for d in batches),
        "ts": _span(d.get(k) for d in batches for k in ("ts_min", "ts_max")),
        "greenhouses": sorted({str(d["greenhouse_id"]) for d in batches if d.get("greenhouse_id")}),
        "statuses": _counts(str(d.get("status")) for d in batches),
        "ids": [str(d["_id"]) for d in batches],
        "files": [str(d.get("path") or d.get("relative_path")) for d in batches],
    }
    missing = None if batches else f"none of the {len(ids)} source batches is in {LAKE_BATCHES}"
    return LineageLink("lake_batches", link_id, facts, missing, parent="feature_set")


def _offsets_link(batches: list[dict[str, Any]]) -> LineageLink:
    """Per topic partition: the lowest start and highest end offset of the batches, their count
    and rows."""
    partitions: dict[tuple[str, int], dict[str, Any]] = {}
    for d in batches:
        if d.get("topic") is None or d.get("partition") is None:
            continue
        key = (str(d["topic"]), int(d["partition"]))
        p = partitions.setdefault(key, {"topic": key[0], "partition": key[1], "offset_start": int(d["offset_start"]), "offset_end": int(d["offset_end"]), "batches": 0, "rows": 0})
        p["offset_start"] = min(p["offset_start"], int(d["offset_start"]))
        p["offset_end"] = max(p["offset_end"], int(d["offset_end"]))
        p["batches"] += 1
        p["rows"] += int(d.get("rows", 0))
    if not partitions:
        return LineageLink("bus_offsets", None, missing="no lake batch names its topic partition and offsets", parent="lake_batches")
    rows = [partitions[k] for k in sorted(partitions)]
    link_id = ",".join(sorted({r["topic"] for r in rows}))
    return LineageLink("bus_offsets", link_id, {"partitions": rows}, parent="lake_batches")


# -- small helpers -------------------------------------------------------------------------------


def _model_id(model: Mapping[str, Any]) -> str | None:
    return f"{model['name']}/{model['version']}" if model.get("name") and model.get("version") else None


def _from_ms(ms: Any) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, timezone.utc) if isinstance(ms, (int, float)) else None


def _span(values: Iterable[Any]) -> dict[str, Any]:
    present = sorted(v for v in values if v is not None)
    return {"first": present[0], "last": present[-1]} if present else {}


def _counts(values: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out
