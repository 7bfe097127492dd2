"""A multi-node Ray cluster on this machine for tests: a head and worker nodes, each its own
``ray start`` in its own session, so that one node can be killed as a machine would die.

Why not ``ray.cluster_utils.Cluster`` (what Ray's own tests use): it starts every node's raylet as a
child of the test process with the test process's environment, through Ray's private ``Node``
class. Here each node is what production runs, ``ray start`` (head, then ``--address`` for
workers), with an environment of its own: Serve's HAProxy and throughput mode in every process
(:func:`app.serve.tuning.apply_serve_process_env`), and per node the ports HAProxy must not share
on one machine (stats, metrics, and on workers the proxy's HTTP port). ``ray start`` daemonizes
and prints no pid, so each one runs under ``setsid``: the session id is the node's handle, and
every process of the node (raylet, agents, workers, HAProxy) carries it. Killing a node is
SIGKILL to that session, as a machine that loses power; nothing else on the machine is touched
(never ``ray stop``: it stops every Ray process of the user, other engineers' clusters too).

Each node has the custom resource ``gh-<name>: 1`` (``gh-head``, ``gh-worker-1``, ...), and each
worker ``gh-worker: 1``, so a test can pin work to one node or spread one replica per worker.

Two things differ from separate machines, and are handled here:
- Addresses. ``ray start --address`` maps a loopback address to the machine's own address (and
  refuses to join at all under ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, what keeps the stack's
  single head on 127.0.0.1), so the nodes listen on the machine's address, as Ray's own multi-node
  setups do; token auth (a token of the cluster's own, 0600) guards them. The dashboard and
  Serve's ports stay on 127.0.0.1.
- Drivers. A driver's ``ray.init()`` joins a raylet of its machine, and of several raylets on one
  address picks the head's. Each node's processes get ``GH_RAY_NODE_TEMP_DIR``; a job's driver
  that passes it as ``ray.init(_temp_dir=...)`` joins the raylet of the node it runs on.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from app.serve.tuning import HAPROXY_PORT_ENV, PORTS_CHOSEN_BY_ENV, apply_serve_process_env

REPO = Path(__file__).resolve().parents[2]
RAY_BIN = Path(sys.executable).parent / "ray"
NODE_TEMP_DIR_ENV = "GH_RAY_NODE_TEMP_DIR"
WORKER_RESOURCE = "gh-worker"  # one per worker node: a replica asking for 1 lands on a worker of its own
# the stack head's client settings, and HAProxy ports a cluster of this process chose: not this cluster's
_DROPPED_ENV = ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN", "RAY_API_SERVER_ADDRESS", PORTS_CHOSEN_BY_ENV, *HAPROXY_PORT_ENV)


def quiet_port() -> int:
    """A TCP port free now on every address, from 20000-32767: below the kernel's ephemeral range
    (where Ray's own gRPC servers and every client socket on the machine take theirs, so a port
    found free there at start may be taken by the time Serve starts HAProxy on it) and above Ray's
    worker ports (10002-19999)."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, 32768)
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        return port
    raise OSError("no free port in 20000-32767")


def node_resource(name: str) -> str:
    """The custom resource only node ``name`` has (``gh-head``, ``gh-worker-1``)."""
    return f"gh-{name}"


def session_pids(sid: int) -> list[int]:
    """Live processes of a session (a node started under ``setsid``)."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, session, ...
        if fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(entry.name))
    return pids


@dataclass
class RayNode:
    """One ``ray start`` of the cluster."""

    name: str
    sid: int  # the session every process of this node belongs to
    temp_dir: Path
    resources: dict[str, float]
    env: dict[str, str] = field(repr=False)
    serve_http_port: int | None = None  # workers: where this node's HAProxy listens

    def pids(self) -> list[int]:
        return session_pids(self.sid)

    def alive(self) -> bool:
        return bool(self.pids())

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Signal every process of the node (SIGKILL: the machine died). Returns how many."""
        pids = self.pids()
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        return len(pids)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the node's raylet log (for failure messages)."""
        found = sorted(self.temp_dir.glob("session_*/logs/raylet*.out"))
        if not found:
            return f"(no raylet log under {self.temp_dir})"
        return "\n".join(found[-1].read_text(errors="replace").splitlines()[-lines:])


class LocalRayCluster:
    """A Ray head and ``workers`` worker nodes on 127.0.0.1, on free ports.

    ``start()`` returns once every node is alive in the GCS; ``kill_node(name)`` kills one;
    ``add_worker()`` joins a new one; ``stop()`` kills them all and removes the temp dirs.
    """

    def __init__(self, *, workers: int = 2, head_cpus: float = 1, worker_cpus: float = 1, object_store_bytes: int = 100 * 1024**2, start_timeout_s: float = 120) -> None:
        self.worker_count = workers
        self.head_cpus = head_cpus
        self.worker_cpus = worker_cpus
        self.object_store_bytes = object_store_bytes
        self.start_timeout_s = start_timeout_s
        # short: Ray's unix socket paths must stay under 107 characters
        self.root = Path(tempfile.mkdtemp(prefix="rgh-", dir="/tmp"))
        self.gcs_port = quiet_port()
        self.dashboard_port = quiet_port()
        self.serve_http_port = quiet_port()  # the head's HAProxy (Serve's http_options.port)
        self.nodes: dict[str, RayNode] = {}
        self.killed: set[str] = set()
        self.token_file = self.root / "token"
        self.token_file.write_text(secrets.token_hex(32))
        self.token_file.chmod(0o600)
        self._next_worker = 1

    # --- addresses ---
    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        """The head's dashboard: Jobs API, Serve REST API, state API."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def serve_url(self) -> str:
        """Serve's HTTP port on the head (HAProxy)."""
        return f"http://127.0.0.1:{self.serve_http_port}"

    def workers(self) -> list[RayNode]:
        return [n for n in self.nodes.values() if n.name != "head"]

    # --- lifecycle ---
    def start(self) -> LocalRayCluster:
        try:
            self._start_node("head")
            for _ in range(self.worker_count):  # one at a time: on 2 busy cores agents started together miss Ray's deadlines
                self._start_node(self._next_worker_name())
            self.wait_for_nodes(len(self.nodes))
        except BaseException:
            self.stop()
            raise
        return self

    def add_worker(self) -> RayNode:
        """Join a new worker node (``worker-<n>``) and wait until it is alive."""
        node = self._start_node(self._next_worker_name())
        self.wait_for_nodes(len(self.nodes) - len(self.killed))
        return node

    def _next_worker_name(self) -> str:
        name = f"worker-{self._next_worker}"
        self._next_worker += 1
        return name

    def kill_node(self, name: str) -> RayNode:
        """SIGKILL every process of node ``name`` (raylet, agents, its workers and replicas)."""
        node = self.nodes[name]
        self.killed.add(name)
        node.kill()
        deadline = time.monotonic() + 10
        while node.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        return node

    def stop(self) -> None:
        """Kill every node (workers first), then remove the cluster's temp dirs."""
        for node in sorted(self.nodes.values(), key=lambda n: n.name == "head"):
            node.kill(signal.SIGTERM)
        deadline = time.monotonic() + 15
        while any(n.alive() for n in self.nodes.values()) and time.monotonic() < deadline:
            time.sleep(0.2)
        for node in self.nodes.values():
            node.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalRayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- state ---
    @property
    def headers(self) -> dict[str, str]:
        """What every client of this cluster's dashboard sends (token auth)."""
        return {"Authorization": f"Bearer {self.token_file.read_text().strip()}"}

    def alive_nodes(self) -> list[dict]:
        """The GCS's alive nodes (state API): ``node_id``, ``resources_total``, ``is_head_node``."""
        r = httpx.get(f"{self.dashboard_url}/api/v0/nodes", params={"detail": "true", "limit": 100}, headers=self.headers, timeout=10)
        r.raise_for_status()
        return [n for n in r.json()["data"]["result"]["result"] if n["state"] == "ALIVE"]

    def node_ids(self) -> dict[str, str]:
        """Node name (``head``, ``worker-1``) -> Ray node id, for the nodes alive now."""
        ids = {}
        for n in self.alive_nodes():
            for name in self.nodes:
                if node_resource(name) in (n.get("resources_total") or {}):
                    ids[name] = n["node_id"]
        return ids

    def wait_for_nodes(self, count: int, timeout_s: float | None = None) -> None:
        """Until ``count`` nodes are alive in the GCS (a node's raylet registered)."""
        deadline = time.monotonic() + (timeout_s or self.start_timeout_s)
        last: Exception | None = None
        while time.monotonic() < deadline:
            dead = [n.name for n in self.nodes.values() if n.name not in self.killed and not n.alive()]
            if dead:
                raise RuntimeError(f"Ray node(s) {dead} exited while starting:\n" + "\n".join(self.nodes[d].log_tail() for d in dead))
            try:
                if len(self.alive_nodes()) >= count:
                    return
            except Exception as exc:  # the dashboard is not up yet
                last = exc
            time.sleep(1)
        raise TimeoutError(f"{count} Ray nodes not alive within the deadline (last error: {last!r})")

    # --- internals ---
    def _node_env(self, name: str) -> tuple[dict[str, str], int | None]:
        env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
        env["PATH"] = f"{RAY_BIN.parent}{os.pathsep}{env.get('PATH', '')}"  # `python` in job entrypoints: this venv's
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_file), RAY_USAGE_STATS_ENABLED="0")
        apply_serve_process_env(env)  # throughput mode + HAProxy
        env.update({name: str(quiet_port()) for name in HAPROXY_PORT_ENV})  # HAProxy's stats/metrics ports of this node
        http_port = None
        if name != "head":  # every node runs a HAProxy; on one machine each needs its own port
            http_port = quiet_port()
            env["RAY_SERVE_WORKER_PROXY_HTTP_PORT"] = str(http_port)
        return env, http_port

    def _start_node(self, name: str, attempts: int = 2) -> RayNode:
        """``ray start`` one node; a node whose start failed is killed and started once more (on a
        loaded machine a raylet can miss its agent's 15 s startup deadline)."""
        for attempt in range(1, attempts + 1):
            node, proc = self._launch(name, attempt)
            try:
                return self._await_start(node, proc)
            except (RuntimeError, TimeoutError):
                node.kill()
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def _launch(self, name: str, attempt: int = 1) -> tuple[RayNode, subprocess.Popen]:
        env, http_port = self._node_env(name)
        temp_dir = self.root / (name if attempt == 1 else f"{name}.{attempt}")
        temp_dir.mkdir(parents=True)
        # A driver's ray.init() joins the raylet of its machine, and of several raylets on one
        # address it takes the head's; `ray.init(_temp_dir=os.environ[NODE_TEMP_DIR_ENV])` in a
        # job's driver (its processes inherit this) joins its own node's, as on separate machines.
        env[NODE_TEMP_DIR_ENV] = str(temp_dir)
        resources = {node_resource(name): 1.0}
        if name == "head":
            cpus = self.head_cpus
            role = ["--head", f"--port={self.gcs_port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}", "--include-dashboard=true"]
        else:
            cpus = self.worker_cpus
            resources[WORKER_RESOURCE] = 1.0
            # Ray maps a loopback --address to this machine's own address, where the head listens
            role = [f"--address={self.gcs_address}"]
        cmd = [
            str(RAY_BIN),
            "start",
            *role,
            f"--temp-dir={temp_dir}",
            f"--num-cpus={cpus}",
            f"--resources={json.dumps(resources)}",
            f"--object-store-memory={self.object_store_bytes}",
            f"--dashboard-agent-listen-port={quiet_port()}",
            f"--metrics-export-port={quiet_port()}",
            "--disable-usage-stats",
        ]
        with (self.root / f"{name}.start.log").open("wb") as log:
            # setsid: `ray start` and the daemons it leaves behind share one session, the node's handle
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        node = RayNode(name, proc.pid, temp_dir, resources, env, http_port)
        self.nodes[name] = node
        return node, proc

    def _await_start(self, node: RayNode, proc: subprocess.Popen) -> RayNode:
        try:
            rc = proc.wait(timeout=self.start_timeout_s)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"`ray start` of {node.name} did not return within {self.start_timeout_s}s:\n{self._start_log(node.name)}") from None
        if rc != 0 or not node.alive():
            raise RuntimeError(f"`ray start` of {node.name} exited with {rc}:\n{self._start_log(node.name)}")
        return node

    def _start_log(self, name: str) -> str:
        return (self.root / f"{name}.start.log").read_text(errors="replace")[-3000:] + "\n" + self.nodes[name].log_tail()
