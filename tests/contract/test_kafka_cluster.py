"""Kafka as a cluster: topic layout from settings (replication factor, ``min.insync.replicas``) and a
broker killed mid-produce without losing an acknowledged record.

The settings tests need nothing. The layout test runs on the stack's Kafka in either mode. The
cluster tests need the stack's Kafka started as a cluster (``stack/stack up --kafka-brokers 3
kafka``, which exports ``GH_TEST_KAFKA_BROKERS=3``) and skip otherwise, also under CI: CI runs the
default single broker, the cluster is an option. A cluster that was asked for but does not answer
fails under CI like any missing engine.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from kafka.admin import ConfigResource, ConfigResourceType
from pydantic import ValidationError

from app.bus import BusError, OutgoingRecord, open_bus
from app.bus.kafka import KafkaBus
from app.config import Settings, TopicSettings
from tests.helpers.engines import STACK_SCRIPT, engine_url, stack_setting

# -- settings (no engine) ---------------------------------------------------------------------


def test_topic_layout_defaults_to_one_copy():
    topics = TopicSettings()
    assert (topics.replication_factor, topics.min_insync_replicas) == (1, 1)


def test_topic_layout_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GH_TOPICS__REPLICATION_FACTOR", "3")
    monkeypatch.setenv("GH_TOPICS__MIN_INSYNC_REPLICAS", "2")
    s = Settings(data_dir=tmp_path)
    assert (s.topics.replication_factor, s.topics.min_insync_replicas) == (3, 2)
    assert Settings.model_validate(s.for_replicas()).topics == s.topics


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"replication_factor": 2, "min_insync_replicas": 3}, "min_insync_replicas (3) is above replication_factor (2)"),
        ({"replication_factor": 0}, "greater than or equal to 1"),
        ({"min_insync_replicas": 0}, "greater than or equal to 1"),
        ({"min_insync_replicas": 2}, "min_insync_replicas (2) is above replication_factor (1)"),
    ],
)
def test_impossible_topic_layouts_are_refused(layout, message):
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TopicSettings(**layout)


def test_open_bus_hands_the_layout_to_kafka_and_the_embedded_bus_ignores_it(tmp_path):
    topics = TopicSettings(replication_factor=3, min_insync_replicas=2)
    bus = open_bus("kafka://127.0.0.1:1,127.0.0.2:1", topics=topics)  # opens nothing until used
    assert isinstance(bus, KafkaBus)
    assert (bus.replication_factor, bus.min_insync_replicas) == (3, 2)
    again = pickle.loads(pickle.dumps(bus))  # as shipped to Ray workers
    assert (again.replication_factor, again.min_insync_replicas, again._servers) == (3, 2, ["127.0.0.1:1", "127.0.0.2:1"])
    plain = open_bus("kafka://127.0.0.1:1")
    assert isinstance(plain, KafkaBus)
    assert (plain.replication_factor, plain.min_insync_replicas) == (None, None)  # the brokers' defaults
    embedded = open_bus(f"file://{tmp_path / 'bus'}", topics=topics)
    embedded.create_topic("t", 2)
    assert embedded.partitions_for("t") == 2
    embedded.close()


def test_kafka_bus_refuses_an_impossible_layout():
    with pytest.raises(ValueError, match="above replication_factor"):
        KafkaBus("kafka://127.0.0.1:1", replication_factor=1, min_insync_replicas=2)
    with pytest.raises(ValueError, match="must be >= 1"):
        KafkaBus("kafka://127.0.0.1:1", replication_factor=0)


def test_the_producer_compresses_with_the_settings_codec(monkeypatch, tmp_path):
    assert TopicSettings().compression == "zstd"
    monkeypatch.setenv("GH_TOPICS__COMPRESSION", "gzip")
    assert Settings(data_dir=tmp_path).topics.compression == "gzip"
    with pytest.raises(ValidationError):
        TopicSettings(compression="brotli")
    bus = open_bus("kafka://127.0.0.1:1", topics=TopicSettings(compression="gzip"))
    assert isinstance(bus, KafkaBus) and bus.compression == "gzip"
    assert pickle.loads(pickle.dumps(bus)).compression == "gzip"
    assert KafkaBus("kafka://127.0.0.1:1").compression == "zstd"
    with pytest.raises(ValueError, match="not one of"):
        KafkaBus("kafka://127.0.0.1:1", compression="brotli")


# -- on the stack's Kafka ----------------------------------------------------------------------


def _topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _layout(bus: KafkaBus, topic: str) -> tuple[list[list[int]], dict[str, str]]:
    """Replicas per partition (by partition index) and ``min.insync.replicas`` with its source."""
    (described,) = bus.admin.describe_topics([topic])
    replicas = [sorted(p["replica_nodes"]) for p in sorted(described["partitions"], key=lambda p: p["partition_index"])]
    configs = bus.admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all")["topic"][topic]
    return replicas, {"value": configs["min.insync.replicas"]["value"], "source": configs["min.insync.replicas"]["config_source"]}


@pytest.mark.stack
@pytest.mark.timeout(120)
def test_create_topic_applies_the_settings_layout():
    url = engine_url("kafka")
    bus = open_bus(url, topics=TopicSettings(replication_factor=1, min_insync_replicas=1))
    assert isinstance(bus, KafkaBus)
    topic = _topic("layout")
    try:
        bus.create_topic(topic, 3)
        replicas, min_isr = _layout(bus, topic)
        assert [len(r) for r in replicas] == [1, 1, 1]
        assert min_isr == {"value": "1", "source": "DYNAMIC_TOPIC_CONFIG"}  # set on the topic, not inherited
        # the producer waits for every in-sync replica and never duplicates on retry
        assert bus.producer.config["acks"] == -1
        assert bus.producer.config["enable_idempotence"] is True
    finally:
        bus.admin.delete_topics([topic])
        bus.close()


def _cluster_url() -> tuple[str, int]:
    brokers = int(stack_setting("GH_TEST_KAFKA_BROKERS") or "1")
    if brokers < 3:
        pytest.skip("needs the stack's Kafka cluster: stack/stack up --kafka-brokers 3 kafka (CI runs one broker)")
    url = engine_url("kafka")
    assert url.split("?")[0].count(",") == brokers - 1, f"the bus URL should list all {brokers} brokers: {url}"
    return url, brokers


@pytest.mark.stack
@pytest.mark.timeout(120)
def test_cluster_topics_have_three_replicas_and_two_in_sync():
    url, brokers = _cluster_url()
    bus = open_bus(url, topics=TopicSettings(replication_factor=3, min_insync_replicas=2))
    assert isinstance(bus, KafkaBus)
    topic = _topic("replicated")
    try:
        bus.create_topic(topic, 4)
        replicas, min_isr = _layout(bus, topic)
        assert len(replicas) == 4 and all(len(r) == 3 for r in replicas)
        assert set().union(*map(set, replicas)) == set(range(1, brokers + 1))
        assert min_isr == {"value": "2", "source": "DYNAMIC_TOPIC_CONFIG"}
    finally:
        bus.admin.delete_topics([topic])
        bus.close()


def _kill_node(node_id: int) -> int:
    """SIGKILL the stack's Kafka node ``node_id`` (only a process the stack started: its pid file,
    checked against the process's command line). Returns the pid."""
    run_dir = Path(stack_setting("GH_TEST_STACK_RUN_DIR") or "")
    pid = int((run_dir / "pids" / f"kafka-{node_id}.pid").read_text().split()[0])
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"kafka.Kafka" in cmdline and any(arg.endswith(f"kafka-{node_id}-server.properties".encode()) for arg in cmdline), cmdline
    os.kill(pid, 9)
    return pid


def _restart_cluster(brokers: int) -> None:
    """``stack up kafka`` starts the nodes that do not run (the killed one, with its data)."""
    env = {**os.environ, "GH_STACK_RUN_DIR": stack_setting("GH_TEST_STACK_RUN_DIR") or "", "STACK_KAFKA_BROKERS": str(brokers)}
    done = subprocess.run(["bash", str(STACK_SCRIPT), "up", "kafka"], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0 and "kafka" in done.stdout, done.stdout + done.stderr


@pytest.mark.stack
@pytest.mark.timeout(300)
def test_a_broker_killed_mid_produce_loses_no_acknowledged_record():
    """Replication 3, min.insync.replicas 2, acks=all: the leader of a partition is killed (SIGKILL,
    no controlled shutdown) while a producer writes. Writes go on after the failover (the producer
    retries through it; a batch refused meanwhile is refused as retriable, which the gateway turns
    into a 503 its client resends), and a consumer reads every acknowledged record exactly once."""
    url, brokers = _cluster_url()
    topics = TopicSettings(replication_factor=3, min_insync_replicas=2)
    admin_bus = open_bus(url, topics=topics)
    assert isinstance(admin_bus, KafkaBus)
    topic, group = _topic("failover"), _topic("failover-g")
    admin_bus.create_topic(topic, 3)
    (described,) = admin_bus.admin.describe_topics([topic])
    victim = next(p["leader_id"] for p in described["partitions"] if p["partition_index"] == 0)

    producer_bus = open_bus(url, topics=topics)
    acked: list[bytes] = []
    refused: list[tuple[bool, str]] = []  # (retriable, why) of each batch or record not acknowledged
    batch_seconds: list[float] = []
    killed = threading.Event()
    acked_batches_after_kill = 0
    stop = threading.Event()

    def produce() -> None:
        nonlocal acked_batches_after_kill
        i = 0
        while not stop.is_set():
            values = [f"{topic}-{i + k}".encode() for k in range(50)]
            i += len(values)
            t0 = time.monotonic()
            try:
                results = producer_bus.produce(topic, [OutgoingRecord(v, key=f"gh-{j % 7}".encode()) for j, v in enumerate(values)])
            except BusError as exc:  # the whole batch refused (e.g. the failover outlasted the delivery timeout)
                refused.append((exc.retriable, f"batch: {exc}"))
                continue
            batch_seconds.append(time.monotonic() - t0)
            acked.extend(v for v, r in zip(values, results) if r.ok)
            refused.extend((r.retriable, str(r.error)) for r in results if not r.ok)
            if killed.is_set() and all(r.ok for r in results):
                acked_batches_after_kill += 1
                if acked_batches_after_kill >= 20:
                    return

    writer = threading.Thread(target=produce, name="producer")
    try:
        writer.start()
        deadline = time.monotonic() + 60
        while len(acked) < 500 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(acked) >= 500, f"no steady produce before the kill: {len(acked)} acknowledged, {refused[:3]}"
        _kill_node(victim)
        killed.set()
        writer.join(timeout=150)
        stop.set()
        assert not writer.is_alive(), (
            f"writes did not recover within 150 s of killing node {victim}: {acked_batches_after_kill} batches acknowledged since, {len(refused)} refusals, last {refused[-3:]}"
        )
        assert all(retriable for retriable, _ in refused), f"a write was refused as not retriable after node {victim} was killed: {refused[:3]}"
        if refused:
            print(f"{len(refused)} retriable refusals during the failover, e.g. {refused[0][1][:200]}")

        (described,) = admin_bus.admin.describe_topics([topic])
        leader0 = next(p for p in described["partitions"] if p["partition_index"] == 0)
        assert leader0["leader_id"] != victim and victim not in leader0["isr_nodes"]  # it did fail over
        later = _topic("after-kill")
        admin_bus.create_topic(later, 1)  # topic creation too goes on (a new admin client if its broker died)
        admin_bus.admin.delete_topics([later])

        consumer = producer_bus.consumer(group, [topic])
        seen: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(seen) < len(acked) and time.monotonic() < deadline:
            seen.extend(m.value for m in consumer.poll(5000, 1.0))
        consumer.close()
        assert len(seen) == len(set(seen)), "a record was read twice (a retry duplicated it)"
        missing = set(acked) - set(seen)
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged records lost"
        print(f"node {victim} killed: {len(acked)} records acknowledged, 0 lost; slowest batch {max(batch_seconds):.1f}s (the failover)")
    finally:
        stop.set()
        writer.join(timeout=60)
        producer_bus.close()
        try:
            _restart_cluster(brokers)
        finally:
            admin_bus.admin.delete_topics([topic])
            admin_bus.close()


@pytest.mark.stack
@pytest.mark.timeout(120)
def test_compressed_batches_round_trip_and_are_stored_smaller():
    """The same repetitive records produced with zstd and uncompressed read back the same; the
    brokers store the zstd batches in a fraction of the bytes."""
    url = engine_url("kafka")
    values = [f'{{"greenhouse_id":"gh-01","device_id":"gh-01-climate","seq":{i},"measurements":{{"air_temp_c":21.5,"rh_pct":70.0}}}}'.encode() for i in range(2000)]
    stored: dict[str, int] = {}
    for codec in ("none", "zstd"):
        bus = KafkaBus(url, compression=codec)
        topic = _topic(f"codec-{codec}")
        try:
            bus.create_topic(topic, 1)
            assert all(r.ok for r in bus.produce(topic, [OutgoingRecord(v) for v in values]))
            consumer = bus.consumer(_topic("g"), [topic])
            got: list[bytes] = []
            deadline = time.monotonic() + 30
            while len(got) < len(values) and time.monotonic() < deadline:
                got += [m.value for m in consumer.poll(5000, 1.0)]
            consumer.close()
            assert got == values
            time.sleep(0.5)
            dirs = bus.admin.describe_log_dirs({topic: [0]})
            stored[codec] = sum(p["partition_size"] for b in dirs for d in b["log_dirs"] for t in d["topics"] if t["name"] == topic for p in t["partitions"])
        finally:
            bus.close()
    assert 0 < stored["zstd"] < stored["none"] / 4, stored
