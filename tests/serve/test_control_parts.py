"""The ControlApp's helpers without Ray: coalesced forecaster calls and the dispatch thread."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from app.serve.coalescer import ForecastCoalescer
from app.serve.dispatch_thread import DispatchThread


class FakeHandle:
    """Stands in for a DeploymentHandle: ``predict.remote((matrix, columns, horizons))`` answers later."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[int] = []
        self.horizons: list[tuple[int, ...] | None] = []
        self.fail = fail
        self.predict = self

    def remote(self, request):
        matrix, columns, horizons = request
        self.calls.append(len(matrix))
        self.horizons.append(horizons)

        async def answer():
            await asyncio.sleep(0.01)
            if self.fail:
                raise RuntimeError("forecaster down")
            return matrix[:, :1] * 2  # one output column per input row

        return answer()


def test_coalescer_sends_concurrent_requests_together_and_splits_the_answer():
    handle = FakeHandle()

    async def main():
        coalescer = ForecastCoalescer(handle, max_in_flight=1)
        matrices = [np.full((n, 3), float(i)) for i, n in enumerate([2, 3, 1, 4])]
        out = await asyncio.gather(*(coalescer.predict(m, ["a", "b", "c"]) for m in matrices))
        alone = await coalescer.predict(np.ones((5, 3)), ["a", "b", "c"])  # idle again: goes at once
        # requests for other horizons queue together but leave in their own call
        mixed = await asyncio.gather(coalescer.predict(np.ones((1, 3)), ["a", "b", "c"]), *(coalescer.predict(np.ones((k, 3)), ["a", "b", "c"], [5, 15]) for k in (2, 3)))
        return matrices, out, alone, mixed

    matrices, out, alone, mixed = asyncio.run(main())
    assert handle.calls[:3] == [2, 8, 5]  # the first went alone; the three that queued behind it, together
    assert handle.calls[3:] == [1, 5] and handle.horizons == [None, None, None, None, (5, 15)]
    assert [m.shape[0] for m in mixed] == [1, 2, 3]
    for m, o in zip(matrices, out):
        assert o.shape == (len(m), 1) and (o == m[:, :1] * 2).all()
    assert alone.shape == (5, 1)


def test_coalescer_passes_errors_to_every_caller_of_the_call():
    async def main():
        coalescer = ForecastCoalescer(FakeHandle(fail=True))
        return await asyncio.gather(*(coalescer.predict(np.ones((1, 2)), ["a", "b"]) for _ in range(3)), return_exceptions=True)

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(main()))


class FakeDispatcher:
    def __init__(self) -> None:
        self.groups: list[list[str]] = []
        self.gate = threading.Event()

    def dispatch_many(self, commands):
        self.gate.wait(5)
        self.groups.append(list(commands))
        return [ValueError(c) if c == "bad" else f"done {c}" for c in commands]


def test_dispatch_thread_groups_queued_commands_and_answers_each():
    dispatcher = FakeDispatcher()
    worker = DispatchThread(dispatcher)

    async def main():
        first = asyncio.ensure_future(worker.dispatch("c1"))
        await asyncio.sleep(0.05)  # c1 is being dispatched (held at the gate)
        rest = [asyncio.ensure_future(worker.dispatch(c)) for c in ("c2", "bad", "c3")]
        await asyncio.sleep(0.05)
        dispatcher.gate.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    results = asyncio.run(main())
    worker.stop()
    assert results[0] == "done c1" and results[1] == "done c2" and results[3] == "done c3"
    assert isinstance(results[2], ValueError)
    assert dispatcher.groups == [["c1"], ["c2", "bad", "c3"]]
