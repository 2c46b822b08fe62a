"""``async with`` for everything the library closes with ``await aclose()``, and handing a
call to an object's event loop from another thread (``enqueue_threadsafe``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

__all__ = ["AsyncClosing", "call_threadsafe", "stop_tasks"]

log = logging.getLogger("voyado_tracking")

_T = TypeVar("_T", bound="AsyncClosing")


class AsyncClosing:
    """A base class: ``async with obj:`` returns *obj* and awaits ``obj.aclose()`` on exit."""

    __slots__ = ()

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self: _T) -> _T:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def call_threadsafe(
    loop: asyncio.AbstractEventLoop, call: Callable[[], None]
) -> concurrent.futures.Future[None]:
    """Run *call* in *loop* (from any thread); the future holds its outcome."""
    future: concurrent.futures.Future[None] = concurrent.futures.Future()

    def run() -> None:
        try:
            call()
        except BaseException as error:
            future.set_exception(error)
        else:
            future.set_result(None)

    loop.call_soon_threadsafe(run)
    return future


async def stop_tasks(tasks: list[asyncio.Task[None]], grace: float, cancel: bool = True) -> None:
    """Wait up to *grace* seconds for *tasks* to end (cancelling them first if *cancel*), then
    cancel what is left and give it a second more: never an unbounded wait on a task that a
    library might keep from ending (a cancellation swallowed by a client library must not
    hang a shutdown)."""
    pending = [task for task in tasks if not task.done()]
    if cancel:
        for task in pending:
            task.cancel()
    if not pending:
        return
    _, left = await asyncio.wait(pending, timeout=max(grace, 0.01))
    for task in left:
        task.cancel()
    if left:
        _, stuck = await asyncio.wait(left, timeout=1.0)
        if stuck:
            log.error("%d background task(s) did not stop; abandoning them", len(stuck))
