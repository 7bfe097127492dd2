"""The bus: a durable partitioned log with Kafka semantics, chosen by URL.

``file:///dir`` opens the embedded SQLite log; ``kafka://host:port[,host:port...]`` opens Kafka.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlparse

from app.bus.base import Bus, BusError, Consumer, LostRecordsError, Message, OutgoingRecord, ProduceResult, TopicPartition, UnknownTopicError, partition_for_key

if TYPE_CHECKING:
    from app.config import TopicSettings


def open_bus(url: str, *, topics: TopicSettings | None = None) -> Bus:
    """Open the bus named by ``url`` (``file://`` embedded log, ``kafka://`` Apache Kafka).

    ``topics`` (``settings.topics``): Kafka creates topics with its ``replication_factor`` and
    ``min_insync_replicas`` and compresses record batches with its ``compression``; without it
    the brokers' defaults apply and batches are compressed with zstd. The embedded log keeps one
    uncompressed copy and ignores them."""
    scheme = urlparse(url).scheme
    if scheme == "file":
        from app.bus.embedded import EmbeddedBus

        return EmbeddedBus(urlparse(url).path)
    if scheme == "kafka":
        from app.bus.kafka import KafkaBus

        if topics is None:
            return KafkaBus(url)
        return KafkaBus(url, replication_factor=topics.replication_factor, min_insync_replicas=topics.min_insync_replicas, compression=topics.compression)
    raise ValueError(f"unsupported bus URL {url!r}: use file:///dir or kafka://host:port")


__all__ = ["Bus", "BusError", "Consumer", "LostRecordsError", "Message", "OutgoingRecord", "ProduceResult", "TopicPartition", "UnknownTopicError", "open_bus", "partition_for_key"]
