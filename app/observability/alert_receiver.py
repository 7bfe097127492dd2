"""A webhook receiver for Alertmanager: every alert it is sent becomes one JSON line in a file.

The local stack routes every alert here (``stack/alertmanager/alertmanager.yml.in``), so a person
or a test can see what would have woken someone::

    python -m app.observability.alert_receiver --port 9194 --file alerts.jsonl

- ``POST /alerts`` takes Alertmanager's webhook body (``"version": "4"``) and appends one line per
  alert: ``status``, ``labels``, ``annotations``, ``startsAt``, ``fingerprint``, ``received_at``.
  A body that is not such a document is refused with 400 and ``{"error": "<reason>"}``; nothing of
  it is stored.
- ``GET /alerts`` answers ``{"alerts": [...]}``, oldest first, read back from the file (so alerts
  received before a restart are listed too). Query parameters other than ``limit`` filter on
  labels (``?alertname=GhGreenhouseSilent&greenhouse_id=gh-7``); ``limit`` keeps the newest N.
- ``GET /-/ready`` answers 200 once the server listens (the stack's readiness probe).

Only the Python standard library: it is a development and test tool, not a paging service.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

log = logging.getLogger(__name__)

WEBHOOK_VERSION = "4"
ALERT_STATUSES = ("firing", "resolved")
MAX_BODY_BYTES = 1024 * 1024  # Alertmanager batches a group's alerts; 1 MiB is thousands of them
DEFAULT_LIST_LIMIT = 1000
ALERTS_PATH = "/alerts"


class WebhookError(ValueError):
    """The body is not an Alertmanager webhook document; ``str(err)`` says why."""


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise WebhookError(reason)


def _string_map(value: Any, where: str) -> dict[str, str]:
    _require(isinstance(value, dict), f"{where}: expected an object")
    _require(all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()), f"{where}: every value must be a string")
    return value


def _parse_alert(alert: Any, index: int) -> dict[str, Any]:
    where = f"alerts[{index}]"
    _require(isinstance(alert, dict), f"{where}: expected an object")
    status = alert.get("status")
    _require(status in ALERT_STATUSES, f"{where}.status: expected one of {', '.join(ALERT_STATUSES)}, got {status!r}")
    labels = _string_map(alert.get("labels"), f"{where}.labels")
    _require("alertname" in labels, f"{where}.labels: no alertname")
    annotations = _string_map(alert.get("annotations", {}), f"{where}.annotations")
    for key in ("startsAt", "fingerprint"):
        _require(isinstance(alert.get(key), str) and alert[key] != "", f"{where}.{key}: expected a non-empty string")
    return {"status": status, "labels": labels, "annotations": annotations, "startsAt": alert["startsAt"], "fingerprint": alert["fingerprint"]}


def parse_webhook(body: bytes) -> list[dict[str, Any]]:
    """The alerts of one webhook body (version 4), each reduced to the fields the receiver keeps.

    Raises :class:`WebhookError` with the reason when the body is not such a document."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WebhookError(f"body is not JSON: {exc}") from None
    _require(isinstance(document, dict), "body: expected a JSON object")
    _require(document.get("version") == WEBHOOK_VERSION, f"version: expected {WEBHOOK_VERSION!r}, got {document.get('version')!r}")
    alerts = document.get("alerts")
    _require(isinstance(alerts, list), "alerts: expected a list")
    return [_parse_alert(alert, i) for i, alert in enumerate(alerts)]


class AlertLog:
    """Received alerts as JSON lines in one file (appends serialised by a lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, alerts: list[dict[str, Any]]) -> None:
        """Stamp each alert with ``received_at`` (UTC, RFC 3339) and append it as one line."""
        received_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        lines = "".join(json.dumps({**alert, "received_at": received_at}, sort_keys=True) + "\n" for alert in alerts)
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            out.write(lines)

    def read(self, labels: dict[str, str] | None = None, limit: int = DEFAULT_LIST_LIMIT) -> list[dict[str, Any]]:
        """The newest ``limit`` alerts whose labels include ``labels``, oldest first."""
        wanted = (labels or {}).items()
        with self._lock:
            text = self.path.read_text(encoding="utf-8") if self.path.exists() else ""
        alerts = [json.loads(line) for line in text.splitlines() if line.strip()]
        matching = [a for a in alerts if wanted <= a["labels"].items()]
        return matching[-limit:] if limit > 0 else []


class _Handler(BaseHTTPRequestHandler):
    server: AlertReceiver

    def _answer(self, status: HTTPStatus, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        url = urlsplit(self.path)
        if url.path == "/-/ready":
            self._answer(HTTPStatus.OK, {"status": "ready"})
            return
        if url.path != ALERTS_PATH:
            self._answer(HTTPStatus.NOT_FOUND, {"error": f"no such path {url.path!r}; alerts are at {ALERTS_PATH}"})
            return
        labels = dict(parse_qsl(url.query))
        try:
            limit = int(labels.pop("limit", DEFAULT_LIST_LIMIT))
        except ValueError:
            self._answer(HTTPStatus.BAD_REQUEST, {"error": "limit: expected an integer"})
            return
        self._answer(HTTPStatus.OK, {"alerts": self.server.alert_log.read(labels, limit)})

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        if urlsplit(self.path).path != ALERTS_PATH:
            self._answer(HTTPStatus.NOT_FOUND, {"error": f"POST the webhook to {ALERTS_PATH}"})
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._answer(HTTPStatus.LENGTH_REQUIRED, {"error": "Content-Length: required"})
            return
        if length > MAX_BODY_BYTES:
            self._answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"body: more than {MAX_BODY_BYTES} bytes"})
            return
        try:
            alerts = parse_webhook(self.rfile.read(length))
        except WebhookError as exc:
            self._answer(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        self.server.alert_log.append(alerts)
        for alert in alerts:
            log.info("%s %s %s", alert["status"], alert["labels"]["alertname"], json.dumps(alert["labels"], sort_keys=True))
        self._answer(HTTPStatus.OK, {"received": len(alerts)})

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        log.debug("%s " + format, self.address_string(), *args)


class AlertReceiver(ThreadingHTTPServer):
    """The HTTP server; ``serve_forever()`` runs it, ``server_address`` says where it listens."""

    daemon_threads = True

    def __init__(self, host: str, port: int, alert_log: AlertLog) -> None:
        self.alert_log = alert_log
        super().__init__((host, port), _Handler)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m app.observability.alert_receiver",
        description="Receive Alertmanager webhooks (version 4): POST /alerts appends each alert as a JSON line "
        "to --file; GET /alerts lists them (label filters as query parameters, limit=N); GET /-/ready.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9194, help="port to bind (default 9194, the local stack's)")
    parser.add_argument("--file", type=Path, default=Path("alerts.jsonl"), help="JSON lines file the alerts are appended to (default ./alerts.jsonl)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the receiver until interrupted."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)
    server = AlertReceiver(args.host, args.port, AlertLog(args.file))
    log.info("receiving Alertmanager webhooks on http://%s:%d%s, writing %s", *server.server_address[:2], ALERTS_PATH, args.file)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
