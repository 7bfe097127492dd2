"""The ``kuberay/`` manifests as data: render an overlay, pick RayJob templates, make runs of them,
and the offline checks every rendered overlay must pass (CRD schemas, operator rules, settings env
vars, entrypoint modules of registered jobs, one Ray version everywhere).

Rendering uses ``k8s-tools`` (``stack/k8s-tools``: kustomize's own Go library, no cluster needed);
``kubectl kustomize`` gives the same YAML.

The manifests target KubeRay :data:`KUBERAY_VERSION` (operator and CRDs): the version
``stack/kube/build`` builds and runs, whose CRDs it caches (:func:`default_crds_dir`).
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from app.orchestration.registry import job_of_module

REPO_ROOT = Path(__file__).resolve().parents[2]
KUBERAY_DIR = REPO_ROOT / "kuberay"
OVERLAYS = ("dev", "prod")
MONITORED_OVERLAYS = ("dev-monitoring", "prod-monitoring")
"""The overlays plus prometheus-operator's objects (kuberay/components/monitoring): for clusters with
the monitoring.coreos.com CRDs."""
K8S_TOOLS_ENV = "GH_K8S_TOOLS"
KUBERAY_VERSION = "v1.5.0"
"""The KubeRay release the manifests target: the one ``stack/kube/build`` pins (a test keeps them in step)."""
KUBERAY_MODULE = "github.com/ray-project/kuberay/ray-operator"
"""The operator's Go module: its ``config/crd/bases`` are the CRDs of that version."""
CRDS_DIR_ENV = "GH_KUBERAY_CRDS_DIR"
FETCH_CRDS_COMMAND = "bash stack/kube/build"
"""Builds the operator and caches its CRDs in :func:`default_crds_dir` (quick once built)."""
JOB_LABEL = "greenhouse.io/job"
RUN_OF_LABEL = "greenhouse.io/run-of"
# Ray's own variables a manifest may set besides the product's GH_* settings.
KNOWN_RAY_ENV = frozenset(
    {
        "RAY_AUTH_MODE",
        "RAY_AUTH_TOKEN",
        "RAY_AUTH_TOKEN_PATH",
        "RAY_USAGE_STATS_ENABLED",
        "RAY_enable_autoscaler_v2",
        "RAY_GRAFANA_HOST",
        "RAY_PROMETHEUS_HOST",
        "RAY_GRAFANA_IFRAME_HOST",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED",
        "RAY_SERVE_ENABLE_HA_PROXY",
        "RAY_SERVE_ENABLE_DIRECT_INGRESS",
        "RAY_SERVE_ENABLE_EXPERIMENTAL_STREAMING",
        "RAY_LOG_TO_STDERR",
        "RAY_BACKEND_LOG_LEVEL",
        "RAY_DEDUP_LOGS",
        "RAY_gcs_rpc_server_reconnect_timeout_s",
    }
)
# KubeRay's name limits (53 for a RayCluster minus the 6 characters it appends for the others).
MAX_NAME = {"RayCluster": 53, "RayJob": 47, "RayService": 47}
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


# --- rendering ---------------------------------------------------------------------------------


def stack_cache_dir() -> Path:
    """The stack's cache: ``$GH_STACK_CACHE_DIR``, else ``$XDG_CACHE_HOME`` (or ``~/.cache``)``/greenhouse-mlops``."""
    if os.environ.get("GH_STACK_CACHE_DIR"):
        return Path(os.environ["GH_STACK_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "greenhouse-mlops"


def default_crds_dir() -> Path:
    """``$GH_KUBERAY_CRDS_DIR``, else the CRDs of :data:`KUBERAY_VERSION` that ``stack/kube/build``
    copies from the operator's Go module (``<stack cache>/kube/kuberay-<version>/crds``)."""
    if os.environ.get(CRDS_DIR_ENV):
        return Path(os.environ[CRDS_DIR_ENV])
    return stack_cache_dir() / "kube" / f"kuberay-{KUBERAY_VERSION}" / "crds"


def missing_crds_message(crds_dir: Path) -> str:
    """What to do when ``crds_dir`` holds no KubeRay CRDs."""
    return (
        f"no KubeRay {KUBERAY_VERSION} CRDs in {crds_dir}: run `{FETCH_CRDS_COMMAND}` (builds the stack's Kubernetes parts, "
        f"the operator's CRDs included; minutes cold, instant once built), or, for the CRDs alone, set {CRDS_DIR_ENV} "
        f"(or --crds-dir) to <Dir>/config/crd/bases, Dir as printed by `go mod download -json {KUBERAY_MODULE}@{KUBERAY_VERSION}`"
    )


def k8s_tools_binary() -> Path:
    """Where ``stack/k8s-tools/build`` puts the binary (or ``$GH_K8S_TOOLS``)."""
    if os.environ.get(K8S_TOOLS_ENV):
        return Path(os.environ[K8S_TOOLS_ENV])
    return stack_cache_dir() / "bin" / "k8s-tools"


def render_overlay(directory: Path | str, *, binary: Path | None = None) -> str:
    """``kustomize build`` of ``directory`` as YAML, through k8s-tools."""
    tool = binary or k8s_tools_binary()
    if not tool.exists():
        raise FileNotFoundError(f"{tool} not found: run stack/k8s-tools/build (or use `kubectl kustomize {directory}`)")
    done = subprocess.run([str(tool), "render", str(directory)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"kustomize build {directory} failed: {done.stderr.strip()}")
    return done.stdout


def load_documents(text: str) -> list[dict[str, Any]]:
    """The objects of a YAML stream (empty documents skipped)."""
    return [doc for doc in yaml.safe_load_all(text) if isinstance(doc, dict)]


def overlay_dir(name_or_path: str) -> Path:
    """``dev`` -> ``kuberay/overlays/dev``; a path is taken as is."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    candidate = KUBERAY_DIR / "overlays" / name_or_path
    if candidate.is_dir():
        return candidate
    raise FileNotFoundError(f"no overlay {name_or_path!r} (known: {', '.join(OVERLAYS + MONITORED_OVERLAYS)}) and no such directory")


# --- RayJob runs -------------------------------------------------------------------------------


def rayjob_template(objects: Iterable[dict[str, Any]], job: str) -> dict[str, Any]:
    """The RayJob template of ``job`` (label ``greenhouse.io/job``) among rendered ``objects``."""
    for obj in objects:
        if obj.get("kind") == "RayJob" and (obj.get("metadata", {}).get("labels") or {}).get(JOB_LABEL) == job:
            return obj
    raise LookupError(f"no RayJob template labelled {JOB_LABEL}={job}")


def rayjob_run(
    template: dict[str, Any],
    name: str,
    *,
    entrypoint: str | None = None,
    extra_args: Iterable[str] = (),
    env_vars: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """A RayJob to create from ``template``: its own ``name``, not suspended, with ``extra_args``
    appended to (or ``entrypoint`` replacing) the template's entrypoint, and ``env_vars`` added to
    the job's runtime environment."""
    if not DNS1035.match(name) or len(name) > MAX_NAME["RayJob"]:
        raise ValueError(f"RayJob name {name!r} must be a DNS-1035 label of at most {MAX_NAME['RayJob']} characters")
    run = copy.deepcopy(template)
    old_meta = run.get("metadata") or {}
    meta: dict[str, Any] = {"name": name, "labels": {**(old_meta.get("labels") or {}), RUN_OF_LABEL: old_meta.get("name", ""), **(labels or {})}}
    if namespace or old_meta.get("namespace"):
        meta["namespace"] = namespace or old_meta["namespace"]
    if old_meta.get("annotations"):
        meta["annotations"] = dict(old_meta["annotations"])
    run["metadata"] = meta
    run.pop("status", None)
    spec = run.setdefault("spec", {})
    spec["suspend"] = False
    command = entrypoint if entrypoint is not None else spec.get("entrypoint", "")
    extra = list(extra_args)
    if extra:
        command = " ".join([command, *(shlex.quote(a) for a in extra)])
    spec["entrypoint"] = command
    if env_vars:
        runtime_env = yaml.safe_load(spec.get("runtimeEnvYAML") or "") or {}
        runtime_env.setdefault("env_vars", {}).update({k: str(v) for k, v in env_vars.items()})
        spec["runtimeEnvYAML"] = yaml.safe_dump(runtime_env, sort_keys=True)
    return run


# --- checks --------------------------------------------------------------------------------------


def load_crd_schemas(crds_dir: Path) -> dict[str, dict[str, Any]]:
    """kind -> the ``v1`` ``openAPIV3Schema`` of each KubeRay CRD in ``crds_dir``."""
    schemas: dict[str, dict[str, Any]] = {}
    for path in sorted(crds_dir.glob("ray.io_*.yaml")):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            if version["name"] == "v1":
                schemas[crd["spec"]["names"]["kind"]] = version["schema"]["openAPIV3Schema"]
    return schemas


def crd_errors(obj: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Schema violations (jsonschema Draft 7) and fields the API server would silently prune."""
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(obj)]
    errors += [f"{path}: unknown field (the API server would drop it)" for path in unknown_fields(obj, schema)]
    return errors


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "") -> Iterator[str]:
    """Paths in ``value`` that a structural schema does not declare (what pruning would remove)."""
    if not isinstance(schema, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            child = f"{path}/{key}"
            if props is not None and key in props:
                yield from unknown_fields(item, props[key], child)
            elif isinstance(extra, dict):
                yield from unknown_fields(item, extra, child)
            elif props is not None and not (path == "" and key in ("apiVersion", "kind", "metadata")):
                yield child
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            yield from unknown_fields(item, schema["items"], f"{path}/{i}")


def operator_rule_errors(obj: dict[str, Any]) -> list[str]:
    """A subset of what the KubeRay operator itself refuses (``validation.go``) and a CRD schema
    cannot say: names, RayJob cluster mode, deletion and deadline rules, rayStartParams types."""
    kind = obj.get("kind", "")
    name = obj.get("metadata", {}).get("name", "")
    spec = obj.get("spec") or {}
    errors: list[str] = []
    if kind in MAX_NAME and (len(name) > MAX_NAME[kind] or not DNS1035.match(name)):
        errors.append(f"name {name!r} must be a DNS-1035 label of at most {MAX_NAME[kind]} characters")
    if kind == "RayJob":
        selector = spec.get("clusterSelector") or {}
        if bool(selector) == bool(spec.get("rayClusterSpec")):
            errors.append("exactly one of rayClusterSpec and clusterSelector must be set")
        if selector:
            if not selector.get("ray.io/cluster"):
                errors.append("clusterSelector needs a ray.io/cluster name")
            if spec.get("backoffLimit", 0) > 0:
                errors.append("backoffLimit is incompatible with clusterSelector")
            if spec.get("suspend"):
                errors.append("a clusterSelector RayJob cannot be suspended")
        if spec.get("suspend") and not spec.get("shutdownAfterJobFinishes"):
            errors.append("a suspended RayJob needs shutdownAfterJobFinishes: true")
        if not spec.get("shutdownAfterJobFinishes") and spec.get("ttlSecondsAfterFinished", 0) > 0:
            errors.append("ttlSecondsAfterFinished needs shutdownAfterJobFinishes: true")
        if "activeDeadlineSeconds" in spec and spec["activeDeadlineSeconds"] <= 0:
            errors.append("activeDeadlineSeconds must be positive")
        if not str(spec.get("entrypoint", "")).strip():
            errors.append("entrypoint is empty")
    for label, cluster in _cluster_specs(obj):
        groups = cluster.get("workerGroupSpecs") or []
        for group in groups:
            lo, hi, n = group.get("minReplicas", 0), group.get("maxReplicas", 0), group.get("replicas", group.get("minReplicas", 0))
            if not lo <= hi:
                errors.append(f"{label} worker group {group.get('groupName')}: minReplicas {lo} > maxReplicas {hi}")
            if not lo <= n <= hi and not cluster.get("enableInTreeAutoscaling"):
                errors.append(f"{label} worker group {group.get('groupName')}: replicas {n} outside [{lo}, {hi}]")
        if len({g.get("groupName") for g in groups}) != len(groups):
            errors.append(f"{label}: worker group names must be unique")
    return errors


def _cluster_specs(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    spec = obj.get("spec") or {}
    kind, name = obj.get("kind"), obj.get("metadata", {}).get("name", "")
    if kind == "RayCluster":
        return [(f"RayCluster {name}", spec)]
    if kind == "RayJob" and spec.get("rayClusterSpec"):
        return [(f"RayJob {name}", spec["rayClusterSpec"])]
    if kind == "RayService" and spec.get("rayClusterConfig"):
        return [(f"RayService {name}", spec["rayClusterConfig"])]
    return []


def containers(obj: Any) -> Iterator[dict[str, Any]]:
    """Every container (and init container) anywhere in ``obj`` (pod templates inside CRs too)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from (c for c in value if isinstance(c, dict))
            else:
                yield from containers(value)
    elif isinstance(obj, list):
        for item in obj:
            yield from containers(item)


def settings_env_names() -> set[str]:
    """Every environment variable the product's ``Settings`` reads (``GH_`` + ``__`` nesting)."""
    from pydantic import BaseModel

    from app.config import Settings

    names: set[str] = set()

    def walk(model: type[BaseModel], prefix: str) -> None:
        for field_name, info in model.model_fields.items():
            env = f"{prefix}{field_name.upper()}"
            names.add(env)
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{env}__")

    walk(Settings, Settings.model_config.get("env_prefix", "GH_"))
    return names


def env_var_names(objects: list[dict[str, Any]]) -> dict[str, list[str]]:
    """env var -> where it is set: container ``env`` entries, and the keys of ConfigMaps/Secrets
    that containers load whole through ``envFrom``."""
    found: dict[str, list[str]] = {}
    by_name = {(o.get("kind"), o.get("metadata", {}).get("name")): o for o in objects}
    for obj in objects:
        where = f"{obj.get('kind')} {obj.get('metadata', {}).get('name')}"
        for c in containers(obj):
            for entry in c.get("env") or []:
                found.setdefault(entry["name"], []).append(f"{where} container {c.get('name')}")
            for source in c.get("envFrom") or []:
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    ref = source.get(key)
                    if not ref:
                        continue
                    target = by_name.get((kind, ref.get("name")))
                    if target is None:
                        continue  # created out of band: nothing to check here
                    prefix = source.get("prefix", "")
                    for data_key in [*(target.get("data") or {}), *(target.get("stringData") or {})]:
                        found.setdefault(prefix + data_key, []).append(f"{where} via {kind} {ref.get('name')}")
    return found


def env_var_errors(objects: list[dict[str, Any]]) -> list[str]:
    """Env vars set by the manifests that map to no Settings field and are not Ray's own."""
    known = settings_env_names()
    return [
        f"{var} (set in {', '.join(sorted(set(where)))}) is not a Settings field nor a known Ray variable"
        for var, where in sorted(env_var_names(objects).items())
        if var.upper() not in known and var not in KNOWN_RAY_ENV
    ]


def entrypoint_modules(objects: list[dict[str, Any]]) -> dict[str, str]:
    """RayJob name -> the module its entrypoint runs (``python -m <module>``)."""
    modules: dict[str, str] = {}
    for obj in objects:
        if obj.get("kind") != "RayJob":
            continue
        words = shlex.split(obj.get("spec", {}).get("entrypoint", ""))
        module = words[words.index("-m") + 1] if "-m" in words[:-1] else ""
        modules[obj["metadata"]["name"]] = module
    return modules


def entrypoint_errors(objects: list[dict[str, Any]]) -> list[str]:
    """RayJobs whose entrypoint is not ``python -m <module>`` of a registered job
    (:data:`app.orchestration.registry.JOBS`), or not of the job their label names."""
    labels = {o["metadata"]["name"]: (o["metadata"].get("labels") or {}).get(JOB_LABEL) for o in objects if o.get("kind") == "RayJob"}
    errors = []
    for name, module in entrypoint_modules(objects).items():
        spec = job_of_module(module)
        if spec is None:
            errors.append(f"RayJob {name}: entrypoint module {module or '(none)'} is no registered job's (python -m jobs.<name>)")
        elif labels.get(name) not in (None, spec.name):
            errors.append(f"RayJob {name}: labelled {JOB_LABEL}={labels[name]} but runs {module} (job {spec.name})")
    return errors


def pyproject_ray_version(pyproject: Path = REPO_ROOT / "pyproject.toml") -> str:
    """The pinned Ray version of the project (``ray[...]==X.Y.Z``)."""
    import tomllib

    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    for dep in deps:
        match = re.match(r"^ray(\[[^\]]*\])?==([0-9][0-9.]*)$", dep.replace(" ", ""))
        if match:
            return match.group(2)
    raise LookupError("pyproject.toml pins no ray version")


def ray_version_errors(objects: list[dict[str, Any]], version: str, dockerfile: Path = REPO_ROOT / "Dockerfile") -> list[str]:
    """Places that name another Ray version than ``version``: rayVersion fields, image tags (ours
    carry ``ray<version>``, Ray's own ``rayproject/ray:<version>``) and the Dockerfile's base."""
    errors = []
    for obj in objects:
        where = f"{obj.get('kind')} {obj.get('metadata', {}).get('name')}"
        for label, cluster in _cluster_specs(obj):
            if str(cluster.get("rayVersion", "")) != version:
                errors.append(f"{label}: rayVersion {cluster.get('rayVersion')!r} != {version}")
        for c in containers(obj):
            image = c.get("image", "")
            tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
            ours = re.search(r"ray(\d+\.\d+\.\d+)", tag)
            if image.startswith("rayproject/ray:"):
                if not tag.startswith(version):
                    errors.append(f"{where}: image {image} is not Ray {version}")
            elif not ours or ours.group(1) != version:
                errors.append(f"{where}: image {image!r} does not carry ray{version} in its tag")
    base = re.search(r"^FROM\s+rayproject/ray:(\S+)", dockerfile.read_text(), re.M) if dockerfile.exists() else None
    if not base or not base.group(1).startswith(f"{version}-") and base.group(1) != version:
        errors.append(f"Dockerfile: base image is not rayproject/ray:{version}-...")
    return errors
