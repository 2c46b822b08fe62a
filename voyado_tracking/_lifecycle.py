"""``async with`` for everything the library closes with ``await aclose()``, and handing a
call to an object's event loop from another thread (``enqueue_threadsafe``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

__all__ = ["AsyncClosing", "call_threadsafe"]

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
