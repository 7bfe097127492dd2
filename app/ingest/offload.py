"""Blocking calls of the HTTP layer (validation and the bus write) on threads that persist.

Starlette's ``run_in_threadpool`` (anyio) keeps its idle worker threads in a context variable set
on a request's first call; on Ray Serve every request starts from a fresh context, so every call
started a thread and stopped it when the request ended (about a tenth of the replica's time per
request). :class:`Offload` runs them on one executor per app instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

T = TypeVar("T")


class Offload:
    """``await offload(fn, *args, **kwargs)``: ``fn`` on one of ``threads`` persistent threads."""

    def __init__(self, threads: int = 32) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ingest")

    async def __call__(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, partial(fn, *args, **kwargs))
