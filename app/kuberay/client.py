"""Create, watch, update and delete KubeRay resources with the ``kubernetes`` Python client.

:class:`KubeRayClient` is what the ``greenhouse kuberay`` CLI and the Airflow DAG (mode
``kuberay``) use: RayJob / RayService / RayCluster through ``CustomObjectsApi`` (group ``ray.io``,
version ``v1``), plus the few built-in kinds the manifests carry (ConfigMap, Secret, ServiceAccount,
Service, Namespace through ``CoreV1Api``; NetworkPolicy through ``NetworkingV1Api``; the monitor's
Deployment through ``AppsV1Api``).

- ``create`` is idempotent: a 409 AlreadyExists answer returns the existing object (so a retried
  DAG task attaches to the RayJob it created before instead of failing or running twice).
- ``apply`` creates, or replaces the spec of an existing RayService / RayCluster (e.g. a new
  ``serveConfigV2``: KubeRay updates Serve in place). RayJobs are runs: an existing one is left as is.
  Whether an existing object changes is the API server's answer to a dry-run replace (its defaults,
  ``stringData`` folded into ``data``, a Service's cluster IP kept), so an unchanged manifest reports
  ``unchanged`` and sends no write.
- ``wait_rayjob`` watches the RayJob (``watch=true`` on the list endpoint, one object by field
  selector) until ``status.jobDeploymentStatus`` is terminal, watches again from a fresh read when
  the watch expires (410 Gone), and falls back to polling ``get`` when the server does not stream.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - types only
    from kubernetes.client import ApiClient

GROUP = "ray.io"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"
RAY_KINDS: dict[str, str] = {"RayCluster": "rayclusters", "RayJob": "rayjobs", "RayService": "rayservices"}
# Custom resources the overlays carry: kind -> (group, version, plural). Besides KubeRay's, the
# prometheus-operator objects of kuberay/components/monitoring (their CRDs must be installed).
CUSTOM_KINDS: dict[str, tuple[str, str, str]] = {
    **{kind: (GROUP, VERSION, plural) for kind, plural in RAY_KINDS.items()},
    "PrometheusRule": ("monitoring.coreos.com", "v1", "prometheusrules"),
    "PodMonitor": ("monitoring.coreos.com", "v1", "podmonitors"),
    "ServiceMonitor": ("monitoring.coreos.com", "v1", "servicemonitors"),
}
# RayJob status.jobDeploymentStatus values after which nothing more happens to the job. Suspended is
# included so that waiting on a template (suspend: true) returns instead of hanging.
DEPLOYMENT_TERMINAL = frozenset({"Complete", "Failed", "ValidationFailed", "Suspended"})
JOB_TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
# Built-in kinds the manifests may carry: kind -> (namespaced, API method suffix); the API is
# CoreV1Api unless NON_CORE_APIS names another.
CORE_KINDS: dict[str, tuple[bool, str]] = {
    "ConfigMap": (True, "config_map"),
    "Secret": (True, "secret"),
    "ServiceAccount": (True, "service_account"),
    "Service": (True, "service"),
    "Namespace": (False, "namespace"),
    "NetworkPolicy": (True, "network_policy"),
    "Deployment": (True, "deployment"),
}
NON_CORE_APIS: dict[str, str] = {"NetworkPolicy": "networking", "Deployment": "apps"}
# Replaces that lose a race (409 Conflict: a controller wrote the object, e.g. a RayService's status,
# between our read and our write) are retried from a fresh read this many times.
APPLY_ATTEMPTS = 5


class KubeRayError(RuntimeError):
    """A KubeRay resource could not be created, found or read."""


@dataclass(frozen=True)
class KubeTarget:
    """Where the Kubernetes API is and which namespace to use.

    By default the usual rules apply: in a pod the service account (``in_cluster``), else
    ``$KUBECONFIG`` / ``~/.kube/config`` with ``context``. ``server`` names an API URL explicitly
    (a ``kubectl proxy``, or a test server), with an optional bearer ``token``.
    """

    namespace: str = "default"
    kubeconfig: str | None = None
    context: str | None = None
    server: str | None = None
    token: str | None = None
    in_cluster: bool | None = None
    verify_ssl: bool = True

    def api_client(self) -> ApiClient:
        """A configured ``kubernetes.client.ApiClient``."""
        from kubernetes import client, config

        configuration = client.Configuration()
        if self.server:
            configuration.host = self.server.rstrip("/")
            configuration.verify_ssl = self.verify_ssl
            if self.token:
                configuration.api_key = {"authorization": f"Bearer {self.token}"}
        elif self.in_cluster or (self.in_cluster is None and os.environ.get("KUBERNETES_SERVICE_HOST")):
            config.load_incluster_config(client_configuration=configuration)
        else:
            # $KUBECONFIG as it is now: the client library reads it once, when first imported
            kubeconfig = self.kubeconfig or os.environ.get("KUBECONFIG") or None
            config.load_kube_config(config_file=kubeconfig, context=self.context, client_configuration=configuration)
        return client.ApiClient(configuration)


@dataclass
class RayJobStatus:
    """The parts of a RayJob's status that matter to a waiting caller."""

    name: str
    deployment_status: str = ""
    job_status: str = ""
    job_id: str = ""
    message: str = ""
    reason: str = ""
    dashboard_url: str = ""
    ray_cluster_name: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> RayJobStatus:
        status = obj.get("status") or {}
        return cls(
            name=obj.get("metadata", {}).get("name", ""),
            deployment_status=str(status.get("jobDeploymentStatus") or ""),
            job_status=str(status.get("jobStatus") or ""),
            job_id=str(status.get("jobId") or ""),
            message=str(status.get("message") or ""),
            reason=str(status.get("reason") or ""),
            dashboard_url=str(status.get("dashboardURL") or ""),
            ray_cluster_name=str(status.get("rayClusterName") or ""),
            raw=status,
        )

    @property
    def terminal(self) -> bool:
        return self.deployment_status in DEPLOYMENT_TERMINAL

    @property
    def succeeded(self) -> bool:
        return self.deployment_status == "Complete" and self.job_status == "SUCCEEDED"

    def describe(self) -> str:
        parts = [self.deployment_status or "Pending", self.job_status or "-"]
        if self.reason or self.message:
            parts.append(f"({self.reason}: {self.message})".replace("(: ", "(") if self.reason else f"({self.message})")
        return " ".join(parts)


@dataclass
class CreateResult:
    """The object as the API server holds it, and whether this call created it."""

    object: dict[str, Any]
    created: bool


def ray_plural(kind: str) -> str:
    """``rayjobs`` for ``RayJob`` etc.; raises for kinds that are not KubeRay's."""
    try:
        return RAY_KINDS[kind]
    except KeyError:
        raise KubeRayError(f"{kind} is not a KubeRay kind ({', '.join(RAY_KINDS)})") from None


class KubeRayClient:
    """KubeRay resources in one namespace through an injected ``kubernetes`` ``ApiClient``."""

    def __init__(self, api_client: ApiClient, namespace: str = "default") -> None:
        from kubernetes import client

        self.api_client = api_client
        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.networking = client.NetworkingV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)

    @classmethod
    def connect(cls, target: KubeTarget) -> KubeRayClient:
        """A client for ``target`` (kubeconfig, in-cluster or an explicit server)."""
        return cls(target.api_client(), target.namespace)

    def close(self) -> None:
        self.api_client.close()

    def __enter__(self) -> KubeRayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- generic -----------------------------------------------------------------------------

    def _ns(self, obj: dict[str, Any] | None = None) -> str:
        return ((obj or {}).get("metadata") or {}).get("namespace") or self.namespace

    def create(self, obj: dict[str, Any]) -> CreateResult:
        """Create ``obj``; when it already exists (409) return the existing object instead."""
        from kubernetes.client.exceptions import ApiException

        kind, name = obj["kind"], obj["metadata"]["name"]
        try:
            if kind in CUSTOM_KINDS:
                group, version, plural = CUSTOM_KINDS[kind]
                created = self.custom.create_namespaced_custom_object(group, version, self._ns(obj), plural, obj)
            else:
                created = self._core_call("create", kind, obj=obj)
            return CreateResult(created, True)
        except ApiException as exc:
            if exc.status != 409:
                raise KubeRayError(f"creating {kind} {name} failed: {exc.status} {exc.reason}: {_body(exc)}") from None
        existing = self.get(kind, name, namespace=self._ns(obj))
        if existing is None:  # deleted between the 409 and the get
            raise KubeRayError(f"{kind} {name} exists (409) but cannot be read back")
        return CreateResult(existing, False)

    def get(self, kind: str, name: str, *, namespace: str | None = None) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        from kubernetes.client.exceptions import ApiException

        ns = namespace or self.namespace
        try:
            if kind in CUSTOM_KINDS:
                group, version, plural = CUSTOM_KINDS[kind]
                return self.custom.get_namespaced_custom_object(group, version, ns, plural, name)
            return self._core_call("read", kind, name=name, namespace=ns)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeRayError(f"reading {kind} {name} failed: {exc.status} {exc.reason}: {_body(exc)}") from None

    def list(self, kind: str, *, label_selector: str | None = None) -> list[dict[str, Any]]:
        """Objects of a KubeRay ``kind`` in the namespace."""
        kwargs = {"label_selector": label_selector} if label_selector else {}
        result = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, ray_plural(kind), **kwargs)
        return list(result.get("items") or [])

    def apply(self, obj: dict[str, Any]) -> str:
        """Create ``obj``, or bring an existing one to it: ``created``, ``configured`` or ``unchanged``.

        RayJobs are runs and are never changed once created (``unchanged``); the spec of an existing
        RayService or RayCluster (and the body of core objects) is replaced, its labels and
        annotations merged into the existing ones. ``unchanged`` when a dry-run of that replace
        gives back the object as stored: the comparison sees the server's defaults, not ours.
        """
        from kubernetes.client.exceptions import ApiException

        result = self.create(obj)
        if result.created:
            return "created"
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind == "RayJob":
            return "unchanged"
        current = result.object
        for attempt in range(1, APPLY_ATTEMPTS + 1):
            desired = _replacement(current, obj)
            try:
                if _stored(self._replace(kind, name, desired, dry_run=True)) == _stored(current):
                    return "unchanged"
                self._replace(kind, name, desired)
                return "configured"
            except ApiException as exc:
                if exc.status != 409 or attempt == APPLY_ATTEMPTS:
                    raise KubeRayError(f"updating {kind} {name} failed: {exc.status} {exc.reason}: {_body(exc)}") from None
            refreshed = self.get(kind, name, namespace=self._ns(obj))
            if refreshed is None:  # deleted meanwhile: start over
                return self.apply(obj)
            current = refreshed
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _replace(self, kind: str, name: str, obj: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        options: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
        if kind in CUSTOM_KINDS:
            group, version, plural = CUSTOM_KINDS[kind]
            return self.custom.replace_namespaced_custom_object(group, version, self._ns(obj), plural, name, obj, **options)
        return self._core_call("replace", kind, obj=obj, name=name, options=options)

    def delete(self, kind: str, name: str, *, namespace: str | None = None) -> bool:
        """Delete (background propagation: the RayCluster and pods of a RayJob go too); False if absent."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        ns = namespace or self.namespace
        options = client.V1DeleteOptions(propagation_policy="Background")
        try:
            if kind in CUSTOM_KINDS:
                group, version, plural = CUSTOM_KINDS[kind]
                self.custom.delete_namespaced_custom_object(group, version, ns, plural, name, body=options)
            else:
                self._core_call("delete", kind, name=name, namespace=ns, body=options)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise KubeRayError(f"deleting {kind} {name} failed: {exc.status} {exc.reason}: {_body(exc)}") from None

    def _core_call(
        self, verb: str, kind: str, *, obj: dict[str, Any] | None = None, name: str | None = None, namespace: str | None = None, body: Any = None, options: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        if kind not in CORE_KINDS:
            raise KubeRayError(f"kind {kind} is not handled here: apply it with kubectl")
        namespaced, suffix = CORE_KINDS[kind]
        api = getattr(self, NON_CORE_APIS.get(kind, "core"))
        method = getattr(api, f"{verb}_{'namespaced_' if namespaced else ''}{suffix}")
        args: list[Any] = []
        if verb in ("read", "delete", "replace"):
            args.append(name)
        if namespaced:
            args.append(namespace or self._ns(obj))
        if verb in ("create", "replace"):
            args.append(obj)
        kwargs = {**({"body": body} if body is not None else {}), **(options or {})}
        result = method(*args, **kwargs)
        return self.api_client.sanitize_for_serialization(result)

    # --- RayJob --------------------------------------------------------------------------------

    def rayjob_status(self, name: str) -> RayJobStatus:
        """The RayJob's status now; raises when it does not exist."""
        obj = self.get("RayJob", name)
        if obj is None:
            raise KubeRayError(f"RayJob {name} not found in namespace {self.namespace}")
        return RayJobStatus.from_object(obj)

    def wait_rayjob(self, name: str, *, timeout_s: float = 3600.0, poll_s: float = 2.0, watch: bool = True, on_status: Callable[[RayJobStatus], None] | None = None) -> RayJobStatus:
        """Wait until the RayJob's ``jobDeploymentStatus`` is terminal; raise ``TimeoutError`` after
        ``timeout_s``. ``on_status`` sees every status change; what it raises ends the wait."""
        from kubernetes.client.exceptions import ApiException

        deadline = time.monotonic() + timeout_s
        last: list[str] = []

        def seen(status: RayJobStatus) -> RayJobStatus:
            key = f"{status.deployment_status}/{status.job_status}"
            if on_status and (not last or last[-1] != key):
                on_status(status)
            last.append(key)
            return status

        current = self.get("RayJob", name)
        if current is None:
            raise KubeRayError(f"RayJob {name} not found in namespace {self.namespace}")
        status = seen(RayJobStatus.from_object(current))
        watch_ok = watch
        while not status.terminal:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"RayJob {name} still {status.describe()} after {timeout_s:.0f} s")
            if watch_ok:
                rv = current.get("metadata", {}).get("resourceVersion")
                events = self._watch_one("RayJob", name, rv, timeout_s=max(1, min(int(remaining), 300)))
                try:
                    while True:
                        # only the stream's own failures end the watch: what on_status raises
                        # (an interrupt, a caller's stop) goes to the caller
                        try:
                            obj = next(events, None)
                        except ApiException as exc:
                            watch_ok = exc.status == 410  # expired: read again, watch from there
                            break
                        except Exception:  # noqa: BLE001 - broken or unsupported watch: poll from here on
                            watch_ok = False
                            break
                        if obj is None:
                            break
                        current = obj
                        status = seen(RayJobStatus.from_object(obj))
                        if status.terminal:
                            return status
                finally:
                    events.close()
            # the watch ended (its timeout, a closed stream) or broke: re-read, then watch again
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
            refreshed = self.get("RayJob", name)
            if refreshed is None:
                raise KubeRayError(f"RayJob {name} was deleted while waiting for it")
            current = refreshed
            status = seen(RayJobStatus.from_object(current))
        return status

    def _watch_one(self, kind: str, name: str, resource_version: str | None, *, timeout_s: int) -> Generator[dict[str, Any], None, None]:
        """Objects from ADDED/MODIFIED events of one named object (a watch on the list endpoint)."""
        from kubernetes import watch

        kwargs: dict[str, Any] = {"field_selector": f"metadata.name={name}", "timeout_seconds": timeout_s}
        if resource_version:
            kwargs["resource_version"] = resource_version
        w = watch.Watch()
        try:
            for event in w.stream(self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, ray_plural(kind), **kwargs):
                kind_of_event = event.get("type")
                obj = event.get("object")
                if kind_of_event == "ERROR":
                    raise KubeRayError(f"watch error: {obj}")
                if kind_of_event == "DELETED":
                    raise KubeRayError(f"{kind} {name} was deleted while waiting for it")
                if isinstance(obj, dict) and obj.get("metadata", {}).get("name") == name:
                    yield obj
        finally:
            w.stop()

    # --- RayService ----------------------------------------------------------------------------

    def rayservice_ready(self, name: str) -> bool:
        """True when the RayService reports Ready (condition) or Running (older serviceStatus)."""
        obj = self.get("RayService", name)
        if obj is None:
            return False
        status = obj.get("status") or {}
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []):
            return True
        return status.get("serviceStatus") == "Running"


def _body(exc: Exception) -> str:
    body = getattr(exc, "body", "") or ""
    return body[:500] if isinstance(body, str) else str(body)[:500]


def _replacement(current: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` as a replace of ``current``: its metadata is the stored one (uid, resourceVersion for
    optimistic concurrency, finalizers, owners) with ``obj``'s labels and annotations merged in, so
    what controllers or other tools added there stays."""
    desired = copy.deepcopy(obj)
    have = current.get("metadata") or {}
    want = desired.get("metadata") or {}
    meta = {k: copy.deepcopy(v) for k, v in have.items() if k != "managedFields"}
    for key in ("labels", "annotations"):
        merged = {**(have.get(key) or {}), **(want.get(key) or {})}
        if merged:
            meta[key] = merged
    desired["metadata"] = meta
    return desired


def _stored(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` without what every write changes by itself (its resourceVersion, managedFields)."""
    out = copy.deepcopy(obj)
    meta = out.get("metadata") or {}
    for key in ("resourceVersion", "managedFields"):
        meta.pop(key, None)
    return out
