"""An event loop on its own daemon OS thread, and calls into it from other threads.

The :class:`~voyado_tracking.Tracker` runs its client and buffer here. Calls are handed over
with ``call_soon_threadsafe`` and answered through a :class:`_Handle`: a real OS lock that
the loop releases (a caller under gevent polls it with the patched ``time.sleep``, so the
hub keeps running). No ``concurrent.futures`` on the way: under gevent its locks would be
greenlet locks shared by two OS threads.

Under gevent's monkey-patching the thread is a real OS thread (the original
``_thread.start_new_thread``), the loop uses the original selector, and it resolves names on
real threads with the original ``getaddrinfo`` (the default executor would spawn greenlets in
a thread whose hub never runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final, Generic, TypeVar

from ._forksafe import cooperative, original, start_thread

__all__ = ["LoopThread"]

_T = TypeVar("_T")
_PARK_LIMIT: Final = 10.0  # seconds a loop stays parked if nobody resumes it


class LoopGoneError(RuntimeError):
    """The loop thread stopped: nothing can be handed to it any more."""


class _Handle(Generic[_T]):
    """One call's outcome, set on the loop thread and read by the caller."""

    __slots__ = ("_lock", "done", "error", "value")

    def __init__(self, allocate: Callable[[], Any]) -> None:
        self._lock = allocate()
        self._lock.acquire()
        self.done = False
        self.value: _T | None = None
        self.error: BaseException | None = None

    def settle(self, value: _T | None, error: BaseException | None) -> None:
        self.value, self.error = value, error
        self.done = True
        self._lock.release()

    def settle_task(self, task: asyncio.Task[_T]) -> None:
        if task.cancelled():
            self.settle(None, asyncio.CancelledError())
        else:
            error = task.exception()
            self.settle(None if error is not None else task.result(), error)

    def wait(self, timeout: float | None, cooperative: bool) -> bool:
        """Whether it settled within *timeout* seconds (None: no limit)."""
        if not cooperative:
            return bool(self._lock.acquire(True, -1 if timeout is None else max(0.0, timeout)))
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.0005
        while not self.done:  # time.sleep is gevent's: the hub runs meanwhile
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
        return True

    def result(self) -> _T:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


class LoopThread:
    """A fresh event loop running on a new daemon OS thread (started by the constructor)."""

    def __init__(self, name: str) -> None:
        self.cooperative = cooperative()
        self._allocate = original("_thread", "allocate_lock")
        self.loop = _new_loop(self.cooperative)
        self._stopped = self._allocate()
        self._stopped.acquire()
        self._resume: Any = None
        self.ident: int | None = None
        ready = self._allocate()
        ready.acquire()
        if self.cooperative:
            # The hub's modules load here, not under the loop thread's imports (a deadlock).
            importlib.import_module("gevent").get_hub()
        start_thread(lambda: self._run(ready), name)
        ready.acquire()  # a real wait, short: the thread is running its loop next

    def _run(self, ready: Any) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        self.ident = threading.get_ident()
        ready.release()
        try:
            loop.run_forever()
        finally:
            try:
                for task in asyncio.all_tasks(loop):
                    task.cancel()
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
                self._stopped.release()

    @property
    def on_loop(self) -> bool:
        """Whether the calling thread is the loop's."""
        return threading.get_ident() == self.ident

    def post(self, callback: Callable[..., object], *args: object) -> None:
        """Run *callback* on the loop soon (any thread); LoopGoneError once it stopped."""
        try:
            self.loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed
            raise LoopGoneError("the loop thread has stopped") from None

    def call(
        self, make: Callable[[], Coroutine[Any, Any, _T]], timeout: float | None
    ) -> tuple[bool, _T]:
        """Run the coroutine ``make()`` on the loop; wait up to *timeout* s for it.

        Returns ``(True, result)``, ``(False, None)`` on timeout (it goes on running), or
        raises what it raised.
        """
        handle: _Handle[_T] = _Handle(self._allocate)

        def begin() -> None:
            try:
                task = self.loop.create_task(make())
            except BaseException as error:
                handle.settle(None, error)
            else:
                task.add_done_callback(handle.settle_task)

        self.post(begin)
        if not handle.wait(timeout, self.cooperative):
            return False, None  # type: ignore[return-value]
        return True, handle.result()

    def run(self, function: Callable[[], _T], timeout: float | None) -> tuple[bool, _T]:
        """Run the plain *function* on the loop; as :meth:`call`."""
        handle: _Handle[_T] = _Handle(self._allocate)

        def begin() -> None:
            try:
                value = function()
            except BaseException as error:
                handle.settle(None, error)
            else:
                handle.settle(value, None)

        self.post(begin)
        if not handle.wait(timeout, self.cooperative):
            return False, None  # type: ignore[return-value]
        return True, handle.result()

    async def acall(self, make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
        """Await the coroutine ``make()``, run on this loop, from another event loop."""
        caller = asyncio.get_running_loop()
        future: asyncio.Future[_T] = caller.create_future()

        def answer(task: asyncio.Task[_T]) -> None:
            caller.call_soon_threadsafe(_copy, task, future)

        def begin() -> None:
            self.loop.create_task(make()).add_done_callback(answer)

        self.post(begin)
        return await future

    # -- fork and stop --------------------------------------------------------------------------

    def park(self, timeout: float) -> None:
        """Hold the loop between two callbacks until :meth:`resume` (before a fork), waiting
        up to *timeout* s for it to get there."""
        if self.on_loop or self.loop.is_closed():
            return
        parked, resume = self._allocate(), self._allocate()
        parked.acquire()
        resume.acquire()
        self._resume = resume

        def hold() -> None:
            parked.release()
            resume.acquire(True, _PARK_LIMIT)

        try:
            self.post(hold)
        except LoopGoneError:
            return
        parked.acquire(True, timeout)

    def resume(self) -> None:
        resume, self._resume = self._resume, None
        if resume is not None:
            resume.release()

    def stop(self, timeout: float) -> bool:
        """Stop the loop and close it; whether the thread ended within *timeout* s."""
        with contextlib.suppress(LoopGoneError):
            self.post(self.loop.stop)
        if self.cooperative:
            deadline = time.monotonic() + timeout
            while not self._stopped.acquire(False):
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.005)
            return True
        return bool(self._stopped.acquire(True, max(0.0, timeout)))


def _copy(task: asyncio.Task[_T], future: asyncio.Future[_T]) -> None:
    if future.done():
        return
    if task.cancelled():
        future.cancel()
    elif task.exception() is not None:
        future.set_exception(task.exception())  # type: ignore[arg-type]
    else:
        future.set_result(task.result())


def _new_loop(cooperative: bool) -> asyncio.AbstractEventLoop:
    if not cooperative:
        return asyncio.new_event_loop()
    return _RealThreadLoop(original("selectors", "DefaultSelector")())


class _RealThreadLoop(asyncio.SelectorEventLoop):
    """The loop under gevent: names are resolved on real threads, unpatched."""

    async def getaddrinfo(
        self, host: Any, port: Any, *, family: int = 0, type: int = 0, proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:
        resolve_now = original("socket", "getaddrinfo")
        future: asyncio.Future[list[Any]] = self.create_future()

        def resolve() -> None:
            try:
                result = resolve_now(host, port, family, type, proto, flags)
            except BaseException as error:
                self.call_soon_threadsafe(_settle, future, None, error)
            else:
                self.call_soon_threadsafe(_settle, future, result, None)

        original("_thread", "start_new_thread")(resolve, ())
        return await future


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)

