"""TrackingBuffer: fire-and-forget events, collapsed, batched and delivered in the background.

Split the way aiokafka splits its producer:

- :class:`~voyado_tracking._store.PendingStore` (pure, synchronous): collapse, thresholds,
  overflow and the event accounting;
- :class:`~voyado_tracking._sender.Sender` (owns the I/O tasks): due batches to requests,
  retries, bisection;
- :class:`~voyado_tracking._endings.Endings`: where events end when they are not sent (dead
  letters, drops, the spool, what the journal keeps);
- :class:`TrackingBuffer` (this module, the facade): binds to one event loop, checks what is
  enqueued, starts the sender lazily, and runs the bounded shutdown (drain, stop the sender,
  then keep, spool or count as dropped). Its lifecycle is one :class:`_State`.

Accounting invariant (checked by the tests): every event ``enqueued`` ends up exactly once as
``collapsed``, ``sent``, ``dropped``, ``dead_lettered`` or ``spooled``, or is still pending
(retrying included) or in flight.

No silent loss: every drop, dead letter and undelivered shutdown is logged (rate-limited, with
counts that add up, see ``_losslog``) as well as counted; a buffer that is garbage-collected
or still open at interpreter exit while holding events logs an error with the count.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import enum
import functools
import logging
import os
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Final

import attrs

from ._client import TrackingClient
from ._clock import Clock, MonotonicClock, wait_until
from ._endings import Endings
from ._errors import BufferClosedError, BufferFullError, VoyadoError
from ._journal import Journal, Journaling
from ._lifecycle import AsyncClosing, call_threadsafe
from ._models import Cart, ProductView
from ._sender import Sender
from ._settings import FlushSettings
from ._store import PendingStore
from ._wire import Event

__all__ = ["BufferStats", "TrackingBuffer"]

log = logging.getLogger("voyado_tracking")

_CANCEL_GRACE: Final = 1.0  # seconds for cancelled sends to hand their events back

# Bumped in a forked child: a buffer must never be used across fork (its loop, task and
# sockets belong to the parent).
_fork_generation = 0


def _after_fork() -> None:
    global _fork_generation
    _fork_generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


_NOT_READY: Final = object()  # never a running loop


class _State(enum.Enum):
    NEW = "new"  # not bound to an event loop yet
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


@attrs.frozen
class BufferStats:
    """A snapshot of a buffer's counters (events, except ``requests`` and ``retries``) and
    delivery delays (seconds)."""

    enqueued: int
    collapsed: int
    sent: int
    requests: int
    retries: int
    dropped: int
    dead_lettered: int
    spooled: int
    pending_carts: int
    pending_product_views: int
    in_flight: int
    recovered: int = 0
    journal_errors: int = 0
    # Seconds: the age of the oldest pending or retrying event (not in flight), and the
    # enqueue-to-2xx delay of recently delivered events (None before the first delivery).
    oldest_pending_age: float = 0.0
    delivery_delay_p50: float | None = None
    delivery_delay_p99: float | None = None


_open_buffers: weakref.WeakSet[TrackingBuffer] = weakref.WeakSet()


@atexit.register
def _report_unclosed_at_exit() -> None:
    for buffer in list(_open_buffers):
        buffer._report_unclosed("the interpreter is exiting")


class TrackingBuffer(AsyncClosing):
    """Fire-and-forget delivery of cart updates and product views.

    ``enqueue(event)`` returns at once; a background task collapses cart updates per
    ``cart_reference``, batches, retries and delivers through *client*. Close it with
    ``await aclose()`` or ``async with``: that drains within ``shutdown_timeout`` and spools
    the rest to ``spool_path`` (JSON Lines) if given.

    ``on_drop(event, reason)`` is called for each dropped event (reason ``"overflow"`` or
    ``"shutdown"``); ``on_dead_letter(event, error)`` for each event Voyado rejected or that
    exhausted the retry budget. Both run on the event loop and must not block. ``clock`` is
    for tests (``voyado_tracking.testing.FakeClock``).
    """

    def __init__(
        self,
        client: TrackingClient,
        settings: FlushSettings | None = None,
        *,
        on_drop: Callable[[Event, str], object] | None = None,
        on_dead_letter: Callable[[Event, VoyadoError], object] | None = None,
        spool_path: str | os.PathLike[str] | None = None,
        clock: Clock | None = None,
        journal: Journal | None = None,
    ) -> None:
        if not isinstance(client, TrackingClient):
            raise TypeError(f"client must be a TrackingClient, got {type(client).__name__}")
        if settings is None:
            settings = FlushSettings()
        elif not isinstance(settings, FlushSettings):
            raise TypeError(f"settings must be a FlushSettings, got {type(settings).__name__}")
        self.client = client
        self.settings = settings
        self._ends = Endings(client, settings, None if spool_path is None else Path(spool_path),
                             on_drop, on_dead_letter)  # dead letters, drops, spool, journal
        self._clock: Clock = MonotonicClock() if clock is None else clock
        self._now = self._clock.now
        self._store = PendingStore(settings, self._ends.dropped)
        self._journal = None if journal is None else Journaling(
            journal, self._store, client.transport.fingerprint("journal"), clock=self._clock,
            wake=lambda: self._sender.wake(), notify=self._notify, spooling=spool_path is not None,
        )
        self._ends.bind(self._store, self._journal)
        self._sender = Sender(
            self._store, client.transport.post, settings,
            clock=self._clock, on_final=self._ends.final, on_progress=self._notify,
            on_sent=None if self._journal is None else self._journal.resolved,
        )
        self._state = _State.NEW
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready_loop: object = _NOT_READY
        self._fork_generation = _fork_generation
        self._progress = asyncio.Event()
        self._closed: asyncio.Future[None] | None = None
        with contextlib.suppress(RuntimeError):  # else bound on first use inside a loop
            self._bind(asyncio.get_running_loop())

    @property
    def spool_path(self) -> Path | None:
        return self._ends.spool_path

    def __repr__(self) -> str:
        s = self._store
        return (
            f"<voyado_tracking.TrackingBuffer {self._state.value} "
            f"pending_carts={s.pending_carts} pending_product_views={s.pending_views} "
            f"in_flight={s.in_flight}>"
        )

    # -- intake -----------------------------------------------------------------------------

    def enqueue(self, event: Event) -> None:
        """Queue a Cart or ProductView for delivery. Synchronous, O(1), never blocks.

        Raises :class:`BufferClosedError` after close, :class:`BufferFullError` when full with
        ``overflow="raise"``, ``TypeError`` for anything that is not an event.
        """
        # One test for "open, in this loop, sender started, same process": _ready_loop is
        # the loop only while all of that holds (enqueue is the caller's cost: keep it short).
        if (
            asyncio._get_running_loop() is not self._ready_loop
            or self._fork_generation != _fork_generation
        ):
            self._ensure_running()  # starts the sender, or raises
        if self._journal is not None:
            self._journal.enqueue(event)
            return
        kind = type(event)
        if kind is ProductView:
            wake = self._store.add_view(event, self._now())  # type: ignore[arg-type]
        elif kind is Cart:
            wake = self._store.add_cart(event, self._now())  # type: ignore[arg-type]
        else:
            raise TypeError(f"enqueue() takes a Cart or ProductView, got {kind.__name__}")
        if wake:
            self._sender.wake()

    def enqueue_threadsafe(self, event: Event) -> concurrent.futures.Future[None]:
        """Queue an event from another thread; the future holds the outcome of ``enqueue``."""
        loop = self._loop
        if loop is None:
            raise RuntimeError(
                "the buffer is not bound to an event loop yet: create it, or enqueue once, "
                "inside the loop that runs it"
            )
        if self._state is not _State.OPEN:
            raise BufferClosedError("the buffer is closed")
        return call_threadsafe(loop, functools.partial(self.enqueue, event))

    async def put(self, event: Event, timeout: float | None = None) -> None:
        """Queue an event, waiting while the buffer is full (for bulk producers).

        Raises :class:`BufferFullError` if there is still no room after *timeout* seconds.
        """
        self._ensure_running()
        store = self._store

        def has_room() -> bool:
            if self._state is not _State.OPEN:
                return True  # let enqueue raise BufferClosedError
            if isinstance(event, Cart) and store.has_cart(event.cart_reference):
                return True
            return store.held < self.settings.max_pending

        if not await self._wait_until(has_room, timeout):
            raise BufferFullError(
                f"no room in the buffer after {timeout:g} s: it holds "
                f"{store.held} events (max_pending={self.settings.max_pending})"
            )
        self.enqueue(event)

    @property
    def stats(self) -> BufferStats:
        s = self._store
        oldest = s.oldest_pending_at()
        p50, p99 = self._sender.delays.percentiles()
        return BufferStats(
            enqueued=s.enqueued,
            collapsed=s.collapsed,
            sent=s.sent,
            requests=self._sender.requests,
            retries=self._sender.retries,
            dropped=s.dropped,
            dead_lettered=s.dead_lettered,
            spooled=s.spooled,
            pending_carts=s.pending_carts,
            pending_product_views=s.pending_views,
            in_flight=s.in_flight,
            recovered=s.recovered,
            journal_errors=0 if self._journal is None else self._journal.errors,
            oldest_pending_age=0.0 if oldest is None else self._clock.now() - oldest,
            delivery_delay_p50=p50,
            delivery_delay_p99=p99,
        )

    # -- flush and close --------------------------------------------------------------------

    async def sync(self, timeout: float | None = None) -> None:
        """With a journal: return once every event enqueued before the call is committed.

        Raises ``TimeoutError`` naming how many are not committed after *timeout* seconds, or
        at once if the journal stopped writing after an error. Without a journal there is
        nothing to commit: it returns at once.
        """
        self._ensure_running()
        if self._journal is not None:
            await self._journal.sync(timeout)

    async def flush(self, timeout: float | None = None) -> None:
        """Deliver everything enqueued before the call, ignoring the flush thresholds.

        Returns once those events are sent, dead-lettered or dropped (events enqueued during
        the flush are not waited for); raises ``TimeoutError`` if that takes longer than
        *timeout* seconds (they stay queued).
        """
        self._ensure_running()
        view_mark, cart_mark = self._store.marks()
        sender, journal = self._sender, self._journal

        def done() -> bool:
            if self._state is _State.CLOSED:
                return True  # everything was delivered, spooled or dropped
            # With a journal, also what recovery loads (flush() waits for the end of it).
            marks = (view_mark, cart_mark) if journal is None else journal.flush_marks(
                view_mark, cart_mark)
            return marks is not None and self._store.settled(*marks) and not sender.holds(
                *marks)

        sender.forcing += 1
        sender.wake()
        try:
            if not await self._wait_until(done, timeout):
                raise TimeoutError(f"flush() did not finish in {timeout:g} s: {self._held()}")
        finally:
            sender.forcing -= 1

    async def aclose(self, timeout: float | None = None) -> None:
        """Stop intake, deliver what is queued within *timeout* seconds, spool the rest.

        ``timeout`` defaults to ``settings.shutdown_timeout``; the call returns within it.
        Idempotent: a second call waits for the first.
        """
        if self._closed is not None:
            await asyncio.shield(self._closed)
            return
        self._check_fork()
        state, self._state = self._state, _State.CLOSING
        self._ready_loop = _NOT_READY
        _open_buffers.discard(self)
        self._closed = asyncio.get_running_loop().create_future()
        if state is _State.NEW:  # never used: nothing to drain
            self._finish_close()
            return
        timeout = self.settings.shutdown_timeout if timeout is None else max(0.0, timeout)
        deadline = self._clock.now() + timeout
        # Keep a slice of the time for cancelled requests to hand their events back.
        grace = min(_CANCEL_GRACE, timeout / 4)
        try:
            if self._store.held and not self.client.closed:
                self._sender.start()
                self._sender.forcing += 1
                self._sender.wake()
                await self._wait_until(
                    lambda: self._store.held == 0, deadline - grace - self._clock.now()
                )
        finally:
            try:
                await self._sender.stop(max(0.0, deadline - self._clock.now()))
            finally:
                # Also when cancelled again in there: nothing may stay unaccounted for.
                self._ends.dispose(self._store.drain())
                try:
                    if self._journal is not None:
                        await self._journal.aclose(deadline - self._clock.now())
                finally:
                    self._finish_close()

    def _finish_close(self) -> None:
        self._state = _State.CLOSED
        self._ends.losses.flush()
        self._notify()  # wake flush() and put() callers: it is over
        assert self._closed is not None
        self._closed.set_result(None)

    async def __aenter__(self) -> TrackingBuffer:
        self._ensure_running()
        return self

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_state", _State.CLOSED) in (_State.NEW, _State.OPEN):
            held = self._report_unclosed("it was garbage-collected")
            if held:
                _warn(
                    f"TrackingBuffer garbage-collected with {held} undelivered events; close "
                    "it with 'await buffer.aclose()'",
                    ResourceWarning, source=self, stacklevel=1,
                )

    def _report_unclosed(self, why: str) -> int:
        """Log (as an error) the events a buffer that was never closed still holds."""
        held = self._store.held
        if held and self._state in (_State.NEW, _State.OPEN):
            fate = "they are lost" if self._journal is None else self._journal.unclosed(held)
            log.error(
                "a TrackingBuffer was never closed and %s with %d undelivered events "
                "(%d carts, %d product views); %s. Close buffers with 'async with' "
                "or 'await buffer.aclose()'",
                why, held, self._store.pending_carts, self._store.pending_views, fate,
            )
        return held

    # -- internals: loop binding ------------------------------------------------------------

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._state = _State.OPEN
        _open_buffers.add(self)

    def _check_fork(self) -> None:
        if self._fork_generation != _fork_generation:
            raise RuntimeError("a TrackingBuffer cannot be used in a forked child process")

    def _ensure_running(self) -> None:
        self._check_fork()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "TrackingBuffer.enqueue() needs a running event loop; from another thread "
                "use enqueue_threadsafe()"
            ) from None
        if self._state is _State.NEW:
            self._bind(loop)
        elif loop is not self._loop:
            raise RuntimeError("this TrackingBuffer belongs to another event loop")
        if self._state is not _State.OPEN:
            raise BufferClosedError("the buffer is closed")
        self._sender.start()
        self._ready_loop = loop
        if self._journal is not None:
            self._journal.start()

    async def _wait_until(self, condition: Callable[[], bool], timeout: float | None) -> bool:
        """Wait until *condition* holds; False if *timeout* seconds pass first."""
        return await wait_until(self._clock, self._progress, condition, timeout,
                                before_wait=self._restart_sender)

    def _restart_sender(self) -> None:
        if self._state is _State.OPEN:
            self._sender.start()  # after a crash, before its restart ran

    def _notify(self) -> None:
        self._progress.set()
        if self._journal is not None:
            self._journal.progress()  # room may have freed for recovered events

    def _held(self) -> str:
        s = self._store
        return (
            f"{s.pending_carts} carts and {s.pending_views} product views pending "
            f"(retrying included), {s.in_flight} events in flight"
        )
