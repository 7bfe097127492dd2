"""The security of the rendered KubeRay overlays (issue 15, "TLS"): no secret written in them, secrets
mounted read-only and private where they are read (and only there), Ray token auth in every Ray
container and autoscaler, the TLS edge in front of Serve as the only port devices reach,
NetworkPolicies that say so, settings that pass the product's own startup checks, and a monitor
Deployment with no more than it needs (its secrets, a non-root pod on a read-only filesystem,
Prometheus in, its backends out).
Negative cases show each check catches what it is for."""

from __future__ import annotations

import base64
import copy
import ipaddress
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from app.kuberay import manifests as m
from app.orchestration.registry import JOBS

RAY_CONTAINERS = ("ray-head", "ray-worker")
SUBMITTER = "ray-job-submitter"
EDGE = "tls-edge"
EDGE_PORT, SERVE_PORT, DASHBOARD_PORT, RAY_METRICS_PORT, MONITOR_PORT = 8443, 8000, 8265, 8080, 9108
RAY_AUTH_SECRET = "greenhouse-ray-auth"
# What the monitor reads, and nothing more: the Ray token, the CA, the Kafka password (files).
MONITOR_SECRETS = {RAY_AUTH_SECRET, "greenhouse-ca", "greenhouse-kafka"}
PRIVATE_MODE = 0o400
SECRET_WORDS = ("KEY", "TOKEN", "PASSWORD", "PASSWD", "SECRET", "CREDENTIAL")
ANY = "any"  # every port


@pytest.fixture(scope="module")
def rendered(k8s_tools) -> dict[str, list[dict]]:
    return {name: m.load_documents(m.render_overlay(m.overlay_dir(name), binary=k8s_tools)) for name in m.OVERLAYS}


# --- walking the rendered objects -------------------------------------------------------------------


@dataclass
class Template:
    """A pod template somewhere in a rendered object."""

    where: str
    kind: str  # kind of the object holding it
    labels: dict[str, str]
    spec: dict[str, Any]
    role: str  # head, worker, submitter, monitor


def templates(obj: dict[str, Any]) -> Iterator[Template]:
    kind, name = obj.get("kind", ""), obj.get("metadata", {}).get("name", "")
    spec = obj.get("spec") or {}
    clusters = {"RayCluster": spec, "RayJob": spec.get("rayClusterSpec"), "RayService": spec.get("rayClusterConfig")}
    cluster = clusters.get(kind)
    if cluster:
        head = cluster["headGroupSpec"]["template"]
        yield Template(f"{kind} {name} head", kind, (head.get("metadata") or {}).get("labels") or {}, head["spec"], "head")
        for group in cluster.get("workerGroupSpecs") or []:
            t = group["template"]
            yield Template(f"{kind} {name} worker {group['groupName']}", kind, (t.get("metadata") or {}).get("labels") or {}, t["spec"], "worker")
    if kind == "RayJob" and spec.get("submitterPodTemplate"):
        t = spec["submitterPodTemplate"]
        yield Template(f"RayJob {name} submitter", kind, (t.get("metadata") or {}).get("labels") or {}, t["spec"], "submitter")
    if kind == "Deployment":
        t = spec["template"]
        yield Template(f"Deployment {name}", kind, (t.get("metadata") or {}).get("labels") or {}, t["spec"], "monitor")


def all_templates(objects: list[dict]) -> list[Template]:
    return [t for obj in objects for t in templates(obj)]


def all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*(spec.get("initContainers") or []), *spec["containers"]]


def secret_volumes(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v["secret"] for v in spec.get("volumes") or [] if "secret" in v}


def config_data(objects: list[dict], name: str = "greenhouse-settings") -> dict[str, str]:
    return next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name)["data"]


def container_env(objects: list[dict], container: dict[str, Any], secret_value: str = "mongodb://db.example:27017/greenhouse?tls=true") -> dict[str, str]:
    """What the container's process sees: ConfigMaps it loads whole, then its own env (secretKeyRefs
    replaced by ``secret_value``)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        env.update(config_data(objects, source["configMapRef"]["name"]))
    for entry in container.get("env") or []:
        env[entry["name"]] = entry["value"] if "value" in entry else secret_value
    return env


def mounted_file(spec: dict[str, Any], container: dict[str, Any], path: str) -> tuple[str, str] | None:
    """``(secret name, key)`` of the secret file at ``path`` in ``container``, or None."""
    volumes = secret_volumes(spec)
    for mount in container.get("volumeMounts") or []:
        base = PurePosixPath(mount["mountPath"])
        target = PurePosixPath(path)
        if mount["name"] in volumes and (target == base or base in target.parents):
            secret = volumes[mount["name"]]
            relative = str(target.relative_to(base))
            items = secret.get("items")
            if relative == ".":
                return secret["secretName"], "*"
            key = next((i["key"] for i in items if i["path"] == relative), None) if items else relative
            return (secret["secretName"], key) if key else None
    return None


# --- checks -----------------------------------------------------------------------------------------


def value_problems(where: str, name: str, value: str) -> list[str]:
    """Why ``name=value`` (an env value, ConfigMap or dev Secret entry) looks like a secret written out."""
    problems = []
    upper = name.upper()
    is_path_setting = upper.endswith(("_FILE", "_PATH", "_DIR")) and value.startswith("/")
    if any(word in upper for word in SECRET_WORDS) and not is_path_setting:
        problems.append(f"{where}: {name} looks like a secret written inline (use a file or secretKeyRef)")
    if "-----BEGIN" in value:
        problems.append(f"{where}: {name} holds a PEM block")
    if re.fullmatch(r"[A-Za-z0-9+/=_\-]{24,}", value) and not value.startswith("/"):
        problems.append(f"{where}: {name} holds a token-like string")
    parts = urlsplit(value) if "://" in value else None
    if parts is not None:
        if parts.password:
            problems.append(f"{where}: {name} is a URL with a password")
        for key, item in parse_qsl(parts.query):
            if any(word.lower() in key.lower() for word in SECRET_WORDS) and not (key.lower().endswith("_file") or key.endswith("File")):
                problems.append(f"{where}: {name} has the credential {key} in its query")
            elif (key.lower().endswith("_file") or key.endswith("File")) and not item.startswith("/"):
                problems.append(f"{where}: {name}: {key} is not a path")
    return problems


def inline_secret_problems(objects: list[dict]) -> list[str]:
    problems = []
    for obj in objects:
        where = f"{obj['kind']} {obj['metadata']['name']}"
        if obj["kind"] in ("ConfigMap", "Secret"):
            if obj.get("stringData"):
                problems.append(f"{where}: stringData")
            for key, value in (obj.get("data") or {}).items():
                problems += value_problems(where, key, base64.b64decode(value).decode() if obj["kind"] == "Secret" else value)
        for t in templates(obj):
            for c in all_containers(t.spec):
                for entry in c.get("env") or []:
                    source = entry.get("valueFrom")
                    if source is not None:
                        if set(source) != {"secretKeyRef"}:
                            problems.append(f"{t.where} {c['name']}: {entry['name']} from {sorted(source)} (only secretKeyRef is expected)")
                        continue
                    problems += value_problems(f"{t.where} {c['name']}", entry["name"], str(entry.get("value", "")))
    return problems


def volume_problems(objects: list[dict]) -> list[str]:
    """Secret volumes not 0400, secret mounts not read-only, mounts of unknown volumes, pods that
    could not read their 0400 files (no fsGroup) or run as root."""
    problems = []
    for t in all_templates(objects):
        volumes = {v["name"]: v for v in t.spec.get("volumes") or []}
        secrets = secret_volumes(t.spec)
        for name, secret in secrets.items():
            if secret.get("defaultMode") != PRIVATE_MODE:
                problems.append(f"{t.where}: secret volume {name} has defaultMode {oct(secret.get('defaultMode', 0o644))}, not 0400")
            for item in secret.get("items") or []:
                if item.get("mode", PRIVATE_MODE) & ~PRIVATE_MODE:
                    problems.append(f"{t.where}: secret volume {name} item {item['key']} has mode {oct(item['mode'])}")
        for c in all_containers(t.spec):
            for mount in c.get("volumeMounts") or []:
                if mount["name"] not in volumes:
                    problems.append(f"{t.where} {c['name']}: mounts unknown volume {mount['name']}")
                elif mount["name"] in secrets and mount.get("readOnly") is not True:
                    problems.append(f"{t.where} {c['name']}: secret volume {mount['name']} is not mounted readOnly")
        if secrets:
            security = t.spec.get("securityContext") or {}
            if not security.get("fsGroup"):
                problems.append(f"{t.where}: no fsGroup: the non-root Ray user cannot read 0400 secret files")
            if not security.get("runAsNonRoot") or not security.get("runAsUser"):
                problems.append(f"{t.where}: not runAsNonRoot with a runAsUser")
    return problems


def token_auth_problems(objects: list[dict]) -> list[str]:
    """Ray containers, autoscaler sidecars and submitters without RAY_AUTH_MODE=token and the
    shared Secret's token file (KubeRay v1.5.0 has no authOptions: it injects no token)."""
    problems = []
    for obj in objects:
        for label, cluster in m._cluster_specs(obj):
            if cluster.get("enableInTreeAutoscaling"):
                options = cluster.get("autoscalerOptions") or {}
                env = {e["name"]: e.get("value") for e in options.get("env") or []}
                token = mounted_file(cluster["headGroupSpec"]["template"]["spec"], options, env.get("RAY_AUTH_TOKEN_PATH") or "/")
                if env.get("RAY_AUTH_MODE") != "token" or token != (RAY_AUTH_SECRET, "auth_token"):
                    problems.append(f"{label} autoscaler: no RAY_AUTH_MODE=token with the mounted {RAY_AUTH_SECRET} token")
        if obj["kind"] == "RayJob":
            spec = obj["spec"]
            if spec.get("submissionMode") != "K8sJobMode" or not spec.get("submitterPodTemplate"):
                problems.append(f"RayJob {obj['metadata']['name']}: no submitter pod template (K8sJobMode)")
    for t in all_templates(objects):
        for c in t.spec["containers"]:
            if c["name"] not in (*RAY_CONTAINERS, SUBMITTER):
                continue
            env = {e["name"]: e.get("value") for e in c.get("env") or []}
            if env.get("RAY_AUTH_MODE") != "token":
                problems.append(f"{t.where} {c['name']}: RAY_AUTH_MODE is {env.get('RAY_AUTH_MODE')!r}")
            path = env.get("RAY_AUTH_TOKEN_PATH")
            if not path or mounted_file(t.spec, c, path) != (RAY_AUTH_SECRET, "auth_token"):
                problems.append(f"{t.where} {c['name']}: RAY_AUTH_TOKEN_PATH {path!r} is not the mounted {RAY_AUTH_SECRET} token")
            if "RAY_AUTH_TOKEN" in env:
                problems.append(f"{t.where} {c['name']}: RAY_AUTH_TOKEN written inline")
    return problems


# --- NetworkPolicy semantics (what the manifests use: matchLabels, ipBlock, TCP ports) ------------


@dataclass
class Source:
    """Where a connection comes from: a pod in a namespace, or an address outside the cluster."""

    namespace: str | None = None
    namespace_labels: dict[str, str] = field(default_factory=dict)
    pod_labels: dict[str, str] = field(default_factory=dict)
    ip: str | None = None

    def __post_init__(self) -> None:
        if self.namespace:
            self.namespace_labels = {"kubernetes.io/metadata.name": self.namespace, **self.namespace_labels}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, selector
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _peer_matches(peer: dict[str, Any], policy_namespace: str, source: Source) -> bool:
    if "ipBlock" in peer:
        if source.ip is None:
            return False
        address = ipaddress.ip_address(source.ip)
        block = ipaddress.ip_network(peer["ipBlock"]["cidr"])
        return (
            address.version == block.version
            and address in block
            and not any(address in ipaddress.ip_network(e) for e in peer["ipBlock"].get("except", []) if ipaddress.ip_network(e).version == address.version)
        )
    if source.namespace is None:
        return False
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], source.namespace_labels):
            return False
    elif source.namespace != policy_namespace:
        return False
    return _selects(peer.get("podSelector") or {}, source.pod_labels)


def allowed_ports(objects: list[dict], namespace: str, pod_labels: dict[str, str], source: Source) -> set[Any]:
    """Ports of a pod with ``pod_labels`` in ``namespace`` that ``source`` may connect to ({ANY}: all)."""
    policies = [o for o in objects if o["kind"] == "NetworkPolicy" and _selects(o["spec"]["podSelector"], pod_labels) and "Ingress" in o["spec"]["policyTypes"]]
    if not policies:
        return {ANY}
    ports: set[Any] = set()
    for policy in policies:
        for rule in policy["spec"].get("ingress") or []:
            if "from" in rule and not any(_peer_matches(p, namespace, source) for p in rule["from"]):
                continue
            ports |= {p["port"] for p in rule["ports"]} if rule.get("ports") else {ANY}
    return ports


def egress_allowed(objects: list[dict], namespace: str, pod_labels: dict[str, str], destination: Source, port: int, protocol: str = "TCP") -> bool:
    """Whether a pod with ``pod_labels`` in ``namespace`` may connect to ``destination`` on ``port``."""
    policies = [o for o in objects if o["kind"] == "NetworkPolicy" and _selects(o["spec"]["podSelector"], pod_labels) and "Egress" in o["spec"]["policyTypes"]]
    if not policies:
        return True
    for policy in policies:
        for rule in policy["spec"].get("egress") or []:
            if "to" in rule and not any(_peer_matches(p, namespace, destination) for p in rule["to"]):
                continue
            if not rule.get("ports") or any(p["port"] == port and p.get("protocol", "TCP") == protocol for p in rule["ports"]):
                return True
    return False


def kuberay_pod_labels(t: Template) -> dict[str, str]:
    """The labels a pod made from ``t`` carries (KubeRay adds its own to Ray pods)."""
    if t.role in ("submitter", "monitor"):
        return dict(t.labels)
    return {**t.labels, "ray.io/is-ray-node": "yes", "ray.io/node-type": t.role, "app.kubernetes.io/created-by": "kuberay-operator"}


def namespace_of(objects: list[dict]) -> str:
    return next(o["metadata"]["name"] for o in objects if o["kind"] == "Namespace")


def monitor_template(objects: list[dict]) -> Template:
    (t,) = [t for t in all_templates(objects) if t.role == "monitor"]
    return t


def monitor_problems(objects: list[dict]) -> list[str]:
    """Where the monitor's pod has more than it needs: secrets beyond MONITOR_SECRETS, a Kubernetes
    API token, root, privilege escalation, capabilities, a writable root filesystem, no seccomp."""
    t = monitor_template(objects)
    problems = []
    mounted = {secret_volumes(t.spec)[m["name"]]["secretName"] for c in all_containers(t.spec) for m in c.get("volumeMounts") or [] if m["name"] in secret_volumes(t.spec)}
    if mounted != MONITOR_SECRETS:
        problems.append(f"{t.where}: mounts secrets {sorted(mounted)}, not {sorted(MONITOR_SECRETS)}")
    if t.spec.get("automountServiceAccountToken") is not False:
        problems.append(f"{t.where}: the service account token is mounted")
    account = next((o for o in objects if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == t.spec.get("serviceAccountName")), None)
    if account is None or account.get("automountServiceAccountToken") is not False:
        problems.append(f"{t.where}: service account {t.spec.get('serviceAccountName')!r} is not one of the overlay's without token automount")
    pod = t.spec.get("securityContext") or {}
    if not pod.get("runAsNonRoot") or not pod.get("runAsUser") or (pod.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append(f"{t.where}: pod is not non-root with seccomp RuntimeDefault")
    for c in all_containers(t.spec):
        security = c.get("securityContext") or {}
        if security.get("allowPrivilegeEscalation") is not False or security.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{t.where} {c['name']}: privilege escalation allowed or root filesystem writable")
        if (security.get("capabilities") or {}).get("drop") != ["ALL"] or (security.get("capabilities") or {}).get("add"):
            problems.append(f"{t.where} {c['name']}: capabilities not all dropped")
    return problems


# --- tests ------------------------------------------------------------------------------------------


def test_no_secret_is_written_in_the_manifests(rendered):
    for name, objects in rendered.items():
        assert inline_secret_problems(objects) == [], name
        secrets = [o for o in objects if o["kind"] == "Secret"]
        # prod references Secrets made out of band; dev generates only the metadata URL of its
        # user-less MongoDB (no password: checked above)
        assert [s["metadata"]["name"] for s in secrets] == ({"dev": ["greenhouse-secrets"], "prod": []}[name])
        for t in all_templates(objects):
            for c in all_containers(t.spec):
                refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c.get("env") or [] if "valueFrom" in e}
                assert refs in ({}, {"GH_METADATA_URL": {"name": "greenhouse-secrets", "key": "metadata-url"}}), (t.where, c["name"])
        assert "GH_METADATA_URL" not in config_data(objects)  # a URL with credentials: never in a ConfigMap


def test_secrets_are_mounted_read_only_and_private(rendered):
    for name, objects in rendered.items():
        assert volume_problems(objects) == [], name
        for t in all_templates(objects):
            assert t.spec.get("automountServiceAccountToken") is not True
            for c in all_containers(t.spec):
                assert (c.get("securityContext") or {}).get("privileged") is not True, (t.where, c["name"])


def test_each_secret_is_where_it_is_read_and_only_there(rendered):
    for objects in rendered.values():
        config = config_data(objects)
        for t in all_templates(objects):
            for c in t.spec["containers"]:
                if c["name"] not in RAY_CONTAINERS:
                    continue
                env = container_env(objects, c)
                bus = dict(parse_qsl(urlsplit(env["GH_BUS_URL"]).query))
                wanted = {
                    env["GH_SECURITY__CA_FILE"]: ("greenhouse-ca", "ca.crt"),
                    env["GH_RAY__AUTH_TOKEN_FILE"]: (RAY_AUTH_SECRET, "auth_token"),
                    bus["sasl_password_file"]: ("greenhouse-kafka", "password"),
                    bus["ssl_cafile"]: ("greenhouse-ca", "ca.crt"),
                }
                if t.kind == "RayService":
                    wanted[env["GH_CONTROL__SIGNING_KEY_FILE"]] = ("greenhouse-command-signing", "signing.key")
                    wanted[env["GH_CONTROL__PUBLIC_KEYS_DIR"]] = ("greenhouse-command-keys", "*")
                for path, expected in wanted.items():
                    assert mounted_file(t.spec, c, path) == expected, (t.where, c["name"], path)
                mounted = {secret_volumes(t.spec)[v["name"]]["secretName"] for v in c.get("volumeMounts") or [] if v["name"] in secret_volumes(t.spec)}
                assert "greenhouse-edge-tls" not in mounted and "greenhouse-edge" not in mounted  # the edge's key stays in the edge
                if t.kind != "RayService":
                    assert "greenhouse-command-signing" not in mounted  # only the control app signs
            for c in t.spec["containers"]:
                if c["name"] != EDGE:
                    continue
                env = container_env(objects, c)
                assert mounted_file(t.spec, c, env["GH_SECURITY__TLS_CERT_FILE"]) == ("greenhouse-edge-tls", "tls.crt")
                assert mounted_file(t.spec, c, env["GH_SECURITY__TLS_KEY_FILE"]) == ("greenhouse-edge-tls", "tls.key")
                assert mounted_file(t.spec, c, env["GH_SECURITY__CA_FILE"]) == ("greenhouse-ca", "ca.crt")
                assert mounted_file(t.spec, c, env["GH_CONTROL__SIGNING_KEY_FILE"]) is None  # checked, never read
        monitor = monitor_template(objects)
        (c,) = monitor.spec["containers"]
        env = container_env(objects, c)
        bus = dict(parse_qsl(urlsplit(env["GH_BUS_URL"]).query))
        for path, expected in {
            env["GH_SECURITY__CA_FILE"]: ("greenhouse-ca", "ca.crt"),
            env["GH_RAY__AUTH_TOKEN_FILE"]: (RAY_AUTH_SECRET, "auth_token"),
            bus["sasl_password_file"]: ("greenhouse-kafka", "password"),
            bus["ssl_cafile"]: ("greenhouse-ca", "ca.crt"),
        }.items():
            assert mounted_file(monitor.spec, c, path) == expected, (monitor.where, path)
        assert config["GH_SECURITY__CA_FILE"].startswith("/etc/greenhouse/")


def test_every_ray_container_uses_token_auth(rendered):
    for name, objects in rendered.items():
        assert token_auth_problems(objects) == [], name
        roles = {(t.kind, t.role) for t in all_templates(objects)}
        assert {("RayCluster", "head"), ("RayCluster", "worker"), ("RayJob", "submitter"), ("RayService", "worker")} <= roles
        submitters = [t for t in all_templates(objects) if t.role == "submitter"]
        assert len(submitters) == len(JOBS) and all(t.labels.get("greenhouse.io/ray-client") == "true" and t.spec["restartPolicy"] == "Never" for t in submitters)


def test_rayservice_exposes_only_the_tls_edge(rendered):
    for name, objects in rendered.items():
        service = next(o for o in objects if o["kind"] == "RayService")
        serve_service = service["spec"]["serveService"]
        assert serve_service["metadata"]["name"] == "greenhouse-edge"
        ports = serve_service["spec"]["ports"]
        assert [(p["port"], p["name"].startswith("serve-")) for p in ports] == [(EDGE_PORT, True)]
        if name == "prod":
            assert serve_service["spec"]["type"] == "LoadBalancer" and serve_service["spec"]["externalTrafficPolicy"] == "Local"
        for t in all_templates([service]):
            assert t.labels.get("greenhouse.io/edge") == "true"
            ray = t.spec["containers"][0]
            # KubeRay adds the head's ports named serve/serve-* to the Serve Service: none, or 8000 would be in it
            assert not [p for p in ray.get("ports") or [] if p["name"] == "serve" or p["name"].startswith("serve-")], t.where
            edge = next(c for c in t.spec["containers"] if c["name"] == EDGE)
            assert edge["image"] == ray["image"]
            assert edge["command"][:2] == ["greenhouse", "edge"] and edge["command"][edge["command"].index("--upstream-port") + 1] == str(SERVE_PORT)
            named = {p["name"]: p["containerPort"] for c in t.spec["containers"] for p in c.get("ports") or []}
            assert named[ports[0]["targetPort"]] == EDGE_PORT
            env = container_env(objects, edge)
            assert env["GH_SECURITY__HTTPS_HOST"] == "0.0.0.0" and env["GH_SECURITY__HTTPS_PORT"] == str(EDGE_PORT)
            assert edge["readinessProbe"]["tcpSocket"]["port"] == EDGE_PORT  # not Serve's health: KubeRay deploys Serve after the head is ready
            # the edge secret reaches <data_dir>/secrets of the apps and of the edge, copied by the init container
            init = next(c for c in t.spec["initContainers"] if c["name"] == "edge-secret")
            copied_to = {mt["name"] for mt in init["volumeMounts"] if mt["name"] not in secret_volumes(t.spec)}
            for c in (ray, edge):
                data_dir = container_env(objects, c)["GH_DATA_DIR"]
                secrets_dir = next(mt for mt in c["volumeMounts"] if mt["mountPath"] == f"{data_dir}/secrets")
                assert secrets_dir["name"] in copied_to and secrets_dir.get("readOnly") is not True
                assert next(v for v in t.spec["volumes"] if v["name"] == secrets_dir["name"])["emptyDir"]["medium"] == "Memory"
            assert all(mt["mountPath"] in " ".join(init["command"]) for mt in init["volumeMounts"] if mt["name"] in copied_to)
        # nothing else carries the edge label or runs an edge
        for t in all_templates([o for o in objects if o["kind"] != "RayService"]):
            assert "greenhouse.io/edge" not in t.labels and EDGE not in {c["name"] for c in t.spec["containers"]}


def test_network_policies_let_devices_reach_only_the_edge_port(rendered, k8s_tools):
    for name, objects in rendered.items():
        ns = namespace_of(objects)
        policies = {o["metadata"]["name"]: o for o in objects if o["kind"] == "NetworkPolicy"}
        assert set(policies) == {"greenhouse-default-deny-ingress", "greenhouse-ray", "greenhouse-edge", "greenhouse-monitor"}
        for policy_name, policy in policies.items():
            assert policy["apiVersion"] == "networking.k8s.io/v1" and policy["metadata"]["namespace"] == ns
            # egress is restricted for the monitor only (the Ray pods reach backends, the API server, DNS)
            assert policy["spec"]["policyTypes"] == (["Ingress", "Egress"] if policy_name == "greenhouse-monitor" else ["Ingress"])
            for rule in policy["spec"].get("ingress") or []:
                assert all(p["protocol"] == "TCP" and isinstance(p["port"], int) for p in rule.get("ports", [])), rule
            for rule in policy["spec"].get("egress") or []:
                assert rule.get("ports") and all(isinstance(p["port"], int) and (p["protocol"] == "TCP" or p == {"protocol": "UDP", "port": 53}) for p in rule["ports"]), rule
        assert policies["greenhouse-default-deny-ingress"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}

        pods = {t.where: (t, kuberay_pod_labels(t)) for t in all_templates(objects)}
        serve_head = next(w for w, (t, _) in pods.items() if t.kind == "RayService" and t.role == "head")
        assert _selects(policies["greenhouse-edge"]["spec"]["podSelector"], pods[serve_head][1])  # the NetworkPolicy selects the head pod
        edge_ips = [ipaddress.ip_network(p["ipBlock"]["cidr"]) for r in policies["greenhouse-edge"]["spec"]["ingress"] for p in r["from"] if "ipBlock" in p]
        assert edge_ips, f"{name}: the overlay admits no device network by ipBlock"
        outside = "192.0.2.10" if name == "prod" else None  # dev admits any address to 8443
        sources = {
            "device namespace": Source("greenhouse-devices", {"greenhouse.io/edge-client": "true"}),
            "labelled device pod": Source("sites", {}, {"greenhouse.io/edge-client": "true"}),
            "device address": Source(ip=str(next(edge_ips[0].hosts()))),
        }
        strangers = {
            "unlabelled pod": Source("default", {}, {"app": "anything"}),
            "Ray pod of another namespace": Source("other", {}, {"ray.io/is-ray-node": "yes"}),
            "unlabelled pod of this namespace": Source(ns, {}, {}),
        }
        if outside:
            strangers["address outside the device networks"] = Source(ip=outside)
        ray_pod = Source(ns, {}, {"ray.io/is-ray-node": "yes"})
        operator = Source("kuberay-system", {}, {"app.kubernetes.io/name": "kuberay-operator"})
        ray_client = Source("airflow", {}, {"greenhouse.io/ray-client": "true"})
        for where, (t, labels) in pods.items():
            is_edge = t.kind == "RayService"
            for label, source in sources.items():
                assert allowed_ports(objects, ns, labels, source) == ({EDGE_PORT} if is_edge else set()), (name, where, label)
            for label, source in strangers.items():
                assert allowed_ports(objects, ns, labels, source) == set(), (name, where, label)
            scraper = Source("monitoring", {"greenhouse.io/metrics-scraper": "true"})
            if t.role == "submitter":
                assert allowed_ports(objects, ns, labels, ray_pod) == set()  # nothing connects to a submitter
                continue
            if t.role == "monitor":  # Prometheus scrapes it; nothing else connects to it
                assert allowed_ports(objects, ns, labels, scraper) == {MONITOR_PORT}, (name, where)
                assert all(allowed_ports(objects, ns, labels, s) == set() for s in (ray_pod, operator, ray_client)), (name, where)
                continue
            assert allowed_ports(objects, ns, labels, ray_pod) == {ANY}, (name, where)
            assert allowed_ports(objects, ns, labels, operator) == {DASHBOARD_PORT, SERVE_PORT}, (name, where)
            assert allowed_ports(objects, ns, labels, ray_client) == {DASHBOARD_PORT}, (name, where)
            assert allowed_ports(objects, ns, labels, scraper) == {RAY_METRICS_PORT}
        # and Kubernetes' own types accept them (strict decoding in k8s-tools)
        done = subprocess.run([str(k8s_tools), "validate", str(m.overlay_dir(name))], capture_output=True, text=True, timeout=120)
        reports = [json.loads(line) for line in done.stdout.splitlines()]
        assert sorted(r["name"] for r in reports if r["kind"] == "NetworkPolicy" and r["check"] == "strict" and r["ok"]) == sorted(policies)


def test_monitor_has_what_it_reads_and_nothing_more(rendered, monkeypatch):
    """The monitor's pod: the Ray token, the CA and the Kafka password (no signing key, no edge
    secret, no API token), non-root on a read-only root filesystem with GH_DATA_DIR on its emptyDir,
    and settings that listen beyond loopback and read the mounted token."""
    from app.config import Settings

    for name, objects in rendered.items():
        assert monitor_problems(objects) == [], name
        t = monitor_template(objects)
        (c,) = t.spec["containers"]
        with monkeypatch.context() as env:
            for key in [k for k in os.environ if k.startswith("GH_")]:
                env.delenv(key)
            for key, value in container_env(objects, c).items():
                env.setenv(key, value)
            settings = Settings()
        assert settings.monitor.host == "0.0.0.0" and settings.monitor.port == MONITOR_PORT
        assert mounted_file(t.spec, c, str(settings.ray.auth_token_file)) == (RAY_AUTH_SECRET, "auth_token")
        assert t.labels.get("greenhouse.io/ray-client") == "true"  # NetworkPolicy greenhouse-ray lets it reach 8265
        writable = {m["mountPath"]: m["name"] for m in c["volumeMounts"] if not m.get("readOnly")}
        volumes = {v["name"]: v for v in t.spec["volumes"]}
        assert writable and all("emptyDir" in volumes[v] for v in writable.values())
        data_dir = PurePosixPath(settings.data_dir)
        assert any(data_dir == PurePosixPath(p) or PurePosixPath(p) in data_dir.parents for p in writable), (name, data_dir)


def _bus_ports(bus_url: str) -> set[int]:
    """Broker ports of a ``kafka://host:port,host:port?...`` URL."""
    return {int(address.rsplit(":", 1)[1]) for address in urlsplit(bus_url).netloc.split(",")}


def test_monitor_reaches_its_backends_and_nothing_else(rendered):
    """Egress of the monitor: DNS, the Ray pods' dashboard in its namespace, the Kafka brokers of
    GH_BUS_URL and MongoDB on their ports; not the lake, MLflow, the API server or other Ray ports."""
    for name, objects in rendered.items():
        ns = namespace_of(objects)
        labels = kuberay_pod_labels(monitor_template(objects))
        config = config_data(objects)
        anywhere = Source(ip="10.20.30.40")
        dns = Source("kube-system", {}, {"k8s-app": "kube-dns"})
        assert egress_allowed(objects, ns, labels, dns, 53, "UDP") and egress_allowed(objects, ns, labels, dns, 53, "TCP")
        for port in _bus_ports(config["GH_BUS_URL"]):
            assert egress_allowed(objects, ns, labels, anywhere, port), (name, port)
        secret = next((o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == "greenhouse-secrets"), None)
        # prod's metadata URL is made out of band (kuberay/README.md: MongoDB's default port)
        metadata_port = (urlsplit(base64.b64decode(secret["data"]["metadata-url"]).decode()).port if secret else None) or 27017
        assert egress_allowed(objects, ns, labels, anywhere, metadata_port), name

        head = next(t for t in all_templates(objects) if t.kind == "RayCluster" and t.role == "head")
        head_pod = Source(ns, {}, kuberay_pod_labels(head))
        assert egress_allowed(objects, ns, labels, head_pod, DASHBOARD_PORT)
        assert DASHBOARD_PORT in allowed_ports(objects, ns, kuberay_pod_labels(head), Source(ns, {}, labels))  # and the head lets it in
        assert not egress_allowed(objects, ns, labels, head_pod, 6379)  # GCS: not a Jobs API client's business
        assert not egress_allowed(objects, ns, labels, Source("other", {}, kuberay_pod_labels(head)), DASHBOARD_PORT)
        for port in (443, 6443, 9870, 5000):  # the API server, WebHDFS, MLflow
            assert not egress_allowed(objects, ns, labels, anywhere, port), (name, port)
        # the Ray pods' egress stays open
        assert egress_allowed(objects, ns, kuberay_pod_labels(head), anywhere, 9870)


def test_serve_pods_pass_the_products_startup_checks(rendered, monkeypatch):
    """The settings the Serve pods get are what app/security/startup.py asks of a deployment that
    listens beyond loopback (signing key, TLS files), in the apps' container and in the edge's."""
    from app.config import Settings
    from app.security.startup import deployment_problems, exposed

    for objects in rendered.values():
        for t in all_templates([o for o in objects if o["kind"] in ("RayService", "RayCluster")]):
            for c in t.spec["containers"]:
                if c["name"] not in (*RAY_CONTAINERS, EDGE):
                    continue
                with monkeypatch.context() as env:
                    for key in [k for k in os.environ if k.startswith("GH_")]:
                        env.delenv(key)
                    for key, value in container_env(objects, c).items():
                        env.setenv(key, value)
                    settings = Settings()
                if t.kind == "RayService":
                    assert exposed(settings) and deployment_problems(settings) == [], (t.where, c["name"])
                    assert settings.security.https_port == EDGE_PORT and not settings.control.simulated_plant
                else:
                    assert settings.ray.auth_token_file is not None and settings.security.ca_file is not None


def test_checks_catch_mistakes(rendered):
    objects = copy.deepcopy(rendered["prod"])
    service = next(o for o in objects if o["kind"] == "RayService")
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    ray = head["containers"][0]
    ray["env"].append({"name": "GH_KAFKA_PASSWORD", "value": "hunter2"})
    ray["env"].append({"name": "GH_EXTRA", "value": "c2VjcmV0LXRva2VuLXdpdGgtZW5vdWdoLWxlbmd0aA"})
    next(o for o in objects if o["kind"] == "ConfigMap")["data"]["GH_METADATA_URL"] = "mongodb://greenhouse:pw@db/greenhouse"
    problems = inline_secret_problems(objects)
    assert any("GH_KAFKA_PASSWORD" in p for p in problems) and any("token-like" in p for p in problems) and any("URL with a password" in p for p in problems)

    secret_volume = next(v for v in head["volumes"] if v["name"] == "command-signing")
    secret_volume["secret"]["defaultMode"] = 0o644
    next(mt for mt in ray["volumeMounts"] if mt["name"] == "command-signing").pop("readOnly")
    ray["volumeMounts"].append({"name": "no-such-volume", "mountPath": "/x"})
    problems = volume_problems(objects)
    assert any("defaultMode 0o644" in p for p in problems) and any("not mounted readOnly" in p for p in problems) and any("no-such-volume" in p for p in problems)

    job = next(o for o in objects if o["kind"] == "RayJob")
    submitter = job["spec"]["submitterPodTemplate"]["spec"]["containers"][0]
    submitter["env"] = [e for e in submitter["env"] if e["name"] != "RAY_AUTH_MODE"]
    cluster = next(o for o in objects if o["kind"] == "RayCluster")
    cluster["spec"]["autoscalerOptions"].pop("volumeMounts")  # the sidecar could not reach GCS
    problems = token_auth_problems(objects)
    assert any("submitter ray-job-submitter: RAY_AUTH_MODE" in p for p in problems) and any("greenhouse autoscaler" in p for p in problems)

    monitor = monitor_template(objects)
    monitor.spec["volumes"].append({"name": "command-signing", "secret": {"secretName": "greenhouse-command-signing", "defaultMode": PRIVATE_MODE}})
    monitor.spec["containers"][0]["volumeMounts"].append({"name": "command-signing", "mountPath": "/etc/greenhouse/signing", "readOnly": True})
    monitor.spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    monitor.spec.pop("automountServiceAccountToken")
    problems = monitor_problems(objects)
    assert any("greenhouse-command-signing" in p for p in problems) and any("root filesystem" in p for p in problems) and any("token is mounted" in p for p in problems)
    monitor_policy = next(o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "greenhouse-monitor")
    monitor_policy["spec"]["egress"].append({"ports": [{"protocol": "TCP", "port": 443}]})
    assert egress_allowed(objects, "greenhouse", monitor.labels, Source(ip="10.20.30.40"), 443)

    edge_policy = next(o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "greenhouse-edge")
    edge_policy["spec"]["ingress"][0]["ports"].append({"protocol": "TCP", "port": SERVE_PORT})
    labels = kuberay_pod_labels(next(t for t in all_templates([service]) if t.role == "head"))
    assert SERVE_PORT in allowed_ports(objects, "greenhouse", labels, Source("greenhouse-devices", {"greenhouse.io/edge-client": "true"}))
