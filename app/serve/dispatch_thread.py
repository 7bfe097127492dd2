"""A background thread that dispatches control commands for an asyncio Serve replica."""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any


class DispatchThread:
    """Dispatches commands on one background thread (the audit and the bus write fsync'd files).

    Commands that queue up while it works go together through
    :meth:`~app.control.dispatch.CommandDispatcher.dispatch_many`: one bus write for the group,
    each command audited before and after as alone. One thread rather than a pool: the stores
    serialise their writes anyway, and fewer threads contend for them and for the GIL.
    """

    def __init__(self, dispatcher: Any, max_group: int = 32) -> None:
        self._dispatcher = dispatcher
        self._max_group = max_group
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="command-dispatch", daemon=True)
        self._thread.start()

    async def dispatch(self, command: Any) -> Any:
        """The command's :class:`~app.control.dispatch.DispatchResult` (or its exception)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((command, loop, future))
        return await future

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            group = [item]
            while len(group) < self._max_group:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this group
                    break
                group.append(more)
            try:
                results = self._dispatcher.dispatch_many([command for command, _, _ in group])
            except Exception as exc:  # dispatch_many answers per command; this is a bug guard
                results = [exc] * len(group)
            for (_, loop, future), result in zip(group, results):
                try:
                    loop.call_soon_threadsafe(_settle, future, result)
                except RuntimeError:  # the event loop is gone (replica shutting down)
                    pass

    def stop(self) -> None:
        self._queue.put(None)


def _settle(future: asyncio.Future, result: Any) -> None:
    if future.done():  # the request was cancelled meanwhile
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
