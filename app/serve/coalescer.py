"""Coalescing of concurrent forecast requests into one Forecaster handle call."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

_Key = tuple[tuple[str, ...], tuple[int, ...] | None]  # (column names, horizons or None for all)


class ForecastCoalescer:
    """Concurrent predictions for one model become one handle call.

    Up to ``max_in_flight`` calls go out at once; requests that arrive while they are out wait and
    leave together in the next call, as one matrix (Forecaster's ``@serve.batch`` then merges calls
    from every ingress replica). No timer: a request on an idle replica goes out at once, so
    batching costs no latency at low load and saves a handle round trip per request at high load.
    """

    def __init__(self, handle: Any, max_in_flight: int = 1) -> None:
        self._handle = handle
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._pending: list[tuple[np.ndarray, _Key, asyncio.Future]] = []
        self._tasks: set[asyncio.Task] = set()

    async def predict(self, matrix: np.ndarray, columns: list[str], horizons: list[int] | None = None) -> np.ndarray:
        """Forecasts for ``matrix`` (see :meth:`Forecaster.predict`)."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((matrix, (tuple(columns), tuple(horizons) if horizons else None), future))
        if self._in_flight < self._max_in_flight:
            self._launch()
        return await future

    def _launch(self) -> None:
        batch, self._pending = self._pending, []
        self._in_flight += 1
        task = asyncio.ensure_future(self._send(batch))
        self._tasks.add(task)  # keep a reference until done
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[np.ndarray, _Key, asyncio.Future]]) -> None:
        try:
            await self._send_groups(batch)
        except BaseException:  # cancelled (replica shutting down): nobody waits forever
            for _, _, future in batch:
                if not future.done():
                    future.cancel()
            raise
        finally:
            self._in_flight -= 1
            if self._pending and self._in_flight < self._max_in_flight:
                self._launch()

    async def _send_groups(self, batch: list[tuple[np.ndarray, _Key, asyncio.Future]]) -> None:
        groups: dict[_Key, list[tuple[np.ndarray, _Key, asyncio.Future]]] = {}
        for item in batch:
            groups.setdefault(item[1], []).append(item)
        for (columns, horizons), items in groups.items():
            try:
                matrices = [m for m, _, _ in items]
                stacked = matrices[0] if len(matrices) == 1 else np.concatenate(matrices)
                out = await self._handle.predict.remote((stacked, list(columns), horizons))
            except Exception as exc:
                for _, _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for matrix, _, future in items:
                if not future.done():  # the caller may have gone (cancelled)
                    future.set_result(out[start : start + len(matrix)])
                start += len(matrix)
