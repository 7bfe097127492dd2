"""``greenhouse kuberay ...``: the manifests under ``kuberay/`` and the KubeRay resources in a cluster.

    greenhouse kuberay render                    regenerate the RayService serveConfigV2 from serve_configs/
    greenhouse kuberay render --overlay prod     ... and print the rendered overlay (kustomize build)
    greenhouse kuberay render --check --validate check: generated file current, overlays valid
    greenhouse kuberay apply prod                create/update every object of the overlay
    greenhouse kuberay submit train -- --num-workers 4   a RayJob run from the train template; waits
    greenhouse kuberay status [rayjob NAME --wait]       RayClusters, RayJobs, RayServices and their state
    greenhouse kuberay delete rayjob NAME

Cluster access: ``$KUBECONFIG`` / ``~/.kube/config`` (``--context``), the pod's service account,
or ``--server URL`` (e.g. ``kubectl proxy``'s http://127.0.0.1:8001) with an optional ``--token``.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app.kuberay.client import KubeTarget
from app.orchestration.registry import JOBS

app = typer.Typer(
    name="kuberay", help="KubeRay manifests (kuberay/) and resources: render, apply, submit RayJobs, status, delete.", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False
)
console = Console(stderr=True)

KINDS = {"rayjob": "RayJob", "rayservice": "RayService", "raycluster": "RayCluster"}
_KW = inspect.Parameter.KEYWORD_ONLY
# The options of every command that talks to Kubernetes, written once (see kube_command).
CONNECTION_OPTIONS = (
    inspect.Parameter("namespace", _KW, annotation=str, default=typer.Option("greenhouse", "--namespace", "-n", envvar="GH_KUBERAY_NAMESPACE", help="Kubernetes namespace.")),
    inspect.Parameter("server", _KW, annotation=str | None, default=typer.Option(None, "--server", help="API server URL (skips kubeconfig), e.g. kubectl proxy's http://127.0.0.1:8001.")),
    inspect.Parameter("token", _KW, annotation=str | None, default=typer.Option(None, "--token", envvar="GH_KUBERAY_TOKEN", help="Bearer token for --server.")),
    inspect.Parameter("kubeconfig", _KW, annotation=str | None, default=typer.Option(None, "--kubeconfig", envvar="KUBECONFIG", help="kubeconfig file.")),
    inspect.Parameter("context", _KW, annotation=str | None, default=typer.Option(None, "--context", help="kubeconfig context.")),
)


def kube_command(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``command`` the connection options (``--namespace``, ``--server``, ``--token``,
    ``--kubeconfig``, ``--context``); it receives them as one keyword argument ``kube: KubeTarget``."""
    signature = inspect.signature(command)
    names = [p.name for p in CONNECTION_OPTIONS]

    @functools.wraps(command)
    def with_target(**kwargs: Any) -> Any:
        target = KubeTarget(**{name: kwargs.pop(name) for name in names})
        return command(**kwargs, kube=target)

    own = [p for p in signature.parameters.values() if p.name != "kube"]
    with_target.__signature__ = signature.replace(parameters=[*own, *CONNECTION_OPTIONS])  # type: ignore[attr-defined]
    return with_target


def _client(target: KubeTarget):
    from app.kuberay.client import KubeRayClient

    try:
        return KubeRayClient.connect(target)
    except Exception as exc:  # no kubeconfig, bad context, ...
        console.print(f"[red]error:[/red] cannot reach Kubernetes: {type(exc).__name__}: {escape(str(exc))}")
        raise typer.Exit(2) from None


def _objects(source: str) -> list[dict[str, Any]]:
    """Objects of an overlay name/directory (rendered) or of a YAML file."""
    from app.kuberay.manifests import load_documents, overlay_dir, render_overlay

    path = Path(source)
    try:
        if path.is_file():
            return load_documents(path.read_text())
        return load_documents(render_overlay(overlay_dir(source)))
    except (FileNotFoundError, RuntimeError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None


def _kind(kind: str) -> str:
    if kind.lower() not in KINDS:
        console.print(f"[red]error:[/red] kind must be one of {', '.join(KINDS)}")
        raise typer.Exit(2)
    return KINDS[kind.lower()]


@app.command()
def render(
    overlay: str | None = typer.Option(None, "--overlay", "-o", help="Also print this overlay rendered (dev, prod or a directory)."),
    check: bool = typer.Option(False, "--check", help="Only check that kuberay/base/serve-config.yaml is current (exit 1 if stale)."),
    validate: bool = typer.Option(False, "--validate", help="Validate the overlays (or --overlay) offline: CRD schemas, operator rules, env vars, entrypoints, Ray version."),
    crds_dir: Path | None = typer.Option(None, "--crds-dir", help="KubeRay CRDs (default $GH_KUBERAY_CRDS_DIR, else those of the targeted KubeRay version that stack/kube/build caches)."),
) -> None:
    """Generate the RayService serveConfigV2 from serve_configs/ (one source of truth) and render overlays."""
    from app.kuberay import manifests
    from app.kuberay.render import main as render_main

    code = render_main(["--check"] if check else [])
    if code:
        raise typer.Exit(code)
    if overlay and not validate:
        sys.stdout.write(manifests.render_overlay(manifests.overlay_dir(overlay)))
    if validate:
        crds = crds_dir or manifests.default_crds_dir()
        if not (crds / "ray.io_rayjobs.yaml").is_file():
            console.print(f"[red]error:[/red] {escape(manifests.missing_crds_message(crds))}", highlight=False)
            raise typer.Exit(2)
        overlays = [overlay] if overlay else [*manifests.OVERLAYS, *manifests.MONITORED_OVERLAYS]
        problems = validate_overlays(overlays, crds)
        for problem in problems:
            console.print(f"[red]-[/red] {problem}", highlight=False)
        console.print(f"{len(problems)} problem(s) in {', '.join(overlays)} (KubeRay CRDs: {crds})", highlight=False)
        if problems:
            raise typer.Exit(1)


def validate_overlays(overlays: list[str], crds_dir: Path) -> list[str]:
    """Every offline check of :mod:`app.kuberay.manifests` over the rendered ``overlays``."""
    from app.kuberay import manifests
    from app.kuberay.render import serve_config_v2_text

    schemas = manifests.load_crd_schemas(crds_dir)
    version = manifests.pyproject_ray_version()
    expected_serve = serve_config_v2_text()
    problems: list[str] = []
    for name in overlays:
        objects = manifests.load_documents(manifests.render_overlay(manifests.overlay_dir(name)))
        for obj in objects:
            where = f"{name}: {obj.get('kind')} {obj.get('metadata', {}).get('name')}"
            if obj.get("kind") in schemas:
                problems += [f"{where}: {e}" for e in manifests.crd_errors(obj, schemas[obj["kind"]])]
            problems += [f"{where}: {e}" for e in manifests.operator_rule_errors(obj)]
            if obj.get("kind") == "RayService" and obj["spec"].get("serveConfigV2") != expected_serve:
                problems.append(f"{where}: serveConfigV2 differs from what serve_configs/ gives")
        problems += [f"{name}: {e}" for e in manifests.env_var_errors(objects)]
        problems += [f"{name}: {e}" for e in manifests.entrypoint_errors(objects)]
        problems += [f"{name}: {e}" for e in manifests.ray_version_errors(objects, version)]
    return problems


@app.command()
@kube_command
def apply(source: str = typer.Argument(..., help="Overlay (dev, prod, a directory) or a rendered YAML file."), *, kube: KubeTarget) -> None:
    """Create every object of an overlay, or update it: RayService/RayCluster specs are replaced (a new
    serveConfigV2 rolls out in place); existing RayJobs are left alone. Like `kubectl apply -k`."""
    from app.kuberay.client import KubeRayError

    objects = _objects(source)
    with _client(kube) as client:
        for obj in objects:
            if obj.get("kind") != "Namespace":
                obj.setdefault("metadata", {}).setdefault("namespace", kube.namespace)
            try:
                action = client.apply(obj)
            except KubeRayError as exc:
                console.print(f"[red]error:[/red] {escape(str(exc))}")
                raise typer.Exit(1) from None
            print(f"{obj['kind'].lower()}/{obj['metadata']['name']} {action}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@kube_command
def submit(
    ctx: typer.Context,
    job: str = typer.Argument(..., help=f"One of: {', '.join(JOBS)} (its RayJob template)."),
    source: str = typer.Option("prod", "--overlay", "-o", help="Overlay or rendered YAML file with the RayJob templates."),
    name: str | None = typer.Option(None, "--name", help="RayJob name (default greenhouse-<job>-<random>); the same name never runs twice."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for the job to finish."),
    timeout_s: float = typer.Option(7200, help="Give up waiting after this long."),
    *,
    kube: KubeTarget,
) -> None:
    """Run a job as a RayJob made from its template (extra arguments go to the job's entrypoint)."""
    import uuid

    from app.kuberay.runner import KubeRayRunner
    from app.orchestration.runner import JobRequest

    request = JobRequest(job, name or f"greenhouse-{job.replace('_', '-')}-{uuid.uuid4().hex[:6]}", tuple(ctx.args))  # a Kubernetes name: no underscores
    objects = _objects(source)
    with _client(kube) as client:
        runner = KubeRayRunner(client, objects, fetch_logs=False)
        try:
            submission = runner.submit(request)
        except (LookupError, ValueError) as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(2) from None
        except Exception as exc:  # the API server refused or cannot be reached
            console.print(f"[red]error:[/red] creating the RayJob failed: {type(exc).__name__}: {escape(str(exc))}")
            raise typer.Exit(1) from None
        rj = submission.submission_id
        console.print(f"rayjob/{rj} {'created' if submission.submitted else 'already exists'}: {submission.entrypoint}", highlight=False, markup=False)
        if not wait:
            return
        detail = _wait_rayjob(runner, rj, timeout_s)
    print(json.dumps({"rayjob": rj, "deployment_status": detail["deployment_status"], "job_status": detail["job_status"], "job_id": detail["job_id"]}))
    if not detail["ok"]:
        raise typer.Exit(1)


def _wait_rayjob(runner: Any, name: str, timeout_s: float) -> dict[str, Any]:
    """Wait for RayJob ``name`` through ``runner`` showing its changes; its status fields and ``ok``."""
    from app.orchestration.runner import Submission

    result = runner.wait(Submission(name, False), timeout_s=timeout_s, on_status=lambda s: console.print(f"  {name}: {s}", highlight=False, markup=False))
    return {**result.detail, "ok": result.ok}


@app.command()
@kube_command
def status(
    kind: str | None = typer.Argument(None, help="rayjob, rayservice or raycluster (default: all)."),
    name: str | None = typer.Argument(None, help="One object: print its status as JSON."),
    wait: bool = typer.Option(False, "--wait", help="With a RayJob name: wait until it is finished."),
    timeout_s: float = typer.Option(7200, help="With --wait: give up after this long."),
    *,
    kube: KubeTarget,
) -> None:
    """State of the KubeRay resources in the namespace."""
    from app.kuberay.runner import KubeRayRunner

    kinds = [_kind(kind)] if kind else list(KINDS.values())
    with _client(kube) as client:
        if name:
            if wait and kinds[0] == "RayJob":
                d = _wait_rayjob(KubeRayRunner(client, fetch_logs=False), name, timeout_s)
                print(json.dumps({"name": name, "jobDeploymentStatus": d["deployment_status"], "jobStatus": d["job_status"], "jobId": d["job_id"]}))
                raise typer.Exit(0 if d["ok"] else 1)
            obj = client.get(kinds[0], name)
            if obj is None:
                console.print(f"[red]error:[/red] {kinds[0]} {name} not found in {kube.namespace}")
                raise typer.Exit(1)
            print(json.dumps(obj.get("status") or {}, indent=2))
            return
        table = Table(title=f"KubeRay resources in {kube.namespace}")
        for col in ("kind", "name", "state", "detail"):
            table.add_column(col)
        for k in kinds:
            for obj in client.list(k):
                state, detail = _state(k, obj)
                table.add_row(k, obj["metadata"]["name"], state, detail)
    Console().print(table)


def _state(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    st = obj.get("status") or {}
    if kind == "RayJob":
        return f"{st.get('jobDeploymentStatus', '') or ('Suspended' if obj.get('spec', {}).get('suspend') else 'Pending')}", f"job {st.get('jobStatus', '-')} {st.get('message', '')}".strip()
    if kind == "RayService":
        ready = next((c.get("status") for c in st.get("conditions") or [] if c.get("type") == "Ready"), None)
        return ("Ready" if ready == "True" else st.get("serviceStatus") or "NotReady"), f"endpoints {st.get('numServeEndpoints', 0)}"
    return st.get("state", "") or "-", f"workers {st.get('readyWorkerReplicas', 0)}/{st.get('desiredWorkerReplicas', 0)}"


@app.command()
@kube_command
def delete(kind: str = typer.Argument(..., help="rayjob, rayservice or raycluster."), name: str = typer.Argument(...), *, kube: KubeTarget) -> None:
    """Delete a KubeRay resource (a RayJob's cluster and pods go with it)."""
    with _client(kube) as client:
        gone = client.delete(_kind(kind), name)
    print(f"{kind.lower()}/{name} {'deleted' if gone else 'not found'}")
