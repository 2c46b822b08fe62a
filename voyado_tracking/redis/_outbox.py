"""RedisOutbox: the intake of a fleet worker. Events go to a Redis stream, never to Voyado.

``enqueue`` costs what ``TrackingBuffer.enqueue`` costs: it adds the event to a
:class:`~voyado_tracking._store.PendingStore` (the same bound, overflow policy and cart
collapse as a buffer). One background task takes what is due (``flush_interval``, or a full
pipeline) and writes it with pipelined ``XADD``s, one entry per event.

While Redis is unreachable the events wait in the store under ``max_pending``; the batch that
failed is retried with backoff, and at close whatever is left is spooled (JSON Lines, the
format ``voyado-tracking send`` reads) or counted as dropped. A killed worker loses what it
had not written yet: normally under ``flush_interval`` of events.

Accounting: ``enqueued == collapsed + sent + dropped + spooled + pending``, where ``sent``
counts entries written to the stream.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

import attrs

from .._clock import Clock, MonotonicClock, wait_until
from .._errors import BufferClosedError, BufferFullError
from .._eventfile import append_events
from .._lifecycle import AsyncClosing, call_threadsafe, stop_tasks
from .._losslog import LossLog
from .._models import Cart, ProductView
from .._records import KINDS, Batch, DropReason
from .._retry import RetryPolicy
from .._settings import FlushSettings
from .._store import PendingStore
from .._wire import Event
from ._stream import DEFAULT_STREAM, REDIS_ERRORS, RedisUrl, close_client, connect, encode_entry

__all__ = ["OutboxStats", "RedisOutbox"]

log = logging.getLogger("voyado_tracking")

_PIPELINE: Final = 500  # entries per pipelined write
_BACKOFF: Final = RetryPolicy(max_attempts=None, initial_backoff=0.1, max_backoff=5.0,
                              max_elapsed=1e12)
_SHUTDOWN_TIMEOUT: Final = 30.0


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


@attrs.frozen
class OutboxStats:
    """A snapshot of an outbox's counters; ``sent`` counts entries written to the stream."""

    enqueued: int
    collapsed: int
    sent: int
    dropped: int
    spooled: int
    pending: int


class RedisOutbox(AsyncClosing):
    """Queue events for the fleet's forwarders: ``outbox.enqueue(event)``, as with a buffer.

    ``redis_url`` is a URL (``redis://host:6379/0``) or a ``redis.asyncio.Redis`` you built
    (borrowed: never closed). ``on_drop(event, reason)`` is called for each dropped event.
    """

    def __init__(
        self,
        redis_url: RedisUrl,
        *,
        stream: str = DEFAULT_STREAM,
        max_pending: int = 10_000,
        overflow: str = "drop_oldest",
        flush_interval: float = 0.05,
        on_drop: Callable[[Event, str], object] | None = None,
        spool_path: str | os.PathLike[str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        # FlushSettings validates the shared knobs (bound, overflow policy, interval).
        self._settings = FlushSettings(
            max_batch_size=min(_PIPELINE, max_pending), max_pending=max_pending,
            overflow=overflow, flush_interval=flush_interval,  # type: ignore[arg-type]
        )
        self.stream = str(stream)
        self.spool_path = Path(spool_path) if spool_path is not None else None
        self._on_drop = on_drop
        self._redis, self._owns_redis = connect(redis_url)
        self._clock: Clock = MonotonicClock() if clock is None else clock
        self._store = PendingStore(self._settings, self._dropped)
        self._losses = LossLog()
        self._state = _State.NEW
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._writing: list[Batch] = []
        self._forcing = 0
        self._hold_until = 0.0
        self._failures = 0

    def __repr__(self) -> str:
        return (
            f"<voyado_tracking.RedisOutbox {self._state.value} stream={self.stream!r} "
            f"pending={self._store.held}>"
        )

    # -- intake -------------------------------------------------------------------------------

    def enqueue(self, event: Event) -> None:
        """Queue a Cart or ProductView for the stream. Synchronous, O(1), never blocks."""
        if (
            self._task is None
            or self._state is not _State.OPEN
            or asyncio._get_running_loop() is not self._loop
        ):
            self._start()
        kind = type(event)
        if kind is ProductView:
            wake = self._store.add_view(event, self._clock.now())  # type: ignore[arg-type]
        elif kind is Cart:
            wake = self._store.add_cart(event, self._clock.now())  # type: ignore[arg-type]
        else:
            raise TypeError(f"enqueue() takes a Cart or ProductView, got {kind.__name__}")
        if wake:
            self._wake.set()

    def enqueue_threadsafe(self, event: Event) -> concurrent.futures.Future[None]:
        """Queue an event from another thread; the future holds the outcome of ``enqueue``."""
        if self._loop is None or self._state is not _State.OPEN:
            raise BufferClosedError("the outbox is closed") if self._loop else RuntimeError(
                "the outbox is not bound to an event loop yet: use it once inside its loop"
            )
        return call_threadsafe(self._loop, functools.partial(self.enqueue, event))

    async def put(self, event: Event, timeout: float | None = None) -> None:
        """Queue an event, waiting while the outbox is full; BufferFullError after *timeout*."""
        self._start()
        store, bound = self._store, self._settings.max_pending

        def room() -> bool:
            return (
                self._state is not _State.OPEN
                or (isinstance(event, Cart) and store.has_cart(event.cart_reference))
                or store.held < bound
            )

        if not await self._wait_until(room, timeout):
            raise BufferFullError(f"no room in the outbox after {timeout:g} s "
                                  f"(max_pending={bound})")
        self.enqueue(event)

    @property
    def stats(self) -> OutboxStats:
        s = self._store
        return OutboxStats(s.enqueued, s.collapsed, s.sent, s.dropped, s.spooled, s.held)

    # -- flush and close ----------------------------------------------------------------------

    async def flush(self, timeout: float | None = None) -> None:
        """Return once everything enqueued before the call is written to Redis (or dropped).

        ``TimeoutError`` after *timeout* seconds; the events stay queued.
        """
        self._start()
        view_mark, cart_mark = self._store.marks()
        marks = {"product_views": view_mark, "carts": cart_mark}

        def done() -> bool:
            return self._state is _State.CLOSED or (
                self._store.settled(view_mark, cart_mark)
                and not any(b.mark < marks[b.kind] for b in self._writing)
            )

        self._forcing += 1
        self._wake.set()
        try:
            if not await self._wait_until(done, timeout):
                raise TimeoutError(f"flush() did not finish in {timeout:g} s: "
                                   f"{self._store.held} events not yet written to Redis")
        finally:
            self._forcing -= 1

    async def aclose(self, timeout: float | None = None) -> None:
        """Stop intake, write what is queued within *timeout* seconds, spool the rest."""
        if self._state in (_State.CLOSING, _State.CLOSED):
            await self._wait_until(lambda: self._state is _State.CLOSED, None)
            return
        started = self._state is _State.OPEN
        self._state = _State.CLOSING
        timeout = _SHUTDOWN_TIMEOUT if timeout is None else max(0.0, timeout)
        try:
            if started and self._store.held:
                self._forcing += 1
                self._wake.set()
                await self._wait_until(lambda: self._store.held == 0, timeout)
        finally:
            try:
                await self._stop_task()
            finally:
                self._dispose(self._store.drain())
                self._state = _State.CLOSED
                self._losses.flush()
                self._progress.set()
                if self._owns_redis:
                    await close_client(self._redis)

    async def __aenter__(self) -> RedisOutbox:
        self._start()
        return self

    # -- the writer task ----------------------------------------------------------------------

    def _start(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "RedisOutbox.enqueue() needs a running event loop; from another thread use "
                "enqueue_threadsafe()"
            ) from None
        if self._state is _State.NEW:
            self._loop, self._state = loop, _State.OPEN
        if self._state is not _State.OPEN:
            raise BufferClosedError("the outbox is closed")
        if loop is not self._loop:
            raise RuntimeError("this RedisOutbox belongs to another event loop")
        if self._task is None:
            self._task = loop.create_task(self._run(), name="voyado_tracking outbox")
            self._task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._task = None
        if not task.cancelled() and task.exception() is not None:
            log.error("the RedisOutbox writer crashed; restarting it", exc_info=task.exception())
            if self._state is _State.OPEN:
                task.get_loop().call_soon(self._start)

    async def _stop_task(self) -> None:
        task = self._task
        if task is not None:
            await stop_tasks([task], 1.0)
        # A write cancelled mid-pipeline: its events may or may not be in Redis. Keep them
        # (a duplicate view beats a lost one); they are spooled with the rest.
        now = self._clock.now()
        for batch in self._writing:
            self._store.failed(batch, batch.events, 0, 0.0, now)
        self._writing.clear()

    async def _run(self) -> None:
        store, wake, clock = self._store, self._wake, self._clock
        while True:
            now = clock.now()
            force = self._forcing > 0
            due_at = min(
                (d for kind in KINDS if (d := store.due_at(kind, now, force)) is not None),
                default=None,
            )
            if due_at is not None:
                due_at = max(due_at, self._hold_until)
            wake.clear()
            if due_at is None:
                await wake.wait()
            elif due_at > now:
                await clock.wait(wake, due_at - now)
            else:
                await self._write_due(now, force)

    async def _write_due(self, now: float, force: bool) -> None:
        store = self._store
        batches = [
            batch for kind in KINDS
            if store.due(kind, now, force) and (batch := store.take(kind, now)) is not None
        ]
        self._writing = batches
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for batch in batches:
                    for event in batch.events:
                        pipe.xadd(self.stream, encode_entry(event))  # type: ignore[arg-type]
                await pipe.execute()
        except REDIS_ERRORS as error:
            self._writing = []
            self._failures += 1
            wait = _BACKOFF.backoff(self._failures)
            self._hold_until = self._clock.now() + wait
            for batch in batches:
                store.failed(batch, batch.events, self._failures, 0.0, self._hold_until)
            self._losses.record(
                "redis-down", sum(len(b.events) for b in batches),
                "Redis unreachable; will retry writing",
                f"{type(error).__name__}: {error}"[:200],
            )
        else:
            self._writing = []
            self._failures = 0
            for batch in batches:
                store.resolved(len(batch.events), "sent")
        self._progress.set()

    # -- internals ----------------------------------------------------------------------------

    async def _wait_until(self, condition: Callable[[], bool], timeout: float | None) -> bool:
        return await wait_until(self._clock, self._progress, condition, timeout)

    def _dropped(self, event: Event, reason: DropReason) -> None:
        self._losses.record(
            f"drop:{reason}", 1,
            f"outbox full (max_pending={self._settings.max_pending}): dropped"
            if reason == "overflow" else f"outbox {reason}: dropped",
        )
        if self._on_drop is not None:
            try:
                self._on_drop(event, reason)
            except Exception:
                log.exception("on_drop callback failed")

    def _dispose(self, events: list[Event]) -> None:
        """Spool (or count as dropped) what could not be written to Redis by close."""
        if not events:
            return
        if self.spool_path is not None:
            try:
                append_events(self.spool_path, events, reason="shutdown")
            except OSError as error:
                log.error("could not write %d events to the spool file: %s", len(events), error)
            else:
                self._store.count_spooled(len(events))
                log.warning("spooled %d events not written to Redis to %s",
                            len(events), self.spool_path)
                return
        for event in events:
            self._store.drop(event, "shutdown")
        log.warning("dropped %d events not written to Redis at close (set spool_path to keep "
                    "them)", len(events))
