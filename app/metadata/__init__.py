"""Metadata store (lake batches, feature sets, devices, operators, control audit, deployments), chosen by URL.

``file:///dir`` opens the embedded SQLite document store; ``mongodb://host:port/db`` opens MongoDB
(or any MongoDB-wire server such as FerretDB).
"""

from __future__ import annotations

from urllib.parse import urlparse

from app.metadata.base import Collection, DuplicateKeyError, MetadataStore

LAKE_BATCHES = "lake_batches"
FEATURE_SETS = "feature_sets"
DEVICES = "devices"
CONTROL_AUDIT = "control_audit"
DEPLOYMENTS = "deployments"
OPERATORS = "operators"
DECISIONS = "decisions"  # one per control decision: the lineage record and the rollout's figures
ROLLOUTS = "rollouts"  # the current state of each model's rollout (deployments holds every step)
CONTROL_LOOP_MEMBERS = "control_loop_members"  # scheduler replicas and their leases
CONTROL_CLAIMS = "control_claims"  # which replica decides which greenhouse in which interval
DRIFT_REPORTS = "drift_reports"


def open_metadata(url: str) -> MetadataStore:
    """Open the metadata store named by ``url``."""
    scheme = urlparse(url).scheme
    if scheme == "file":
        from app.metadata.embedded import EmbeddedStore

        return EmbeddedStore(urlparse(url).path)
    if scheme in ("mongodb", "mongodb+srv"):
        from app.metadata.mongo import MongoStore

        return MongoStore(url)
    raise ValueError(f"unsupported metadata URL {url!r}: use file:///dir or mongodb://host:port/db")


__all__ = [
    "CONTROL_AUDIT",
    "CONTROL_CLAIMS",
    "CONTROL_LOOP_MEMBERS",
    "DECISIONS",
    "DEPLOYMENTS",
    "DRIFT_REPORTS",
    "ROLLOUTS",
    "DEVICES",
    "FEATURE_SETS",
    "LAKE_BATCHES",
    "OPERATORS",
    "Collection",
    "DuplicateKeyError",
    "MetadataStore",
    "open_metadata",
]
