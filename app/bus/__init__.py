"""The bus: a durable partitioned log with Kafka semantics, chosen by URL.

``file:///dir`` opens the embedded SQLite log; ``kafka://host:port[,host:port]`` opens Kafka.
"""

from __future__ import annotations

from urllib.parse import urlparse

from app.bus.base import Bus, BusError, Consumer, Message, OutgoingRecord, ProduceResult, TopicPartition, UnknownTopicError, partition_for_key


def open_bus(url: str) -> Bus:
    """Open the bus named by ``url`` (``file://`` embedded log, ``kafka://`` Apache Kafka)."""
    scheme = urlparse(url).scheme
    if scheme == "file":
        from app.bus.embedded import EmbeddedBus

        return EmbeddedBus(urlparse(url).path)
    if scheme == "kafka":
        from app.bus.kafka import KafkaBus

        return KafkaBus(url)
    raise ValueError(f"unsupported bus URL {url!r}: use file:///dir or kafka://host:port")


__all__ = ["Bus", "BusError", "Consumer", "Message", "OutgoingRecord", "ProduceResult", "TopicPartition", "UnknownTopicError", "open_bus", "partition_for_key"]
