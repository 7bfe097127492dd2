"""The Kafka bus: the :class:`~app.bus.base.Bus` interface on Apache Kafka through kafka-python.

Producer: idempotent, ``acks=all``, so a record reported written is on every in-sync replica (at
least the topic's ``min.insync.replicas`` of them) and retries never duplicate it. A send is retried
(a broker down, a leader moving) until it is acknowledged or its delivery timeout passes, which is
shorter than the produce call's own wait, so every record of a batch ends acknowledged or failed,
never unknown. Partitions are chosen with the same key hash as the embedded bus
(CRC32), so one greenhouse lands in the same partition on either engine.
Record batches are compressed by the producer (``compression``, zstd by default; Kafka stores and
serves them as compressed, so the codec cuts bytes on the wire both ways and on the brokers' disks).
Consumers: manual assignment of every partition of their topics inside a consumer group (the sink
is one member per group), auto-commit off, offsets committed explicitly after durable writes. A
consumer never resets silently: a group without a committed offset starts at the beginning of the
log, and a position whose records retention deleted before they were read raises
:class:`~app.bus.base.LostRecordsError` (counted in ``gh_bus_offsets_lost_total``) unless the
consumer was opened with ``skip_lost=True``.

Client security is part of the URL, as query parameters named after kafka-python's settings, so
that every place that opens the bus (``open_bus(settings.bus_url)``) speaks TLS and authenticates
the same way::

    kafka://host1:9092,host2:9092,host3:9092?security_protocol=SASL_SSL&sasl_mechanism=SCRAM-SHA-512
        &sasl_username=greenhouse&sasl_password_file=/run/secrets/kafka-password&ssl_cafile=/tls/ca.crt

``security_protocol`` (``PLAINTEXT`` default, ``SSL``, ``SASL_SSL``, ``SASL_PLAINTEXT``);
``sasl_mechanism`` (``PLAIN``, ``SCRAM-SHA-256``, ``SCRAM-SHA-512``), ``sasl_username`` and
``sasl_password_file`` (the password is read from that file, never written in the URL) for SASL;
``ssl_cafile`` (the CA the broker is verified with; the system's CAs without it) and, for mutual TLS,
``ssl_certfile`` + ``ssl_keyfile``. Hostname verification is always on. Any other parameter is an
error, so a misspelt option never silently falls back to plaintext. The host list is the bootstrap
servers (any reachable one is enough; list several so that one broker down does not stop a start).

Topic layout is not part of the URL: ``replication_factor`` and ``min_insync_replicas`` are keyword
arguments (``open_bus(url, topics=settings.topics)`` passes the settings' ``topics`` section);
without them, the brokers' own ``default.replication.factor`` and ``min.insync.replicas`` apply.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlparse

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KafkaTP
from kafka import codec as kafka_codec
from kafka.errors import KafkaConnectionError, KafkaError, NoOffsetForPartitionError, OffsetOutOfRangeError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from app.bus.base import BusError, Message, OutgoingRecord, ProduceResult, TopicPartition, UnknownTopicError, lost_records, target_partition

log = logging.getLogger(__name__)

_PRODUCE_TIMEOUT_S = 30.0
# A send is retried until acknowledged or this old (Kafka's delivery.timeout.ms); below the produce
# call's wait, so that no record is left pending when it returns. It covers a broker failover: the
# controller moves leadership after broker.session.timeout.ms (9 s by default).
_DELIVERY_TIMEOUT_MS = 27_000
# One request's wait for the in-sync replicas (acks=all); delivery >= request + linger.
_REQUEST_TIMEOUT_MS = 20_000
# How long topic creation keeps asking other brokers while the one it used is down.
_ADMIN_FAILOVER_S = 20.0
# How long topic creation waits for the new topic to be described by the broker that answers.
_TOPIC_VISIBLE_S = 10.0

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
COMPRESSION_TYPES = ("none", "gzip", "snappy", "lz4", "zstd")
_CODEC_PACKAGES = {"gzip": "zlib", "snappy": "python-snappy", "lz4": "lz4", "zstd": "zstandard"}
URL_PARAMETERS = ("security_protocol", "sasl_mechanism", "sasl_username", "sasl_password_file", "ssl_cafile", "ssl_certfile", "ssl_keyfile")


def bootstrap_servers(url: str) -> list[str]:
    """``kafka://h1:9092,h2:9092`` -> ``["h1:9092", "h2:9092"]``."""
    parsed = urlparse(url)
    hosts = parsed.netloc or parsed.path
    servers = [h.strip() for h in hosts.split(",") if h.strip()]
    if not servers:
        raise ValueError(f"no bootstrap servers in {url!r}")
    return servers


def client_security(url: str) -> dict[str, Any]:
    """kafka-python's security settings for the bus URL ``url`` (see the module docstring): ``{}``
    for a URL without query, otherwise ``security_protocol`` and what it needs, with the SASL
    password read from ``sasl_password_file``. Raises ``ValueError`` for an unknown, repeated or
    inconsistent parameter and for a file that cannot be read (its content never in the message)."""
    pairs = parse_qsl(urlparse(url).query, keep_blank_values=True, strict_parsing=False)
    params: dict[str, str] = {}
    for name, value in pairs:
        if name not in URL_PARAMETERS:
            raise ValueError(f"unknown Kafka URL parameter {name!r}; known: {', '.join(URL_PARAMETERS)}")
        if name in params:
            raise ValueError(f"Kafka URL parameter {name!r} is given twice")
        if not value:
            raise ValueError(f"Kafka URL parameter {name!r} is empty")
        params[name] = value
    if not params:
        return {}
    protocol = params.pop("security_protocol", "PLAINTEXT").upper()
    if protocol not in SECURITY_PROTOCOLS:
        raise ValueError(f"security_protocol {protocol!r} is not one of {', '.join(SECURITY_PROTOCOLS)}")
    config: dict[str, Any] = {"security_protocol": protocol}
    sasl = {k: params.pop(k) for k in ("sasl_mechanism", "sasl_username", "sasl_password_file") if k in params}
    if protocol.startswith("SASL_"):
        missing = [k for k in ("sasl_mechanism", "sasl_username", "sasl_password_file") if k not in sasl]
        if missing:
            raise ValueError(f"security_protocol {protocol} needs {', '.join(missing)}")
        mechanism = sasl["sasl_mechanism"].upper()
        if mechanism not in SASL_MECHANISMS:
            raise ValueError(f"sasl_mechanism {mechanism!r} is not one of {', '.join(SASL_MECHANISMS)}")
        config.update(sasl_mechanism=mechanism, sasl_plain_username=sasl["sasl_username"], sasl_plain_password=_read_secret(sasl["sasl_password_file"]))
    elif sasl:
        raise ValueError(f"{', '.join(sasl)} need security_protocol=SASL_SSL (or SASL_PLAINTEXT), not {protocol}")
    if protocol in ("SSL", "SASL_SSL"):
        if ("ssl_certfile" in params) != ("ssl_keyfile" in params):
            raise ValueError("ssl_certfile and ssl_keyfile go together (a client certificate and its key)")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if name in params:
                config[name] = _readable_file(name, params.pop(name))
        config["ssl_check_hostname"] = True
    elif params:
        raise ValueError(f"{', '.join(params)} need security_protocol=SSL or SASL_SSL, not {protocol}")
    return config


def _readable_file(name: str, path: str) -> str:
    if not Path(path).is_file():
        raise ValueError(f"Kafka URL parameter {name}: no such file {path}")
    return path


def _read_secret(path: str) -> str:
    try:
        secret = Path(path).read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read sasl_password_file {path}: {exc.strerror}") from None
    if not secret:
        raise ValueError(f"sasl_password_file {path} is empty")
    return secret


class KafkaBus:
    """A :class:`~app.bus.base.Bus` on Apache Kafka."""

    def __init__(self, url: str, *, client_id: str = "greenhouse", replication_factor: int | None = None, min_insync_replicas: int | None = None, compression: str = "zstd") -> None:
        """``replication_factor`` and ``min_insync_replicas``: the layout of the topics
        :meth:`create_topic` makes (``None``: the brokers' defaults). ``compression``: the
        producer's codec for record batches (``none``, ``gzip``, ``snappy``, ``lz4``, ``zstd``)."""
        if compression not in COMPRESSION_TYPES:
            raise ValueError(f"compression {compression!r} is not one of {', '.join(COMPRESSION_TYPES)}")
        if compression != "none" and not getattr(kafka_codec, f"has_{compression}")():
            raise ValueError(f"compression {compression!r} needs its Python package ({_CODEC_PACKAGES[compression]}), which is not installed")
        for name, value in (("replication_factor", replication_factor), ("min_insync_replicas", min_insync_replicas)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, not {value}")
        if replication_factor is not None and min_insync_replicas is not None and min_insync_replicas > replication_factor:
            raise ValueError(f"min_insync_replicas ({min_insync_replicas}) is above replication_factor ({replication_factor}): no acks=all write could succeed")
        self.url = url
        self.replication_factor = replication_factor
        self.min_insync_replicas = min_insync_replicas
        self.compression = compression
        self._servers = bootstrap_servers(url)
        self._security = client_security(url)  # holds the SASL password: never log it
        self._client_id = client_id
        self._admin: KafkaAdminClient | None = None
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()
        self._partitions: dict[str, int] = {}
        self._round_robin = 0

    def __reduce__(self):
        return (partial(KafkaBus, replication_factor=self.replication_factor, min_insync_replicas=self.min_insync_replicas, compression=self.compression), (self.url,))

    # -- lazily opened clients (opening costs a metadata round trip) --------------------------
    @property
    def admin(self) -> KafkaAdminClient:
        with self._lock:
            if self._admin is None:
                try:
                    self._admin = KafkaAdminClient(bootstrap_servers=self._servers, client_id=f"{self._client_id}-admin", **self._security)
                except KafkaError as exc:
                    raise BusError(f"cannot reach Kafka at {self._servers}: {exc}", retriable=True) from exc
            return self._admin

    @property
    def producer(self) -> KafkaProducer:
        with self._lock:
            if self._producer is None:
                try:
                    self._producer = KafkaProducer(
                        bootstrap_servers=self._servers,
                        client_id=f"{self._client_id}-producer",
                        acks="all",
                        enable_idempotence=True,
                        linger_ms=2,
                        compression_type=None if self.compression == "none" else self.compression,
                        delivery_timeout_ms=_DELIVERY_TIMEOUT_MS,
                        request_timeout_ms=_REQUEST_TIMEOUT_MS,
                        **self._security,
                    )
                except KafkaError as exc:
                    raise BusError(f"cannot reach Kafka at {self._servers}: {exc}", retriable=True) from exc
            return self._producer

    # -- topics -----------------------------------------------------------------------------
    def create_topic(self, topic: str, partitions: int) -> None:
        """Create ``topic`` with ``partitions`` partitions, this bus's replication factor and
        ``min.insync.replicas`` (the brokers' defaults for what is ``None``); an existing topic is
        left as it is."""
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        spec: dict[str, Any] = {"num_partitions": partitions, "replication_factor": self.replication_factor or -1}  # -1: default.replication.factor
        if self.min_insync_replicas is not None:
            spec["configs"] = {"min.insync.replicas": str(self.min_insync_replicas)}
        deadline = time.monotonic() + _ADMIN_FAILOVER_S
        while True:
            try:
                self.admin.create_topics({topic: spec}, wait_for_metadata=True)
                break
            except TopicAlreadyExistsError:
                break
            except KafkaConnectionError as exc:
                # The admin client keeps the node it took for the controller; when that broker is
                # gone (a node of a cluster down), a new client asks the others, which name a live
                # one once the dead broker is fenced.
                if time.monotonic() >= deadline:
                    raise BusError(f"creating topic {topic!r} failed: {exc}", retriable=True) from exc
                self._drop_admin()
                time.sleep(1.0)
            except KafkaError as exc:
                if "TopicAlreadyExists" in type(exc).__name__ + str(exc):
                    break
                raise BusError(f"creating topic {topic!r} failed: {exc}") from exc
        self._await_visible(topic)

    def _await_visible(self, topic: str) -> None:
        """Wait (a few seconds at most) until the broker that answers describes ``topic``: on a
        cluster, a broker other than the controller learns of a new topic a moment later, and a
        producer asking it meanwhile would be told the topic does not exist."""
        deadline = time.monotonic() + _TOPIC_VISIBLE_S
        while True:
            found = self._describe([topic])
            if topic in found:
                self._partitions[topic] = found[topic]
                return
            if time.monotonic() >= deadline:
                return  # partitions_for says what it finds then
            time.sleep(0.1)

    def _drop_admin(self) -> None:
        with self._lock:
            admin, self._admin = self._admin, None
        if admin is not None:
            try:
                admin.close()
            except KafkaError:
                pass

    def _describe(self, topics: list[str] | None) -> dict[str, int]:
        try:
            described = self.admin.describe_topics(topics)
        except KafkaError as exc:
            raise BusError(f"describing topics failed: {exc}", retriable=True) from exc
        return {t["name"]: len(t["partitions"]) for t in described if not t.get("error_code") and t.get("partitions")}

    def partitions_for(self, topic: str) -> int:
        cached = self._partitions.get(topic)
        if cached is not None:
            return cached
        found = self._describe([topic])
        if topic not in found:
            raise UnknownTopicError(f"topic {topic!r} does not exist")
        self._partitions[topic] = found[topic]
        return found[topic]

    def list_topics(self) -> dict[str, int]:
        return {name: count for name, count in sorted(self._describe(None).items()) if not name.startswith("__")}

    def end_offsets(self, topic: str) -> dict[int, int]:
        return self._offsets(topic, "end")

    def start_offsets(self, topic: str) -> dict[int, int]:
        return self._offsets(topic, "beginning")

    def _offsets(self, topic: str, which: str) -> dict[int, int]:
        count = self.partitions_for(topic)
        consumer = KafkaConsumer(bootstrap_servers=self._servers, client_id=f"{self._client_id}-offsets", enable_auto_commit=False, **self._security)
        try:
            tps = [KafkaTP(topic, p) for p in range(count)]
            found = consumer.end_offsets(tps) if which == "end" else consumer.beginning_offsets(tps)
        except KafkaError as exc:
            raise BusError(f"listing the {which} offsets of {topic!r} failed: {exc}", retriable=True) from exc
        finally:
            consumer.close()
        return {tp.partition: off for tp, off in sorted(found.items(), key=lambda kv: kv[0].partition)}

    def delete_records(self, topic: str, before: dict[int, int]) -> None:
        count = self.partitions_for(topic)
        unknown = sorted(p for p in before if not 0 <= p < count)
        if unknown:
            raise BusError(f"{topic!r} has no partition {unknown[0]}")
        try:
            results = self.admin.delete_records({KafkaTP(topic, p): off for p, off in before.items()})
        except KafkaError as exc:
            raise BusError(f"deleting records of {topic!r} failed: {exc}") from exc
        for tp, meta in (results or {}).items():
            error = meta.get("error") if isinstance(meta, dict) else None
            if error:
                raise BusError(f"deleting records of {topic}/{tp.partition} failed: {error}")

    # -- produce ----------------------------------------------------------------------------
    def produce(self, topic: str, records: Sequence[OutgoingRecord]) -> list[ProduceResult]:
        partitions = self.partitions_for(topic)
        producer = self.producer
        futures: list[Any] = []
        for rec in records:
            self._round_robin += rec.partition is None
            part = target_partition(rec, partitions, self._round_robin)
            if part is None:
                futures.append(None)
                continue
            try:
                futures.append(producer.send(topic, value=rec.value, key=rec.key, partition=part))
            except KafkaError as exc:
                futures.append(exc)
        try:
            producer.flush(timeout=_PRODUCE_TIMEOUT_S)
        except KafkaError as exc:
            raise BusError(f"Kafka did not acknowledge the batch: {exc}", retriable=True) from exc
        results: list[ProduceResult] = []
        for rec, fut in zip(records, futures):
            if fut is None:
                results.append(ProduceResult(None, None, error=f"partition {rec.partition} does not exist"))
            elif isinstance(fut, Exception):
                results.append(ProduceResult(None, None, error=str(fut), retriable=getattr(fut, "retriable", False)))
            else:
                try:
                    meta = fut.get(timeout=_PRODUCE_TIMEOUT_S)
                    results.append(ProduceResult(meta.partition, meta.offset))
                except KafkaError as exc:
                    results.append(ProduceResult(None, None, error=str(exc), retriable=getattr(exc, "retriable", False)))
        return results

    # -- consume ----------------------------------------------------------------------------
    def consumer(self, group_id: str, topics: Sequence[str], partitions: Sequence[int] | None = None, *, skip_lost: bool = False) -> KafkaBusConsumer:
        assignment = [TopicPartition(t, p) for t in topics for p in range(self.partitions_for(t)) if partitions is None or p in partitions]
        return KafkaBusConsumer(self._servers, group_id, assignment, client_id=self._client_id, security=self._security, skip_lost=skip_lost)

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=10)
                self._producer = None
            if self._admin is not None:
                self._admin.close()
                self._admin = None


class KafkaBusConsumer:
    """A consumer group member with the given partitions assigned to it (no group rebalancing:
    the caller decides which member reads what). Never resets its position on its own
    (``auto_offset_reset="none"``): a partition the group never committed starts at the
    beginning of the log, a position retention deleted raises :class:`LostRecordsError` (or, with
    ``skip_lost``, moves to the earliest record held, logged and counted)."""

    def __init__(self, servers: list[str], group_id: str, assignment: list[TopicPartition], *, client_id: str, security: dict[str, Any] | None = None, skip_lost: bool = False) -> None:
        self.group_id = group_id
        self.skip_lost = skip_lost
        self.skipped: dict[TopicPartition, int] = {}
        self._consumer = KafkaConsumer(
            bootstrap_servers=servers, group_id=group_id, client_id=f"{client_id}-{group_id}", enable_auto_commit=False, auto_offset_reset="none", isolation_level="read_committed", **(security or {})
        )
        self._tps = {tp: KafkaTP(tp.topic, tp.partition) for tp in assignment}
        self._by_ktp = {ktp: tp for tp, ktp in self._tps.items()}
        self._consumer.assign(list(self._tps.values()))

    def poll(self, max_records: int = 500, timeout_s: float = 1.0) -> list[Message]:
        deadline = time.monotonic() + timeout_s
        for _ in range(1 + 2 * len(self._tps)):  # each partition resolved at most twice (no offset, then lost)
            try:
                batches = self._consumer.poll(timeout_ms=int(max(0.0, deadline - time.monotonic()) * 1000), max_records=max_records)
                break
            except NoOffsetForPartitionError as exc:
                # The group never committed these partitions: start at the beginning of the log.
                self._consumer.seek_to_beginning(*exc.args[0])
            except OffsetOutOfRangeError as exc:
                self._out_of_range(exc.args[0])
        else:
            raise BusError(f"consumer of group {self.group_id} could not settle its positions", retriable=True)
        out: list[Message] = []
        for ktp, records in batches.items():
            for r in records:
                out.append(Message(ktp.topic, ktp.partition, r.offset, r.key, r.value, r.timestamp))
        return out

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            self._consumer.commit({self._tps[tp]: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()})
        except KafkaError as exc:
            raise BusError(f"offset commit failed: {exc}", retriable=True) from exc

    def _out_of_range(self, positions: dict[KafkaTP, int]) -> None:
        """A fetch position the broker does not hold: below its earliest offset (retention
        deleted records before they were read) or past its end (the log was truncated or the
        topic recreated). Raise, or with ``skip_lost`` move to the earliest offset held."""
        try:
            earliest = self._consumer.beginning_offsets(list(positions))
            ends = self._consumer.end_offsets(list(positions))
        except KafkaError as exc:
            raise BusError(f"listing the offsets of {sorted(str(k) for k in positions)} failed: {exc}", retriable=True) from exc
        for ktp, position in positions.items():
            tp = self._by_ktp.get(ktp) or TopicPartition(ktp.topic, ktp.partition)
            first, end = earliest[ktp], ends[ktp]
            if position > end:
                beyond = BusError(
                    f"consumer group {self.group_id}: {ktp.topic}/{ktp.partition}: the next offset to read, {position}, is past the end of the log ({end}): the log was truncated or the topic recreated"
                )
                if not self.skip_lost:
                    raise beyond
                log.error("%s; skip_lost: moving to the earliest offset held, %d", beyond, first)
            elif position < first:
                lost = lost_records(tp, position, first, group_id=self.group_id, skip_lost=self.skip_lost, skipped=self.skipped)
                if lost is not None:
                    raise lost
            else:
                continue  # in range again (a leader's view moved meanwhile): fetch it once more
            self._consumer.seek(ktp, first)

    def committed(self, tp: TopicPartition) -> int | None:
        return self._consumer.committed(self._tps.get(tp) or KafkaTP(tp.topic, tp.partition))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if tp not in self._tps:
            raise BusError(f"{tp} is not assigned to this consumer")
        self._consumer.seek(self._tps[tp], max(0, offset))

    def close(self) -> None:
        self._consumer.close(autocommit=False)
