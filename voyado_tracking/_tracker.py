"""Tracker: the synchronous facade for WSGI apps, Celery tasks and scripts.

A :class:`Tracker` owns, per process, one daemon OS thread running an event loop
(:class:`~voyado_tracking._loopthread.LoopThread`) with a ``TrackingClient`` and a
``TrackingBuffer`` (a ``RedisOutbox`` in fleet mode). Nothing starts in the constructor: the
thread starts on first use, so a tracker built at import time (``gunicorn --preload``, Celery
prefork) starts afresh in each worker.

The hand-off: ``enqueue`` appends to a deque and wakes the loop only when the loop is not
already due to take from it (one ``call_soon_threadsafe`` per burst, not per event); the loop
moves the deque into the buffer in slices. The bound ``max_pending`` counts the deque and the
buffer: past it the caller applies the overflow policy to the deque (``drop_newest`` drops the
new event, ``drop_oldest`` the oldest one still in the deque; an empty deque always takes the
event and lets the buffer decide), and the loop counts the drop and calls ``on_drop``.

Fork: in a child (``os.register_at_fork``) the inherited runtime (thread, loop, client,
buffer, journal writer) is dropped without being called and kept from being destroyed
(:func:`~voyado_tracking._forksafe.keep_forever`); the next use starts a new one. Before a
fork the parent's loop is parked between callbacks. Interpreter exit closes every tracker
within its ``shutdown_timeout`` (both in :mod:`voyado_tracking._trackerhooks`).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from types import TracebackType
from typing import Any, Final, TypeVar

from . import _trackerhooks as hooks
from ._client import TrackingClient
from ._errors import BufferClosedError
from ._intake import Intake
from ._journal import Journal
from ._loopthread import LoopGoneError, LoopThread
from ._models import Cart, ProductView
from ._outcomes import DeadLetterHook, DropHook
from ._settings import FlushSettings
from ._stats import BufferStats, OutboxStats
from ._validators import check_positive
from ._wire import Event

__all__ = ["Tracker"]

log = logging.getLogger("voyado_tracking")

_T = TypeVar("_T")
_SLICE: Final = 1000  # events moved from the deque into the buffer per loop callback
_STATS_WAIT: Final = 1.0  # seconds a caller waits for stats
_MARGIN: Final = 1.0  # seconds a caller waits past a timeout the loop side enforces


class _Runtime:
    """What a tracker runs on in one process."""

    __slots__ = ("client", "limiter", "overflowed", "queue", "scheduled", "sink", "thread")

    def __init__(self, thread: LoopThread) -> None:
        self.thread = thread
        self.queue: collections.deque[Event] = collections.deque()
        self.overflowed: collections.deque[Event] = collections.deque()
        self.scheduled = False  # the loop is due to take from the queue
        self.client: TrackingClient | None = None
        self.limiter: Any = None
        self.sink: Intake | None = None


class Tracker:
    """Send events from synchronous code: ``tracker.enqueue(event)`` returns at once.

    A background event loop on its own thread delivers them, as a ``TrackingBuffer`` would
    (``settings`` are its ``FlushSettings``; ``overflow="raise"`` is refused: ``enqueue`` never
    blocks or fails for a full buffer). With ``redis_url`` events go to a ``RedisOutbox``
    (fleet mode) and ``send`` and lookups share ``RedisRateLimiter(redis_url)``. ``journal``
    makes what is enqueued survive ``kill -9`` (``sync()`` says when it is committed).
    ``client_options`` are further ``TrackingClient`` keyword arguments (not ``session``).
    ``on_drop`` and ``on_dead_letter`` run on the tracker's thread and must not block.

    Safe across ``fork`` (each process starts its own thread, client and buffer on first
    use) and under gevent. Close it with ``close()`` or ``with``; at interpreter exit it is
    closed within ``shutdown_timeout`` seconds.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        settings: FlushSettings | None = None,
        user_agent: str | None = None,
        journal: Journal | None = None,
        redis_url: str | None = None,
        on_drop: DropHook | None = None,
        on_dead_letter: DeadLetterHook | None = None,
        spool_path: str | os.PathLike[str] | None = None,
        client_options: Mapping[str, Any] | None = None,
        shutdown_timeout: float = 5.0,
    ) -> None:
        if settings is None:
            settings = FlushSettings()
        elif not isinstance(settings, FlushSettings):
            raise TypeError(f"settings must be a FlushSettings, got {type(settings).__name__}")
        if settings.overflow == "raise":
            raise ValueError(
                "settings.overflow='raise' is not supported by a Tracker (enqueue never "
                "fails for a full buffer): use 'drop_oldest' or 'drop_newest'"
            )
        options = dict(client_options or {})
        if "session" in options:
            raise ValueError("client_options cannot hold 'session': the tracker's thread "
                             "makes its own, in each process")
        if journal is not None and not isinstance(journal, Journal):
            raise TypeError(f"journal must be a voyado_tracking.Journal, got "
                            f"{type(journal).__name__}")
        if redis_url is not None and not isinstance(redis_url, str):
            raise TypeError("redis_url must be a URL string (a Tracker connects again in "
                            f"each forked process), got {type(redis_url).__name__}")
        if redis_url is not None and journal is not None:
            raise ValueError("journal and redis_url cannot be combined: in fleet mode events "
                             "are kept in Redis")
        self.settings = settings
        self.shutdown_timeout = check_positive("shutdown_timeout", shutdown_timeout)
        self.journal = journal
        self._base_url = base_url
        self._api_key = api_key
        self._user_agent = user_agent
        self._redis_url = redis_url
        self._on_drop = on_drop
        self._on_dead_letter = on_dead_letter
        self._spool_path = spool_path
        self._options = options
        # Validates the URL, key and options now (a client opens nothing until used).
        self.base_url = TrackingClient(base_url, api_key, user_agent=user_agent,
                                       **options).base_url
        self._max_pending = settings.max_pending
        self._drop_newest = settings.overflow == "drop_newest"
        self._runtime: _Runtime | None = None
        self._closed = False
        self._start_lock = threading.Lock()
        self._sink_hooks: list[Callable[[Any], None]] = []  # vt.instrument's
        hooks.register(self)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._runtime else "not started"
        return f"<voyado_tracking.Tracker {state} base_url={self.base_url!r}>"

    # -- intake ---------------------------------------------------------------------------------

    def enqueue(self, event: Event) -> None:
        """Queue a Cart or ProductView for delivery; returns at once, never blocks.

        Raises :class:`BufferClosedError` after ``close()``, ``TypeError`` for anything that
        is not an event.
        """
        runtime = self._runtime
        if runtime is None:
            runtime = self._start()
        kind = type(event)
        if kind is not ProductView and kind is not Cart:
            raise TypeError(f"enqueue() takes a Cart or ProductView, got {kind.__name__}")
        queue = runtime.queue
        if queue and len(queue) + runtime.sink._store.held >= self._max_pending:  # type: ignore[union-attr]
            self._overflow(runtime, event)
        else:
            queue.append(event)
        if not runtime.scheduled:
            runtime.scheduled = True
            try:
                runtime.thread.post(self._take, runtime)
            except LoopGoneError:
                raise BufferClosedError("the tracker is closed") from None

    def _overflow(self, runtime: _Runtime, event: Event) -> None:
        if self._drop_newest:
            runtime.overflowed.append(event)
            return
        with contextlib.suppress(IndexError):  # the loop took them meanwhile
            runtime.overflowed.append(runtime.queue.popleft())
        runtime.queue.append(event)

    def _take(self, runtime: _Runtime, limit: int = _SLICE) -> None:
        """On the loop: move (a slice of) the deque into the buffer."""
        runtime.scheduled = False
        sink = runtime.sink
        assert sink is not None
        queue, enqueue = runtime.queue, sink.enqueue
        overflowed = runtime.overflowed
        while overflowed:
            sink.drop_unqueued(overflowed.popleft(), "overflow")
        for _ in range(min(len(queue), limit)):
            event = queue.popleft()
            try:
                enqueue(event)
            except BufferClosedError:  # enqueued while the tracker was closing
                sink.drop_unqueued(event, "shutdown")
        if queue and not runtime.scheduled:
            runtime.scheduled = True
            runtime.thread.loop.call_soon(self._take, runtime)

    def _take_all(self, runtime: _Runtime) -> None:
        self._take(runtime, limit=len(runtime.queue))

    # -- awaited calls --------------------------------------------------------------------------

    def send(self, event: Event, timeout: float = 10.0) -> None:
        """Deliver one event now; raises the client's typed errors, ``TimeoutError`` past
        *timeout* seconds."""
        self._call(lambda client: _register(client, event), timeout, "send()")

    async def asend(self, event: Event, timeout: float = 10.0) -> None:
        """``send`` for async code running in another event loop."""
        await self._acall(lambda client: _register(client, event), timeout, "asend()")

    def find_contact_id(self, *, timeout: float = 10.0, **keys: str | None) -> str | None:
        """``TrackingClient.find_contact_id`` (the same keyword arguments), from sync code."""
        return self._call(lambda client: client.find_contact_id(**keys), timeout,
                          "find_contact_id()")

    async def afind_contact_id(self, *, timeout: float = 10.0,
                               **keys: str | None) -> str | None:
        """``find_contact_id`` for async code running in another event loop."""
        return await self._acall(lambda client: client.find_contact_id(**keys),
                                 timeout, "afind_contact_id()")

    def _call(self, make: Callable[[TrackingClient], Awaitable[_T]], timeout: float,
              what: str) -> _T:
        runtime = self._runtime or self._start()

        async def run() -> _T:
            assert runtime.client is not None
            return await _within(make(runtime.client), timeout, what)

        return self._wait(runtime, run, timeout + _MARGIN, what)

    async def _acall(self, make: Callable[[TrackingClient], Awaitable[_T]], timeout: float,
                     what: str) -> _T:
        runtime = self._runtime or self._start()

        async def run() -> _T:
            assert runtime.client is not None
            return await _within(make(runtime.client), timeout, what)

        try:
            return await runtime.thread.acall(run)
        except LoopGoneError:
            raise BufferClosedError("the tracker is closed") from None

    def _wait(self, runtime: _Runtime, make: Callable[[], Coroutine[Any, Any, _T]],
              timeout: float | None, what: str) -> _T:
        try:
            done, value = runtime.thread.call(make, timeout)
        except LoopGoneError:
            raise BufferClosedError("the tracker is closed") from None
        if not done:
            raise TimeoutError(f"{what} did not finish in {timeout:g} s")
        return value

    # -- flush, sync, close, stats --------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> None:
        """Return once everything enqueued before the call was delivered, dead-lettered or
        dropped; ``TimeoutError`` after *timeout* seconds (None: no limit)."""
        runtime = self._used()
        if runtime is None:
            return

        async def run() -> None:
            self._take_all(runtime)
            assert runtime.sink is not None
            await runtime.sink.flush(timeout)

        self._wait(runtime, run, None if timeout is None else timeout + _MARGIN, "flush()")

    def sync(self, timeout: float | None = None) -> None:
        """With a journal: return once everything enqueued before the call is committed
        (``TimeoutError`` if not within *timeout* seconds). In fleet mode: once it is written
        to Redis. Without either: at once."""
        runtime = self._used()
        if runtime is None:
            return

        async def run() -> None:
            self._take_all(runtime)
            sink = runtime.sink
            if self._redis_url is not None:
                await sink.flush(timeout)  # type: ignore[union-attr]
            elif self.journal is not None:
                await sink.sync(timeout)  # type: ignore[union-attr]

        self._wait(runtime, run, None if timeout is None else timeout + _MARGIN, "sync()")

    def close(self, timeout: float | None = None) -> None:
        """Stop intake, deliver what is queued within *timeout* seconds (None:
        ``shutdown_timeout``), then spool or keep in the journal what is left. Idempotent;
        never waits much past *timeout*."""
        with self._start_lock:
            self._closed = True
            runtime, self._runtime = self._runtime, None
        if runtime is not None:
            _stop(runtime, self.shutdown_timeout if timeout is None else timeout, self)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def stats(self) -> BufferStats | OutboxStats:
        """A snapshot of the buffer's (the outbox's, in fleet mode) counters, events still
        in the hand-off included; the caller waits at most a second for the loop."""
        runtime = self._runtime
        if runtime is None:
            if self._redis_url is not None:
                return OutboxStats(0, 0, 0, 0, 0, 0)
            return BufferStats(*[0] * 11)

        def read() -> BufferStats | OutboxStats:
            self._take_all(runtime)
            return runtime.sink.stats  # type: ignore[union-attr, no-any-return]

        try:
            done, value = runtime.thread.run(read, _STATS_WAIT)
        except LoopGoneError:
            raise BufferClosedError("the tracker is closed") from None
        if not done:
            raise TimeoutError(f"the tracker's loop did not answer within {_STATS_WAIT:g} s")
        return value

    # -- the runtime ----------------------------------------------------------------------------

    def _used(self) -> _Runtime | None:
        """The runtime for flush() and sync(): none needed before first use, except with a
        journal (starting it recovers what the journal's directory holds)."""
        runtime = self._runtime
        if runtime is None:
            self._check_open()
            if self.journal is not None:
                runtime = self._start()
        return runtime

    def _check_open(self) -> None:
        if self._closed:
            raise BufferClosedError("the tracker is closed")

    def _start(self) -> _Runtime:
        with self._start_lock:
            self._check_open()
            if self._runtime is not None:
                return self._runtime
            runtime = _Runtime(LoopThread("voyado_tracking tracker"))
            try:
                runtime.thread.run(lambda: self._build(runtime), None)
            except BaseException:
                runtime.thread.stop(1.0)
                raise
            hooks.on_start()
            self._runtime = runtime
            return runtime

    def _build(self, runtime: _Runtime) -> None:
        """On the loop: the client and the sink of this process."""
        options = dict(self._options)
        if self._redis_url is not None:
            from .redis import RedisOutbox, RedisRateLimiter

            rate = options.get("max_requests_per_second") or 40.0
            runtime.limiter = RedisRateLimiter(self._redis_url, rate=rate)
            options["rate_limiter"] = runtime.limiter
        client = TrackingClient(self._base_url, self._api_key, user_agent=self._user_agent,
                                **options)
        runtime.client = client
        settings = self.settings
        if self._redis_url is not None:
            runtime.sink = RedisOutbox(
                self._redis_url, max_pending=settings.max_pending, overflow=settings.overflow,
                flush_interval=settings.flush_interval, on_drop=self._on_drop,
                spool_path=self._spool_path,
            )
        else:
            from ._buffer import TrackingBuffer

            runtime.sink = TrackingBuffer(
                client, settings, on_drop=self._on_drop, on_dead_letter=self._on_dead_letter,
                spool_path=self._spool_path, journal=self.journal,
            )
        for hook in self._sink_hooks:
            hook(runtime.sink)
        runtime.sink._ensure_running()

    def _follow_sinks(self, hook: Callable[[Any], None]) -> None:
        """For ``vt.instrument``: ``hook(sink)`` on the loop, now and for each new sink."""
        self._sink_hooks.append(hook)
        runtime = self._runtime
        if runtime is not None and (sink := runtime.sink) is not None:
            runtime.thread.run(lambda: hook(sink), 5.0)

    def _forked(self) -> None:
        """In a forked child: let go of the parent's runtime without calling it."""
        runtime, self._runtime = self._runtime, None
        self._start_lock = threading.Lock()
        if runtime is not None:
            from ._forksafe import keep_forever

            keep_forever(runtime)


def _stop(runtime: _Runtime, timeout: float, tracker: Tracker) -> None:
    """Close the sink and the client on the loop within *timeout*, then stop the thread."""

    async def run() -> None:
        sink, client = runtime.sink, runtime.client
        try:
            if sink is not None:
                tracker._take_all(runtime)
                await sink.aclose(timeout)
                tracker._take_all(runtime)  # enqueued during the close: counted as dropped
        finally:
            if client is not None:
                await client.aclose()
            close = getattr(runtime.limiter, "aclose", None)
            if close is not None:
                await close()

    thread = runtime.thread
    try:
        done, _ = thread.call(run, timeout + _MARGIN)
        if not done:
            log.error("the tracker did not close within %.1f s; abandoning its thread",
                      timeout)
    finally:
        thread.stop(_MARGIN)


async def _register(client: TrackingClient, event: Event) -> None:
    if type(event) is Cart:
        await client.register_cart(event)
    elif type(event) is ProductView:
        await client.register_product_view(event)
    else:
        raise TypeError(f"send() takes a Cart or ProductView, got {type(event).__name__}")


async def _within(awaitable: Awaitable[_T], timeout: float, what: str) -> _T:
    import asyncio

    try:
        return await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        raise TimeoutError(f"{what} did not finish in {timeout:g} s") from None
