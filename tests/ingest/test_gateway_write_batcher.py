"""Group commit of the gateway's bus writes (app.ingest.write_batcher): concurrent requests share
writes, each gets exactly its own records' results, and a refused write fails all that were in it."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.bus import BusError, OutgoingRecord, ProduceResult
from app.ingest.write_batcher import WriteBatcher


class SlowBus:
    """Offsets in call order; each write takes ``delay_s``; ``refuse`` makes writes fail."""

    def __init__(self, delay_s: float = 0.02, refuse: bool = False) -> None:
        self.delay_s, self.refuse = delay_s, refuse
        self.calls: list[tuple[str, int]] = []
        self.next_offset = 0
        self.lock = threading.Lock()

    def produce(self, topic, records):
        with self.lock:
            time.sleep(self.delay_s)
            self.calls.append((topic, len(records)))
            if self.refuse:
                raise BusError("down", retriable=True)
            start, self.next_offset = self.next_offset, self.next_offset + len(records)
            return [ProduceResult(0, start + i) for i in range(len(records))]


def records(n: int, tag: str) -> list[OutgoingRecord]:
    return [OutgoingRecord(f"{tag}-{i}".encode()) for i in range(n)]


def test_concurrent_calls_share_writes_and_get_their_own_results():
    bus = SlowBus()
    batcher = WriteBatcher(bus)
    sizes = [1 + i % 5 for i in range(40)]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: batcher.produce("t", records(sizes[i], str(i))), range(40)))
    assert [len(r) for r in results] == sizes
    offsets = sorted(r.offset for rs in results for r in rs)
    assert offsets == list(range(sum(sizes)))  # every record written once
    assert all([r.offset for r in rs] == list(range(rs[0].offset, rs[0].offset + len(rs))) for rs in results)  # a call's records stay together, in order
    assert sum(n for _, n in bus.calls) == sum(sizes) and len(bus.calls) < 40


def test_a_lone_call_is_written_at_once_and_topics_are_written_apart():
    bus = SlowBus(delay_s=0)
    batcher = WriteBatcher(bus)
    assert [r.offset for r in batcher.produce("a", records(3, "x"))] == [0, 1, 2]
    assert bus.calls == [("a", 3)]


def test_a_refused_write_fails_every_call_in_it():
    batcher = WriteBatcher(SlowBus(refuse=True))

    def call(i):
        with pytest.raises(BusError) as caught:
            batcher.produce("t", records(2, str(i)))
        return caught.value.retriable

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(call, range(16)))


def test_writes_hold_at_most_max_records_beyond_one_call():
    bus = SlowBus()
    batcher = WriteBatcher(bus, max_records=5)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: batcher.produce("t", records(3 if i else 7, str(i))), range(16)))
    assert all(n <= 7 for _, n in bus.calls) and sum(n for _, n in bus.calls) == 7 + 15 * 3
