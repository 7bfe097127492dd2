"""The Serve process settings: HAProxy ingress, and side ports that never collide on one machine."""

import os
import socket

from app.serve.tuning import HAPROXY_PORT_ENV, LOCAL_DRAIN_ENV, PORTS_CHOSEN_BY_ENV, apply_serve_process_env


def test_defaults_turn_on_throughput_mode_and_haproxy_with_free_side_ports():
    env: dict[str, str] = {}
    shown = apply_serve_process_env(env)
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1" and env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    ports = [int(env[name]) for name in HAPROXY_PORT_ENV]
    assert len(set(ports)) == 2 and all(1024 < p < 65536 for p in ports)
    for port in ports:  # still free: Ray's HAProxy can bind them
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
    assert env[LOCAL_DRAIN_ENV] == "3" and env[PORTS_CHOSEN_BY_ENV] == str(os.getpid())
    assert shown == {name: env[name] for name in shown} and set(HAPROXY_PORT_ENV) <= set(shown)


def test_values_already_set_win():
    env = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_HAPROXY_STATS_PORT": "18404", "RAY_SERVE_HAPROXY_METRICS_PORT": "19101", LOCAL_DRAIN_ENV: "30"}
    apply_serve_process_env(env)
    assert (env["RAY_SERVE_HAPROXY_STATS_PORT"], env["RAY_SERVE_HAPROXY_METRICS_PORT"], env[LOCAL_DRAIN_ENV]) == ("18404", "19101", "30")
    again = dict(env)
    apply_serve_process_env(again)  # idempotent in one process
    assert again == env


def test_a_child_process_chooses_its_own_side_ports():
    parent = {}
    apply_serve_process_env(parent)
    child = {**parent, PORTS_CHOSEN_BY_ENV: str(os.getpid() + 1)}  # as inherited from another process
    apply_serve_process_env(child)
    assert {child[n] for n in HAPROXY_PORT_ENV}.isdisjoint({parent[n] for n in HAPROXY_PORT_ENV})
    assert child[PORTS_CHOSEN_BY_ENV] == str(os.getpid())


def test_serve_proxy_mode_and_remote_clusters_get_no_side_ports():
    proxy = {"RAY_SERVE_ENABLE_HA_PROXY": "0"}
    assert apply_serve_process_env(proxy) == {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "0"}
    remote: dict[str, str] = {}
    apply_serve_process_env(remote, local=False)
    assert not set(HAPROXY_PORT_ENV) & set(remote) and LOCAL_DRAIN_ENV not in remote
