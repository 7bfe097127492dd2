"""The Airflow assets the product emits, and posting an asset event through Airflow's REST API.

The drift DAG's task emits :data:`DRIFT_ASSET_NAME` itself (its ``outlets``); a drift check run
outside Airflow (``greenhouse drift``, a RayJob, a cron) posts the event instead, when
``settings.drift.airflow_url`` names an Airflow API server:

1. ``GET /api/v2/assets?uri_pattern=<uri>``: the asset's numeric id (the event body takes an id,
   not a name; the asset exists once the DAG scheduled on it has been parsed);
2. ``POST /api/v2/assets/events`` with ``{"asset_id": <id>, "extra": {...}}`` (Airflow 3's
   ``CreateAssetEventsBody``; Airflow adds ``from_rest_api: true`` to ``extra``).

Airflow then queues a run of every unpaused DAG scheduled on the asset. Only the standard library
is imported here: Airflow imports this module.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

DRIFT_ASSET_NAME = "greenhouse_feature_drift"
DRIFT_ASSET_URI = "greenhouse://drift/features"
CHAMPION_ASSET_NAME = "greenhouse_champion_model"
CHAMPION_ASSET_URI = "greenhouse://models/champion"
API_PREFIX = "/api/v2"

Send = Callable[[urllib.request.Request], Any]
"""Sends a request and returns the decoded JSON answer (injected in tests)."""


def api_base(airflow_url: str) -> str:
    """``airflow_url`` (``http://airflow:8080``, with or without ``/api/v2``) as the API's base URL."""
    base = airflow_url.rstrip("/")
    if not base:
        raise ValueError("no Airflow URL (settings drift.airflow_url)")
    return base if base.endswith(API_PREFIX) else base + API_PREFIX


def _headers(token: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def asset_lookup_request(airflow_url: str, uri: str, *, token: str | None = None) -> urllib.request.Request:
    """The request listing the assets whose URI matches ``uri``."""
    query = urllib.parse.urlencode({"uri_pattern": uri, "limit": 100})
    return urllib.request.Request(f"{api_base(airflow_url)}/assets?{query}", headers=_headers(token), method="GET")


def asset_event_request(airflow_url: str, asset_id: int, extra: Mapping[str, Any], *, token: str | None = None) -> urllib.request.Request:
    """The request creating one event of asset ``asset_id`` with ``extra`` (JSON-serialisable)."""
    body = json.dumps({"asset_id": int(asset_id), "extra": dict(extra)}, default=str).encode()
    return urllib.request.Request(f"{api_base(airflow_url)}/assets/events", data=body, headers=_headers(token), method="POST")


def find_asset_id(listing: Mapping[str, Any], *, name: str, uri: str) -> int:
    """The id of the asset called ``name`` at ``uri`` in a ``GET /assets`` answer; ``LookupError``
    when Airflow does not know it (no parsed DAG declares it)."""
    for asset in listing.get("assets") or []:
        if asset.get("name") == name and asset.get("uri") == uri:
            return int(asset["id"])
    raise LookupError(f"Airflow has no asset {name!r} ({uri}): is the DAG scheduled on it parsed?")


def _send_json(request: urllib.request.Request, timeout_s: float = 30.0) -> Any:
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (an operator-set http(s) URL)
        return json.loads(response.read() or b"null")


def post_asset_event(
    airflow_url: str, *, name: str = DRIFT_ASSET_NAME, uri: str = DRIFT_ASSET_URI, extra: Mapping[str, Any] | None = None, token: str | None = None, send: Send | None = None
) -> dict[str, Any]:
    """Create an event of the asset ``name``/``uri`` through the REST API (module docstring); the
    created event as Airflow returns it. ``send`` replaces the HTTP call (tests)."""
    call = send or _send_json
    asset_id = find_asset_id(call(asset_lookup_request(airflow_url, uri, token=token)), name=name, uri=uri)
    created = call(asset_event_request(airflow_url, asset_id, extra or {}, token=token))
    return dict(created or {})
