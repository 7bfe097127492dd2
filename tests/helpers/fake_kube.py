"""A small fake Kubernetes API server over real HTTP on 127.0.0.1, for the real ``kubernetes`` client.

It stores objects per collection (custom resources under ``/apis/<group>/<version>/namespaces/<ns>/<plural>``,
core ones under ``/api/v1/...``), answers like the API server (201 on create, 409 AlreadyExists,
404 NotFound as ``Status`` objects, resourceVersion conflicts on PUT, ``dryRun=All`` PUTs answered
but not stored, no-op updates that write nothing, merge PATCH, list with label/field selectors,
``watch=true`` streams of JSON events), and records every request.

RayJob progress is scripted: ``script(plural, name, [status, ...])`` makes each later read of the
object (a GET, or one event of a watch) apply the next status, as the KubeRay operator would.
"""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

BUILTIN_KINDS = {  # collection -> kind, for list answers
    "configmaps": "ConfigMap",
    "secrets": "Secret",
    "serviceaccounts": "ServiceAccount",
    "services": "Service",
    "namespaces": "Namespace",
    "networkpolicies": "NetworkPolicy",
    "deployments": "Deployment",
}
RAY_KINDS = {"rayjobs": "RayJob", "rayservices": "RayService", "rayclusters": "RayCluster"}


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]
    status: int = 0


@dataclass
class FakeKubeAPI:
    """Start with :meth:`start`; ``url`` is the API server address; stop with :meth:`stop`."""

    watch_supported: bool = True
    event_delay_s: float = 0.05
    objects: dict[tuple[str, str | None, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    scripts: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    conflicting_puts: int = 0  # the next PUTs find the object changed since it was read (409 Conflict)
    expired_watches: int = 0  # the next watches answer an ERROR event 410 Gone (resourceVersion too old)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.rv = 100
        self.server: ThreadingHTTPServer | None = None

    # --- control ----------------------------------------------------------------------------

    def start(self) -> FakeKubeAPI:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                api.handle(self, "GET")

            def do_POST(self) -> None:
                api.handle(self, "POST")

            def do_PUT(self) -> None:
                api.handle(self, "PUT")

            def do_PATCH(self) -> None:
                api.handle(self, "PATCH")

            def do_DELETE(self) -> None:
                api.handle(self, "DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def script(self, plural: str, name: str, statuses: list[dict[str, Any]]) -> None:
        """Statuses the object goes through, one per later read (GET or watch event)."""
        with self.lock:
            self.scripts[(plural, name)] = [dict(s) for s in statuses]

    def calls(self, method: str | None = None, contains: str = "") -> list[Recorded]:
        return [r for r in self.requests if (method is None or r.method == method) and contains in r.path]

    # --- HTTP -------------------------------------------------------------------------------

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _advance(self, plural: str, key: tuple[str, str | None, str]) -> bool:
        steps = self.scripts.get((plural, key[2]))
        if not steps or key not in self.objects:
            return False
        obj = self.objects[key]
        obj["status"] = {**(obj.get("status") or {}), **steps.pop(0)}
        obj["metadata"]["resourceVersion"] = self._next_rv()
        return True

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parsed = urlparse(h.path)
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        rec = Recorded(method, parsed.path, query, body, {k.lower(): v for k, v in h.headers.items()})
        with self.lock:
            self.requests.append(rec)
        parts = [p for p in parsed.path.split("/") if p]
        # /apis/<g>/<v>/namespaces/<ns>/<plural>[/<name>] or /api/v1/namespaces/<ns>/<plural>[/<name>] or /api/v1/namespaces[/<name>]
        try:
            if parts[:1] == ["apis"] and len(parts) >= 6 and parts[3] == "namespaces":
                api_version, ns, plural, name = f"{parts[1]}/{parts[2]}", parts[4], parts[5], (parts[6] if len(parts) > 6 else None)
            elif parts[:2] == ["api", "v1"] and len(parts) >= 5 and parts[2] == "namespaces":
                api_version, ns, plural, name = "v1", parts[3], parts[4], (parts[5] if len(parts) > 5 else None)
            elif parts[:3] == ["api", "v1", "namespaces"]:
                api_version, ns, plural, name = "v1", None, "namespaces", (parts[3] if len(parts) > 3 else None)
            else:
                return self._status(h, rec, 404, "NotFound", f"no route {parsed.path}")
        except IndexError:
            return self._status(h, rec, 404, "NotFound", f"no route {parsed.path}")
        kind = RAY_KINDS.get(plural) or BUILTIN_KINDS.get(plural) or plural
        key = (plural, ns, name or "")
        if method == "POST" and name is None:
            meta = body.setdefault("metadata", {})
            key = (plural, ns, meta["name"])
            with self.lock:
                if key in self.objects:
                    return self._status(h, rec, 409, "AlreadyExists", f'{plural} "{meta["name"]}" already exists')
                if ns:
                    meta["namespace"] = ns
                meta.update(uid=str(uuid.uuid4()), resourceVersion=self._next_rv(), creationTimestamp="2026-01-01T00:00:00Z", generation=1)
                self.objects[key] = copy.deepcopy(body)
                return self._json(h, rec, 201, body)
        if method == "GET" and name is None:
            if query.get("watch") in ("true", "1", "True"):
                return self._watch(h, rec, plural, ns, query)
            items = self._select(plural, ns, query)
            return self._json(h, rec, 200, {"apiVersion": api_version, "kind": f"{kind}List", "metadata": {"resourceVersion": str(self.rv)}, "items": items})
        with self.lock:
            if key not in self.objects:
                return self._status(h, rec, 404, "NotFound", f'{plural} "{name}" not found')
            obj = self.objects[key]
            if method == "GET":
                self._advance(plural, key)
                return self._json(h, rec, 200, obj)
            if method == "DELETE":
                del self.objects[key]
                return self._json(h, rec, 200, {"kind": "Status", "apiVersion": "v1", "status": "Success", "details": {"name": name, "kind": plural}})
            if method == "PUT":
                if self.conflicting_puts > 0:  # another writer got there first
                    self.conflicting_puts -= 1
                    obj["metadata"]["resourceVersion"] = self._next_rv()
                if body.get("metadata", {}).get("resourceVersion") != obj["metadata"]["resourceVersion"]:
                    return self._status(h, rec, 409, "Conflict", "the object has been modified")
                new = copy.deepcopy(body)
                new["metadata"] = {**obj["metadata"], **new["metadata"]}
                if "status" in obj:
                    new["status"] = obj["status"]
                if new == obj:  # a no-op update: nothing is written
                    return self._json(h, rec, 200, new)
                if new.get("spec") != obj.get("spec"):
                    new["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
                if query.get("dryRun") == "All":  # validated and answered, not stored
                    return self._json(h, rec, 200, new)
                new["metadata"]["resourceVersion"] = self._next_rv()
                self.objects[key] = new
                return self._json(h, rec, 200, new)
            if method == "PATCH":
                _merge(obj, body)
                obj["metadata"]["resourceVersion"] = self._next_rv()
                return self._json(h, rec, 200, obj)
        return self._status(h, rec, 405, "MethodNotAllowed", method)

    def _select(self, plural: str, ns: str | None, query: dict[str, str]) -> list[dict[str, Any]]:
        out = []
        with self.lock:
            for (p, n, _), obj in self.objects.items():
                if p != plural or n != ns:
                    continue
                labels = obj.get("metadata", {}).get("labels") or {}
                if "labelSelector" in query and not all(labels.get(k) == v for k, v in (s.split("=", 1) for s in query["labelSelector"].split(","))):
                    continue
                if "fieldSelector" in query and query["fieldSelector"] != f"metadata.name={obj['metadata']['name']}":
                    continue
                out.append(copy.deepcopy(obj))
        return out

    def _watch(self, h: BaseHTTPRequestHandler, rec: Recorded, plural: str, ns: str | None, query: dict[str, str]) -> None:
        if not self.watch_supported:
            return self._status(h, rec, 500, "InternalError", "watch is not supported by this server")
        name = query.get("fieldSelector", "").removeprefix("metadata.name=")
        key = (plural, ns, name)
        rec.status = 200
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.end_headers()
        if self.expired_watches > 0:
            self.expired_watches -= 1
            gone = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "too old resource version", "reason": "Expired", "code": 410}
            h.wfile.write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
            return
        while True:
            with self.lock:
                advanced = self._advance(plural, key)
                obj = copy.deepcopy(self.objects.get(key))
            if not advanced or obj is None:
                break
            h.wfile.write(json.dumps({"type": "MODIFIED", "object": obj}).encode() + b"\n")
            h.wfile.flush()
            time.sleep(self.event_delay_s)
        # a real server keeps the stream open until timeoutSeconds; closing early is allowed too

    def _json(self, h: BaseHTTPRequestHandler, rec: Recorded, code: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        rec.status = code
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _status(self, h: BaseHTTPRequestHandler, rec: Recorded, code: int, reason: str, message: str) -> None:
        self._json(h, rec, code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code})


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """JSON merge patch (RFC 7386)."""
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            _merge(target[k], v)
        else:
            target[k] = copy.deepcopy(v)
