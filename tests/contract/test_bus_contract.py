"""The bus contract: every Bus implementation must pass this suite."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from app.bus import Bus, LostRecordsError, OutgoingRecord, TopicPartition, UnknownTopicError, open_bus, partition_for_key
from app.bus.metrics import lost_offsets
from tests.helpers.engines import engine_url


@pytest.fixture(params=["embedded", "kafka"])
def bus_url(request, tmp_path) -> str:
    return f"file://{tmp_path / 'bus'}" if request.param == "embedded" else engine_url("kafka")


@pytest.fixture
def bus(bus_url) -> Bus:
    b = open_bus(bus_url)
    yield b
    b.close()


@pytest.fixture
def t() -> str:
    """A topic name of this test alone (real engines keep topics between runs)."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def g() -> str:
    """A consumer group of this test alone."""
    return f"g-{uuid.uuid4().hex[:12]}"


def _values(messages):
    return [m.value for m in messages]


def test_unknown_topic_is_an_error(bus, t, g):
    with pytest.raises(UnknownTopicError):
        bus.partitions_for(t + "-nope")
    with pytest.raises(UnknownTopicError):
        bus.produce(t + "-nope", [OutgoingRecord(b"x")])


def test_create_topic_is_idempotent_and_keeps_partitions(bus, t, g):
    bus.create_topic(t, 3)
    bus.create_topic(t, 5)
    assert bus.partitions_for(t) == 3
    assert bus.list_topics()[t] == 3


def test_offsets_are_dense_per_partition_and_keys_stick_to_a_partition(bus, t, g):
    bus.create_topic(t, 4)
    results = bus.produce(t, [OutgoingRecord(f"v{i}".encode(), key=b"gh-01") for i in range(10)])
    assert all(r.ok for r in results)
    parts = {r.partition for r in results}
    assert parts == {partition_for_key(b"gh-01", 4)}
    assert [r.offset for r in results] == list(range(10))
    more = bus.produce(t, [OutgoingRecord(b"w", key=b"gh-01")])
    assert more[0].offset == 10
    assert bus.end_offsets(t)[more[0].partition] == 11


def test_explicit_partition_is_honoured_and_out_of_range_fails_per_record(bus, t, g):
    bus.create_topic(t, 2)
    res = bus.produce(t, [OutgoingRecord(b"a", partition=1), OutgoingRecord(b"b", partition=7)])
    assert res[0].ok and res[0].partition == 1
    assert not res[1].ok and res[1].partition is None and "partition" in res[1].error


def test_consumer_group_reads_in_order_and_resumes_from_commit(bus, t, g):
    bus.create_topic(t, 1)
    bus.produce(t, [OutgoingRecord(f"{i}".encode()) for i in range(5)])
    c = bus.consumer(g, [t])
    got = c.poll(max_records=3, timeout_s=2)
    assert _values(got) == [b"0", b"1", b"2"]
    tp = TopicPartition(t, 0)
    c.commit({tp: 3})
    assert c.committed(tp) == 3
    c.close()
    c2 = bus.consumer(g, [t])
    assert _values(c2.poll(max_records=10, timeout_s=2)) == [b"3", b"4"]
    c2.close()
    other = bus.consumer(g + "-other", [t])
    assert other.committed(tp) is None
    assert len(other.poll(max_records=10, timeout_s=2)) == 5
    other.close()


def test_seek_moves_position_not_commit(bus, t, g):
    bus.create_topic(t, 1)
    bus.produce(t, [OutgoingRecord(f"{i}".encode()) for i in range(5)])
    c = bus.consumer(g, [t])
    tp = TopicPartition(t, 0)
    c.seek(tp, 4)
    assert _values(c.poll(10, 2)) == [b"4"]
    assert c.committed(tp) is None
    c.close()


def test_poll_times_out_empty_and_sees_later_writes(bus, t, g):
    bus.create_topic(t, 2)
    c = bus.consumer(g, [t])
    assert c.poll(10, timeout_s=0.2) == []
    bus.produce(t, [OutgoingRecord(b"late", key=b"k")])
    assert _values(c.poll(10, timeout_s=2)) == [b"late"]
    c.close()


def test_messages_carry_key_topic_partition_timestamp(bus, t, g):
    bus.create_topic(t, 2)
    res = bus.produce(t, [OutgoingRecord(b"v", key=b"gh-02")])
    c = bus.consumer(g, [t])
    (m,) = c.poll(10, 2)
    assert (m.topic, m.partition, m.offset, m.key, m.value) == (t, res[0].partition, res[0].offset, b"gh-02", b"v")
    assert m.timestamp_ms > 1_600_000_000_000
    c.close()


def test_concurrent_producers_lose_nothing(bus, t, g):
    bus.create_topic(t, 3)

    def produce(n: int) -> None:
        for i in range(20):
            bus.produce(t, [OutgoingRecord(f"{n}-{i}-{j}".encode(), key=f"k{n}".encode()) for j in range(5)])

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(bus.end_offsets(t).values()) == 4 * 20 * 5
    c = bus.consumer(g, [t])
    seen = []
    deadline = time.monotonic() + 30
    while len(seen) < 400 and time.monotonic() < deadline:
        seen.extend(c.poll(1000, 0.5))
    assert len({m.value for m in seen}) == 400
    c.close()


def test_a_write_landing_between_the_embedded_consumers_reads_is_not_a_loss(tmp_path, monkeypatch, t, g):
    """The embedded consumer tells deleted records from new ones by the partition's head: a write
    that lands while it reads (a device posting as the sink polls at the head) must be read, not
    reported as records lost to retention."""
    from app.bus.embedded import EmbeddedConsumer

    bus = open_bus(f"file://{tmp_path / 'bus'}")
    bus.create_topic(t, 1)
    c = bus.consumer(g, [t])
    read_head = EmbeddedConsumer._head
    writes = []

    def head_with_a_write_landing(self, tp):
        if not writes:  # once: the device's write commits in the middle of this poll
            writes.append(bus.produce(t, [OutgoingRecord(b"a"), OutgoingRecord(b"b")]))
        return read_head(self, tp)

    monkeypatch.setattr(EmbeddedConsumer, "_head", head_with_a_write_landing)
    seen = []
    for _ in range(3):
        seen.extend(c.poll(10, 0.05))
    assert writes and _values(seen) == [b"a", b"b"]
    c.close()
    bus.close()


def test_log_and_commits_survive_a_reopen(bus_url, t, g):
    """Durable: a new client (as after a process restart) sees every record and commit."""
    url = bus_url
    first = open_bus(url)
    first.create_topic(t, 2)
    first.produce(t, [OutgoingRecord(f"{i}".encode(), key=b"k") for i in range(7)])
    c = first.consumer(g, [t])
    c.poll(3, 1)
    part = partition_for_key(b"k", 2)
    c.commit({TopicPartition(t, part): 3})
    c.close()
    first.close()
    again = open_bus(url)
    assert again.end_offsets(t)[part] == 7
    c2 = again.consumer(g, [t])
    assert [m.value for m in c2.poll(10, 1)] == [b"3", b"4", b"5", b"6"]
    c2.close()
    again.close()


def test_start_offsets_follow_deleted_records(bus, t, g):
    bus.create_topic(t, 2)
    bus.produce(t, [OutgoingRecord(f"{i}".encode(), partition=0) for i in range(10)])
    assert bus.start_offsets(t) == {0: 0, 1: 0}
    bus.delete_records(t, {0: 4, 1: 0})
    assert bus.start_offsets(t) == {0: 4, 1: 0}
    bus.delete_records(t, {0: 10})
    assert bus.start_offsets(t) == {0: 10, 1: 0}  # all deleted: the start is the end
    assert bus.end_offsets(t) == {0: 10, 1: 0}


def test_a_committed_offset_lost_to_retention_is_an_error_not_a_skip(bus, t, g):
    """Records deleted (retention, DeleteRecords) before the group read them: poll raises, names
    topic, partition, position and earliest offset, counts the metric, and keeps raising; only a
    consumer opened with skip_lost moves on, counted."""
    bus.create_topic(t, 1)
    bus.produce(t, [OutgoingRecord(f"{i}".encode()) for i in range(10)])
    tp = TopicPartition(t, 0)
    c = bus.consumer(g, [t])
    assert _values(c.poll(3, 2)) == [b"0", b"1", b"2"]
    c.commit({tp: 3})
    c.close()
    bus.delete_records(t, {0: 6})
    refused, skipped = lost_offsets(t, 0, skipped=False), lost_offsets(t, 0, skipped=True)

    again = bus.consumer(g, [t])
    for _ in range(2):  # the position stays: it raises every time, never reads on past the gap
        with pytest.raises(LostRecordsError) as caught:
            again.poll(10, 2)
        err = caught.value
        assert (err.topic, err.partition, err.position, err.earliest, err.lost) == (t, 0, 3, 6, 3)
        assert f"{t}/0" in str(err) and "3" in str(err) and "6" in str(err) and not err.retriable
    assert again.skipped == {}
    again.close()
    assert lost_offsets(t, 0, skipped=False) == refused + 6  # 3 per detection
    assert lost_offsets(t, 0, skipped=True) == skipped

    accepting = bus.consumer(g, [t], skip_lost=True)
    assert _values(accepting.poll(10, 2)) == [b"6", b"7", b"8", b"9"]
    assert accepting.skipped == {tp: 3}
    assert accepting.committed(tp) == 3  # skipping moves the position, not the commit
    accepting.close()
    assert lost_offsets(t, 0, skipped=True) == skipped + 3

    fresh = bus.consumer(g + "-new", [t])  # a group that never committed starts at the earliest held
    assert _values(fresh.poll(10, 2)) == [b"6", b"7", b"8", b"9"]
    fresh.close()


def test_a_seek_below_the_earliest_offset_is_an_error(bus, t, g):
    bus.create_topic(t, 1)
    bus.produce(t, [OutgoingRecord(f"{i}".encode()) for i in range(5)])
    bus.delete_records(t, {0: 5})
    c = bus.consumer(g, [t])
    c.seek(TopicPartition(t, 0), 2)
    with pytest.raises(LostRecordsError) as caught:
        c.poll(10, 2)
    assert (caught.value.position, caught.value.earliest) == (2, 5)
    c.seek(TopicPartition(t, 0), 5)
    assert c.poll(10, 0.5) == []
    bus.produce(t, [OutgoingRecord(b"5")])
    assert _values(c.poll(10, 2)) == [b"5"]
    c.close()
