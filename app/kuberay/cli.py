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

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(
    name="kuberay",
    help="KubeRay manifests (kuberay/) and resources: render, apply, submit RayJobs, status, delete.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

NamespaceOpt = typer.Option("greenhouse", "--namespace", "-n", envvar="GH_KUBERAY_NAMESPACE", help="Kubernetes namespace.")
ServerOpt = typer.Option(None, "--server", help="API server URL (skips kubeconfig), e.g. kubectl proxy's http://127.0.0.1:8001.")
TokenOpt = typer.Option(None, "--token", envvar="GH_KUBERAY_TOKEN", help="Bearer token for --server.")
KubeconfigOpt = typer.Option(None, "--kubeconfig", envvar="KUBECONFIG", help="kubeconfig file.")
ContextOpt = typer.Option(None, "--context", help="kubeconfig context.")
KINDS = {"rayjob": "RayJob", "rayservice": "RayService", "raycluster": "RayCluster"}


def _client(namespace: str, server: Optional[str], token: Optional[str], kubeconfig: Optional[str], context: Optional[str]):
    from app.kuberay.client import KubeRayClient, KubeTarget

    try:
        return KubeRayClient.connect(KubeTarget(namespace=namespace, kubeconfig=kubeconfig, context=context, server=server, token=token))
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
    overlay: Optional[str] = typer.Option(None, "--overlay", "-o", help="Also print this overlay rendered (dev, prod or a directory)."),
    check: bool = typer.Option(False, "--check", help="Only check that kuberay/base/serve-config.yaml is current (exit 1 if stale)."),
    validate: bool = typer.Option(False, "--validate", help="Validate the overlays (or --overlay) offline: CRD schemas, operator rules, env vars, entrypoints, Ray version."),
    crds_dir: Optional[Path] = typer.Option(None, "--crds-dir", help="KubeRay CRDs (default $GH_KUBERAY_CRDS_DIR or ../shared/kuberay/crds)."),
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
        if not crds.is_dir():
            console.print(f"[red]error:[/red] no KubeRay CRDs in {crds} (set --crds-dir or GH_KUBERAY_CRDS_DIR)")
            raise typer.Exit(2)
        problems = validate_overlays([overlay] if overlay else list(manifests.OVERLAYS), crds)
        for problem in problems:
            console.print(f"[red]-[/red] {problem}", highlight=False)
        console.print(f"{len(problems)} problem(s)")
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
def apply(
    source: str = typer.Argument(..., help="Overlay (dev, prod, a directory) or a rendered YAML file."),
    namespace: str = NamespaceOpt,
    server: Optional[str] = ServerOpt,
    token: Optional[str] = TokenOpt,
    kubeconfig: Optional[str] = KubeconfigOpt,
    context: Optional[str] = ContextOpt,
) -> None:
    """Create every object of an overlay, or update it: RayService/RayCluster specs are replaced (a new
    serveConfigV2 rolls out in place); existing RayJobs are left alone. Like `kubectl apply -k`."""
    from app.kuberay.client import KubeRayError

    objects = _objects(source)
    with _client(namespace, server, token, kubeconfig, context) as client:
        for obj in objects:
            if obj.get("kind") != "Namespace":
                obj.setdefault("metadata", {}).setdefault("namespace", namespace)
            try:
                action = client.apply(obj)
            except KubeRayError as exc:
                console.print(f"[red]error:[/red] {escape(str(exc))}")
                raise typer.Exit(1) from None
            print(f"{obj['kind'].lower()}/{obj['metadata']['name']} {action}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def submit(
    ctx: typer.Context,
    job: str = typer.Argument(..., help="sink, preprocess, train, tune or promote (its RayJob template)."),
    source: str = typer.Option("prod", "--overlay", "-o", help="Overlay or rendered YAML file with the RayJob templates."),
    name: Optional[str] = typer.Option(None, "--name", help="RayJob name (default greenhouse-<job>-<random>); the same name never runs twice."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for the job to finish."),
    timeout_s: float = typer.Option(7200, help="Give up waiting after this long."),
    namespace: str = NamespaceOpt,
    server: Optional[str] = ServerOpt,
    token: Optional[str] = TokenOpt,
    kubeconfig: Optional[str] = KubeconfigOpt,
    context: Optional[str] = ContextOpt,
) -> None:
    """Run a job as a RayJob made from its template (extra arguments go to the job's entrypoint)."""
    import uuid

    from app.kuberay.manifests import rayjob_run, rayjob_template

    try:
        template = rayjob_template(_objects(source), job)
        run = rayjob_run(template, name or f"greenhouse-{job}-{uuid.uuid4().hex[:6]}", extra_args=ctx.args, namespace=namespace)
    except (LookupError, ValueError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    with _client(namespace, server, token, kubeconfig, context) as client:
        created = client.create(run)
        rj = run["metadata"]["name"]
        console.print(f"rayjob/{rj} {'created' if created.created else 'already exists'}: {run['spec']['entrypoint']}", highlight=False)
        if not wait:
            return
        status = client.wait_rayjob(rj, timeout_s=timeout_s, on_status=lambda s: console.print(f"  {rj}: {s.describe()}", highlight=False))
    print(json.dumps({"rayjob": rj, "deployment_status": status.deployment_status, "job_status": status.job_status, "job_id": status.job_id}))
    if not status.succeeded:
        raise typer.Exit(1)


@app.command()
def status(
    kind: Optional[str] = typer.Argument(None, help="rayjob, rayservice or raycluster (default: all)."),
    name: Optional[str] = typer.Argument(None, help="One object: print its status as JSON."),
    wait: bool = typer.Option(False, "--wait", help="With a RayJob name: wait until it is finished."),
    timeout_s: float = typer.Option(7200, help="With --wait: give up after this long."),
    namespace: str = NamespaceOpt,
    server: Optional[str] = ServerOpt,
    token: Optional[str] = TokenOpt,
    kubeconfig: Optional[str] = KubeconfigOpt,
    context: Optional[str] = ContextOpt,
) -> None:
    """State of the KubeRay resources in the namespace."""
    kinds = [_kind(kind)] if kind else list(KINDS.values())
    with _client(namespace, server, token, kubeconfig, context) as client:
        if name:
            if wait and kinds[0] == "RayJob":
                st = client.wait_rayjob(name, timeout_s=timeout_s, on_status=lambda s: console.print(f"  {name}: {s.describe()}", highlight=False))
                print(json.dumps({"name": name, "jobDeploymentStatus": st.deployment_status, "jobStatus": st.job_status, "jobId": st.job_id}))
                raise typer.Exit(0 if st.succeeded else 1)
            obj = client.get(kinds[0], name)
            if obj is None:
                console.print(f"[red]error:[/red] {kinds[0]} {name} not found in {namespace}")
                raise typer.Exit(1)
            print(json.dumps(obj.get("status") or {}, indent=2))
            return
        table = Table(title=f"KubeRay resources in {namespace}")
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
def delete(
    kind: str = typer.Argument(..., help="rayjob, rayservice or raycluster."),
    name: str = typer.Argument(...),
    namespace: str = NamespaceOpt,
    server: Optional[str] = ServerOpt,
    token: Optional[str] = TokenOpt,
    kubeconfig: Optional[str] = KubeconfigOpt,
    context: Optional[str] = ContextOpt,
) -> None:
    """Delete a KubeRay resource (a RayJob's cluster and pods go with it)."""
    with _client(namespace, server, token, kubeconfig, context) as client:
        gone = client.delete(_kind(kind), name)
    print(f"{kind.lower()}/{name} {'deleted' if gone else 'not found'}")
