"""TrackingBuffer: fire-and-forget events, collapsed, batched and delivered in the background.

Split the way aiokafka splits its producer:

``PendingStore``
    Pure and synchronous: the pending carts (an ordered map keyed by ``cart_reference``, so
    an update replaces the pending one in place) and product views (a FIFO), the events
    waiting to retry, the collapse and merge rule, the memory bound and overflow policies,
    thresholds and deadlines, and the event accounting behind ``stats``. It is driven with an
    explicit ``now``, so every rule is unit-testable without an event loop or a clock.
The flusher (``TrackingBuffer._run`` and the send tasks it starts)
    Owns the I/O. It sleeps on one wake-up event with the next deadline as timeout ("size or
    time"), takes due batches from the store, and delivers them through the client's
    single-attempt path: product views on up to ``max_concurrent_requests`` connections, cart
    batches one at a time so a cart's updates arrive in order. A retriable failure puts the
    unresolved events back with their own retry budget and holds the stream for a backoff; a
    rejected batch (400/413/422) is bisected until the bad event is alone.
``TrackingBuffer``
    The facade: binds to one event loop, checks what is enqueued, starts the flusher lazily,
    and runs the bounded shutdown (drain, stop the flusher, then spool or count as dropped).

Accounting invariant (checked by the tests): every event ``enqueued`` ends up exactly once as
``collapsed``, ``sent``, ``dropped``, ``dead_lettered`` or ``spooled``, or is still pending
(retrying included) or in flight.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import sys
import time
import warnings
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Union

import attrs
import orjson

from ._client import CARTS_BATCH, PRODUCT_VIEWS, TrackingClient
from ._errors import (
    ApiError,
    AuthenticationError,
    BufferClosedError,
    BufferFullError,
    RateLimitError,
    VoyadoError,
)
from ._eventfile import event_to_line
from ._models import Cart, ProductView
from ._settings import FlushSettings
from ._wire import _TO_WIRE, Event, size_hint

__all__ = ["BufferStats", "PendingStore", "TrackingBuffer"]

log = logging.getLogger("voyado_tracking")

Kind = Literal["carts", "product_views"]
DropReason = Literal["overflow", "shutdown"]
_REJECTED: Final = frozenset({400, 413, 422})
_LOG_EVERY: Final = 10.0  # seconds between two warnings of the same kind
_CANCEL_GRACE: Final = 1.0  # seconds for cancelled sends to hand their events back

# Bumped in a forked child: a buffer must never be used across fork (its loop, task and
# sockets belong to the parent).
_fork_generation = 0


def _after_fork() -> None:
    global _fork_generation
    _fork_generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


@attrs.frozen
class BufferStats:
    """A snapshot of a buffer's counters (events, except ``requests`` and ``retries``)."""

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


@attrs.define
class _Batch:
    """Events taken together from one stream, with what must survive a failed attempt."""

    kind: Kind
    events: list[Event]
    first_at: float  # arrival of its oldest event
    # The smallest arrival number among its events (views: position in arrival order; carts:
    # first-arrival number), for flush() to know whether it waits for this batch.
    mark: int
    seqs: list[int] | None = None  # carts: each cart's first-arrival number
    # The retry budget travels with the events, not with the stream: a success elsewhere in
    # the stream must not give a batch that keeps failing a fresh budget.
    attempts: int = 0
    first_failure: float = 0.0
    not_before: float = 0.0


# One request's worth of a batch: its events and, when already encoded, its body.
_Chunk = tuple[list[Event], Union[bytes, None]]  # noqa: UP007 (runtime alias, Python 3.10)


class PendingStore:
    """The pending events of one buffer. Pure: no I/O, no loop, time passed in as ``now``.

    Carts live in an ordered map ``cart_reference -> [cart, first arrival time, first-arrival
    number]``; an update replaces the cart in place and keeps the entry's place and age.
    Product views live in a FIFO. A view batch that failed waits in ``retry_views`` as it was,
    so its retry budget stays its own and no newer event joins it. A cart that failed waits in
    ``retry_carts`` (its entry extended with attempts, first failure and not-before), merged
    with any pending update of the same cart by the collapse rule: a cart reference has one
    entry in the two maps together, so updates of a retrying cart collapse into it. Neither
    retry store is touched by overflow, and both keep the fresh maps' operations O(1).
    """

    def __init__(
        self,
        settings: FlushSettings,
        on_drop: Callable[[Event, DropReason], None] | None = None,
    ) -> None:
        self.settings = settings
        self._on_drop = on_drop
        self.carts: OrderedDict[str, list[Any]] = OrderedDict()
        self.cart_bytes = 0
        self.cart_arrivals = 0  # first-arrival numbers handed out so far
        self.retry_carts: OrderedDict[str, list[Any]] = OrderedDict()
        self.views: deque[ProductView] = deque()
        self.view_times: deque[float] = deque()
        self.view_bytes = 0
        self.view_arrivals = 0  # views ever appended: the next view's arrival number
        self.retry_views: deque[_Batch] = deque()
        self.retrying_views = 0
        self.in_flight = 0
        self.enqueued = 0
        self.collapsed = 0
        self.sent = 0
        self.dropped = 0
        self.dead_lettered = 0
        self.spooled = 0

    # -- intake ---------------------------------------------------------------------------

    @property
    def held(self) -> int:
        """Events counted against ``max_pending``: pending, in flight and retrying."""
        return self.pending_carts + len(self.views) + self.retrying_views + self.in_flight

    @property
    def pending_carts(self) -> int:
        return len(self.carts) + len(self.retry_carts)

    def has_cart(self, reference: str) -> bool:
        """Whether an update of this cart is pending (so another one would collapse)."""
        return reference in self.carts or reference in self.retry_carts

    @property
    def pending_views(self) -> int:
        return len(self.views) + self.retrying_views

    def add(self, event: Event, now: float) -> bool:
        """Take an event; True when the flusher should wake up (new stream or threshold)."""
        if type(event) is ProductView:
            return self.add_view(event, now)
        return self.add_cart(event, now)  # type: ignore[arg-type]

    def add_view(self, view: ProductView, now: float) -> bool:
        settings = self.settings
        views = self.views
        # self.held, inlined: this is the hot path of enqueue().
        held = (
            len(self.carts) + len(self.retry_carts) + len(views) + self.retrying_views
            + self.in_flight
        )
        if held >= settings.max_pending and not self._make_room(view):
            return False
        self.enqueued += 1
        self.view_arrivals += 1
        views.append(view)
        self.view_times.append(now)
        self.view_bytes += size_hint(view)
        n = len(views)
        return (
            n == 1
            or n == settings.max_batch_size
            or self.view_bytes >= settings.max_batch_bytes
        )

    def add_cart(self, cart: Cart, now: float) -> bool:
        entry = self.carts.get(cart.cart_reference)
        if entry is None and self.retry_carts:
            entry = self.retry_carts.get(cart.cart_reference)
        if entry is not None:
            # An update of a pending cart: never overflow, only the latest instant survives.
            self.enqueued += 1
            self.collapsed += 1
            if cart.time >= entry[0].time:
                self.cart_bytes += size_hint(cart) - size_hint(entry[0])
                entry[0] = cart
            return False
        if self.held >= self.settings.max_pending and not self._make_room(cart):
            return False
        self.enqueued += 1
        self.carts[cart.cart_reference] = [cart, now, self.cart_arrivals]
        self.cart_arrivals += 1
        self.cart_bytes += size_hint(cart)
        n = len(self.carts)
        return (
            n == 1
            or n == self.settings.max_batch_size
            or self.cart_bytes >= self.settings.max_batch_bytes
        )

    def _make_room(self, incoming: Event) -> bool:
        """Apply the overflow policy; False when *incoming* itself is dropped."""
        policy = self.settings.overflow
        if policy == "raise":
            raise BufferFullError(
                f"the buffer holds max_pending={self.settings.max_pending} events"
            )
        if policy == "drop_oldest" and (self.carts or self.views):
            self._drop(self._pop_oldest(), "overflow")
            return True
        # drop_newest, or drop_oldest with everything in flight or retrying (never dropped)
        self.enqueued += 1
        self._drop(incoming, "overflow")
        return False

    def _pop_oldest(self) -> Event:
        if self.carts and (
            not self.views or next(iter(self.carts.values()))[1] <= self.view_times[0]
        ):
            _, (cart, _, _) = self.carts.popitem(last=False)
            self.cart_bytes -= size_hint(cart)
            return cart  # type: ignore[no-any-return]
        self.view_times.popleft()
        view = self.views.popleft()
        self.view_bytes -= size_hint(view)
        return view

    def _drop(self, event: Event, reason: DropReason) -> None:
        self.dropped += 1
        if self._on_drop is not None:
            self._on_drop(event, reason)

    # -- what is due, and when ------------------------------------------------------------

    def _fresh_due_at(self, kind: Kind, now: float, force: bool) -> float | None:
        """When the fresh events of a stream are due: now at a threshold, else by age."""
        oldest: float | None
        if kind == "carts":
            oldest = next(iter(self.carts.values()))[1] if self.carts else None
            count, size = len(self.carts), self.cart_bytes
        else:
            oldest = self.view_times[0] if self.view_times else None
            count, size = len(self.views), self.view_bytes
        if oldest is None:
            return None
        if force or count >= self.settings.max_batch_size or size >= self.settings.max_batch_bytes:
            return now
        return oldest + self.settings.flush_interval

    def _retry_due_at(self, kind: Kind) -> float | None:
        """When the first failed batch (or cart) of a stream may be retried."""
        if kind == "carts":
            return min((entry[5] for entry in self.retry_carts.values()), default=None)
        return min((b.not_before for b in self.retry_views), default=None)

    def due_at(self, kind: Kind, now: float, force: bool = False) -> float | None:
        """When a stream next has something to send (``None``: nothing pending)."""
        fresh = self._fresh_due_at(kind, now, force)
        retry = self._retry_due_at(kind)
        if fresh is None:
            return retry
        return fresh if retry is None else min(fresh, retry)

    def due(self, kind: Kind, now: float, force: bool = False) -> bool:
        """Whether a stream should be flushed now: size, bytes, age, a retry, or forced."""
        due_at = self.due_at(kind, now, force)
        return due_at is not None and due_at <= now

    # -- batches ---------------------------------------------------------------------------

    def take(self, kind: Kind, now: float) -> _Batch | None:
        """Remove the next batch of a stream (now in flight): a retry that is due first,
        else up to ``max_batch_size`` of the oldest fresh events."""
        if kind == "product_views":
            return self._take_views(now)
        return self._take_carts(now)

    def _take_views(self, now: float) -> _Batch | None:
        for batch in self.retry_views:
            if batch.not_before <= now:
                self.retry_views.remove(batch)
                self.retrying_views -= len(batch.events)
                self.in_flight += len(batch.events)
                return batch
        views, times = self.views, self.view_times
        if not views:
            return None
        count = min(self.settings.max_batch_size, len(views))
        batch = _Batch("product_views", [], times[0], self.view_arrivals - len(views))
        popleft = views.popleft
        batch.events = [popleft() for _ in range(count)]
        for _ in range(count):
            times.popleft()
        # The byte count is an estimate for the trigger only: scale it rather than measure the
        # taken events again.
        self.view_bytes = self.view_bytes * len(views) // (len(views) + count)
        self.in_flight += count
        return batch

    def _take_carts(self, now: float) -> _Batch | None:
        limit = self.settings.max_batch_size
        ready = []
        for reference, entry in self.retry_carts.items():
            if entry[5] <= now:
                ready.append(reference)
                if len(ready) == limit:
                    break
        entries: list[list[Any]]
        if ready:  # retried carts go first, in batches of their own
            entries = [self.retry_carts.pop(reference) for reference in ready]
        elif self.carts:
            popitem = self.carts.popitem
            entries = [popitem(last=False)[1] for _ in range(min(limit, len(self.carts)))]
            self.cart_bytes = (
                self.cart_bytes - sum(size_hint(e[0]) for e in entries) if self.carts else 0
            )
        else:
            return None
        events: list[Event] = [entry[0] for entry in entries]
        seqs = [entry[2] for entry in entries]
        batch = _Batch("carts", events, min(e[1] for e in entries), min(seqs), seqs)
        if ready:
            batch.attempts = max(e[3] for e in entries)
            batch.first_failure = min(e[4] for e in entries)
        self.in_flight += len(events)
        return batch

    def failed(
        self, batch: _Batch, events: list[Event], attempts: int, first_failure: float,
        not_before: float,
    ) -> None:
        """Put the unresolved *events* of a failed *batch* back, to retry after *not_before*.

        Views wait as a batch of their own. Each cart waits in ``retry_carts``, merged with a
        pending update of the same cart by the collapse rule: the pending update wins if it is
        at least as new (it arrived later, so it also wins an equal instant; the other counts
        as collapsed). The entry keeps the failed cart's retry budget and the first arrival.
        """
        self.in_flight -= len(events)
        if not events:
            return
        if batch.kind == "product_views":
            self.retry_views.append(
                _Batch("product_views", events, batch.first_at, batch.mark, None,
                       attempts, first_failure, not_before)
            )
            self.retrying_views += len(events)
            return
        seq_of = dict(zip(map(id, batch.events), batch.seqs or (), strict=False))
        for cart in events:
            assert isinstance(cart, Cart)
            reference = cart.cart_reference
            seq = seq_of.get(id(cart), batch.mark)
            entry = self.carts.pop(reference, None)
            if entry is not None:
                self.cart_bytes -= size_hint(entry[0])
            else:
                entry = self.retry_carts.pop(reference, None)
            first_at = batch.first_at
            if entry is not None:
                # Merge by the collapse rule; the pending update arrived later, so it also
                # wins an equal instant.
                self.collapsed += 1
                if cart.time <= entry[0].time:
                    cart = entry[0]
                first_at, seq = min(first_at, entry[1]), min(seq, entry[2])
            self.retry_carts[reference] = [
                cart, first_at, seq, attempts, first_failure, not_before
            ]

    def resolved(self, count: int, outcome: Literal["sent", "dead_lettered"]) -> None:
        """*count* in-flight events left the buffer."""
        self.in_flight -= count
        if outcome == "sent":
            self.sent += count
        else:
            self.dead_lettered += count

    def marks(self) -> tuple[int, int]:
        """Arrival numbers that every event enqueued so far is below: (views, carts)."""
        return self.view_arrivals, self.cart_arrivals

    def settled(self, view_mark: int, cart_mark: int) -> bool:
        """Whether no pending or retrying event arrived before these marks."""
        if self.views and self.view_arrivals - len(self.views) < view_mark:
            return False
        if any(batch.mark < view_mark for batch in self.retry_views):
            return False
        return not any(
            entry[2] < cart_mark for entry in (*self.carts.values(), *self.retry_carts.values())
        )

    def drain(self) -> list[Event]:
        """Remove and return every pending and retrying event."""
        events: list[Event] = [entry[0] for entry in self.retry_carts.values()]
        events.extend(entry[0] for entry in self.carts.values())
        for batch in self.retry_views:
            events.extend(batch.events)
        events.extend(self.views)
        self.carts.clear()
        self.retry_carts.clear()
        self.retry_views.clear()
        self.views.clear()
        self.view_times.clear()
        self.cart_bytes = self.view_bytes = self.retrying_views = 0
        return events


class _RateLimitedLog:
    """One warning per kind of failure every ``_LOG_EVERY`` seconds, with a count of the rest."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -_LOG_EVERY) >= _LOG_EVERY:
            suppressed = self._suppressed.pop(key, 0)
            suffix = f" ({suppressed} similar since the last warning)" if suppressed else ""
            self._last[key] = now
            log.warning(message + suffix, *args)
        else:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            log.debug(message, *args)


class _Retry(Exception):
    """The unresolved rest of a batch must go back to the queue after a backoff."""

    def __init__(self, error: VoyadoError) -> None:
        self.error = error


_KINDS: Final[tuple[Kind, Kind]] = ("carts", "product_views")
_PATHS: Final[dict[Kind, str]] = {"carts": CARTS_BATCH, "product_views": PRODUCT_VIEWS}


class TrackingBuffer:
    """Fire-and-forget delivery of cart updates and product views.

    ``enqueue(event)`` returns at once; a background task collapses cart updates per
    ``cart_reference``, batches, retries and delivers through *client*. Close it with
    ``await aclose()`` or ``async with``: that drains within ``shutdown_timeout`` and spools
    the rest to ``spool_path`` (JSON Lines) if given.

    ``on_drop(event, reason)`` is called for each dropped event (reason ``"overflow"`` or
    ``"shutdown"``); ``on_dead_letter(event, error)`` for each event Voyado rejected or that
    exhausted the retry budget. Both run on the event loop and must not block.
    """

    def __init__(
        self,
        client: TrackingClient,
        settings: FlushSettings | None = None,
        *,
        on_drop: Callable[[Event, str], object] | None = None,
        on_dead_letter: Callable[[Event, VoyadoError], object] | None = None,
        spool_path: str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(client, TrackingClient):
            raise TypeError(f"client must be a TrackingClient, got {type(client).__name__}")
        if settings is None:
            settings = FlushSettings()
        elif not isinstance(settings, FlushSettings):
            raise TypeError(f"settings must be a FlushSettings, got {type(settings).__name__}")
        self.client = client
        self.settings = settings
        self.spool_path = Path(spool_path) if spool_path is not None else None
        self._on_drop_cb = on_drop
        self._on_dead_letter_cb = on_dead_letter
        self._store = PendingStore(settings, self._dropped)
        self._clock = time.monotonic
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fork_generation = _fork_generation
        self._wake: asyncio.Event | None = None
        self._progress: asyncio.Event | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._sends: dict[asyncio.Task[None], tuple[_Batch, deque[_Chunk]]] = {}
        # Cart batches go one at a time, so updates of a cart reach Voyado in arrival order
        # even when their times are equal; product views use every allowed connection.
        self._capacity: dict[Kind, int] = {
            "carts": 1,
            "product_views": settings.max_concurrent_requests,
        }
        self._active: dict[Kind, int] = dict.fromkeys(_KINDS, 0)
        # A stream whose last attempt failed waits this long before it sends anything more.
        self._hold_until: dict[Kind, float] = dict.fromkeys(_KINDS, 0.0)
        self._forcing = 0
        self._closing = False
        self._stopping = False  # set by aclose() before it cancels: the flusher must not go on
        self._closed: asyncio.Future[None] | None = None
        self._requests = 0
        self._retries = 0
        self._crashes = 0
        self._log = _RateLimitedLog()
        with contextlib.suppress(RuntimeError):  # else bound on first use inside a loop
            self._bind(asyncio.get_running_loop())

    def __repr__(self) -> str:
        s = self._store
        state = "closed" if self._closing else "open"
        return (
            f"<voyado_tracking.TrackingBuffer {state} pending_carts={s.pending_carts} "
            f"pending_product_views={s.pending_views} in_flight={s.in_flight}>"
        )

    # -- intake -----------------------------------------------------------------------------

    def enqueue(self, event: Event) -> None:
        """Queue a Cart or ProductView for delivery. Synchronous, O(1), never blocks.

        Raises :class:`BufferClosedError` after close, :class:`BufferFullError` when full with
        ``overflow="raise"``, ``TypeError`` for anything that is not an event.
        """
        if self._closing:
            raise BufferClosedError("the buffer is closed")
        if self._fork_generation != _fork_generation:
            raise RuntimeError("a TrackingBuffer cannot be used in a forked child process")
        if asyncio._get_running_loop() is not self._loop or self._flusher is None:
            self._ensure_running()
        kind = type(event)
        # Straight to the stream's method: enqueue is the caller's cost, keep it short.
        if kind is ProductView:
            wake = self._store.add_view(event, self._clock())  # type: ignore[arg-type]
        elif kind is Cart:
            wake = self._store.add_cart(event, self._clock())  # type: ignore[arg-type]
        else:
            raise TypeError(f"enqueue() takes a Cart or ProductView, got {kind.__name__}")
        if wake:
            self._wake.set()  # type: ignore[union-attr]

    def enqueue_threadsafe(self, event: Event) -> concurrent.futures.Future[None]:
        """Queue an event from another thread; the future holds the outcome of ``enqueue``."""
        loop = self._loop
        if loop is None:
            raise RuntimeError(
                "the buffer is not bound to an event loop yet: create it, or enqueue once, "
                "inside the loop that runs it"
            )
        if self._closing:
            raise BufferClosedError("the buffer is closed")
        future: concurrent.futures.Future[None] = concurrent.futures.Future()

        def enqueue_in_loop() -> None:
            try:
                self.enqueue(event)
            except BaseException as error:
                future.set_exception(error)
            else:
                future.set_result(None)

        loop.call_soon_threadsafe(enqueue_in_loop)
        return future

    async def put(self, event: Event, timeout: float | None = None) -> None:
        """Queue an event, waiting while the buffer is full (for bulk producers).

        Raises :class:`BufferFullError` if there is still no room after *timeout* seconds.
        """
        self._ensure_running()
        store = self._store
        deadline = None if timeout is None else self._clock() + timeout

        def has_room() -> bool:
            if self._closing:
                return True  # let enqueue raise BufferClosedError
            if isinstance(event, Cart) and store.has_cart(event.cart_reference):
                return True
            return store.held < self.settings.max_pending

        try:
            await self._wait_until(has_room, deadline)
        except TimeoutError:
            raise BufferFullError(f"no room in the buffer after {timeout:g} s") from None
        self.enqueue(event)

    @property
    def stats(self) -> BufferStats:
        s = self._store
        return BufferStats(
            enqueued=s.enqueued,
            collapsed=s.collapsed,
            sent=s.sent,
            requests=self._requests,
            retries=self._retries,
            dropped=s.dropped,
            dead_lettered=s.dead_lettered,
            spooled=s.spooled,
            pending_carts=s.pending_carts,
            pending_product_views=s.pending_views,
            in_flight=s.in_flight,
        )

    # -- flush and close --------------------------------------------------------------------

    async def flush(self, timeout: float | None = None) -> None:
        """Deliver everything enqueued before the call, ignoring the flush thresholds.

        Returns once those events are sent, dead-lettered or dropped (events enqueued during
        the flush are not waited for); raises ``TimeoutError`` if that takes longer than
        *timeout* seconds (they stay queued).
        """
        self._ensure_running()
        view_mark, cart_mark = self._store.marks()
        marks: dict[Kind, int] = {"product_views": view_mark, "carts": cart_mark}
        deadline = None if timeout is None else self._clock() + timeout

        def done() -> bool:
            if self._closed is not None and self._closed.done():
                return True  # closed: everything was delivered, spooled or dropped
            return self._store.settled(view_mark, cart_mark) and not any(
                batch.mark < marks[batch.kind] for batch, _ in self._sends.values()
            )

        self._forcing += 1
        self._wake.set()  # type: ignore[union-attr]
        try:
            await self._wait_until(done, deadline)
        finally:
            self._forcing -= 1

    async def aclose(self, timeout: float | None = None) -> None:
        """Stop intake, deliver what is queued within *timeout* seconds, spool the rest.

        ``timeout`` defaults to ``settings.shutdown_timeout``; the call returns within it.
        Idempotent: a second call waits for the first.
        """
        if self._closed is not None:
            await asyncio.shield(self._closed)
            return
        if self._fork_generation != _fork_generation:
            raise RuntimeError("a TrackingBuffer cannot be used in a forked child process")
        self._closing = True
        if self._loop is None:  # never used: nothing to drain
            self._closed = asyncio.get_running_loop().create_future()
            self._closed.set_result(None)
            return
        self._closed = self._loop.create_future()
        timeout = self.settings.shutdown_timeout if timeout is None else max(0.0, timeout)
        deadline = self._clock() + timeout
        # Keep a slice of the time for cancelled requests to hand their events back.
        grace = min(_CANCEL_GRACE, timeout / 4)
        try:
            if self._store.held and not self.client.closed:
                self._ensure_flusher()
                self._forcing += 1
                self._wake.set()  # type: ignore[union-attr]
                with contextlib.suppress(TimeoutError):
                    await self._wait_until(
                        lambda: self._store.held == 0, deadline - grace
                    )
        finally:
            self._stopping = True
            self._wake.set()  # type: ignore[union-attr]
            sends = list(self._sends.values())
            try:
                await self._cancel_tasks(max(0.0, deadline - self._clock()))
            finally:
                # Also when cancelled again in there: nothing may stay unaccounted for.
                self._reclaim([*sends, *self._sends.values()])
                self._dispose(self._store.drain())
                if self._progress is not None:
                    self._progress.set()  # wake flush() and put() callers: it is over
                self._closed.set_result(None)

    async def __aenter__(self) -> TrackingBuffer:
        self._ensure_running()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        store = getattr(self, "_store", None)
        if store is not None and not getattr(self, "_closing", True) and store.held:
            _warn(
                f"TrackingBuffer garbage-collected with {store.held} undelivered "
                "events; close it with 'await buffer.aclose()'",
                ResourceWarning,
                source=self,
                stacklevel=1,
            )

    # -- internals: loop binding and tasks --------------------------------------------------

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()

    def _ensure_running(self) -> None:
        if self._fork_generation != _fork_generation:
            raise RuntimeError("a TrackingBuffer cannot be used in a forked child process")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "TrackingBuffer.enqueue() needs a running event loop; from another thread "
                "use enqueue_threadsafe()"
            ) from None
        if self._loop is None:
            self._bind(loop)
        elif loop is not self._loop:
            raise RuntimeError("this TrackingBuffer belongs to another event loop")
        if self._closing:
            raise BufferClosedError("the buffer is closed")
        self._ensure_flusher()

    def _ensure_flusher(self) -> None:
        if self._flusher is None:
            task = asyncio.get_running_loop().create_task(
                self._run(), name="voyado_tracking flusher"
            )
            task.add_done_callback(self._flusher_done)
            self._flusher = task

    def _flusher_done(self, task: asyncio.Task[None]) -> None:
        self._flusher = None
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            # Events stay in the store; the flusher restarts at once (and on next use).
            self._crashes += 1
            log.error("the TrackingBuffer flusher crashed; restarting it", exc_info=error)
            if not self._closing and self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon(self._restart_flusher)

    def _restart_flusher(self) -> None:
        if not self._closing and self._flusher is None:
            self._ensure_flusher()
            self._wake.set()  # type: ignore[union-attr]

    async def _wait_until(self, condition: Callable[[], bool], deadline: float | None) -> None:
        progress = self._progress
        assert progress is not None
        while not condition():
            if self._flusher is None and not self._closing:
                self._ensure_flusher()
            progress.clear()
            if deadline is None:
                await progress.wait()
                continue
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise TimeoutError
            if not await _wait(progress, remaining) and not condition():
                raise TimeoutError

    async def _cancel_tasks(self, grace: float) -> None:
        tasks = [t for t in (self._flusher, *self._sends) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            # Cancelled sends put their events back in the store; give them a moment.
            await asyncio.wait(tasks, timeout=max(grace, 0.01))

    def _reclaim(self, sends: list[tuple[_Batch, deque[_Chunk]]]) -> None:
        """Take back the events of sends that did not hand them back themselves.

        A send cancelled before its first step never runs its handler; one still running after
        the grace period finds its todo empty when it ends, so nothing is counted twice.
        """
        now = self._clock()
        for batch, todo in sends:
            if todo:
                events = _take_all(todo)
                self._store.failed(batch, events, batch.attempts, batch.first_failure, now)

    def _dispose(self, events: list[Event]) -> None:
        """Spool (or count as dropped) what is left at shutdown."""
        if not events:
            return
        store = self._store
        if self.spool_path is not None:
            try:
                with open(self.spool_path, "ab") as spool:
                    spool.writelines(event_to_line(e, reason="shutdown") for e in events)
            except OSError as error:
                log.error("could not write %d events to the spool file: %s", len(events), error)
            else:
                store.spooled += len(events)
                log.warning("spooled %d undelivered events to %s", len(events), self.spool_path)
                return
        for event in events:
            store._drop(event, "shutdown")
        log.warning(
            "dropped %d undelivered events at shutdown (set spool_path to keep them)",
            len(events),
        )

    # -- internals: callbacks ---------------------------------------------------------------

    def _dropped(self, event: Event, reason: DropReason) -> None:
        if self._on_drop_cb is not None:
            try:
                self._on_drop_cb(event, reason)
            except Exception:
                log.exception("on_drop callback failed")

    def _dead_letter(self, events: list[Event], error: VoyadoError) -> None:
        self._store.resolved(len(events), "dead_lettered")
        self._log.warning(
            f"dead:{type(error).__name__}", "dead-lettered %d event(s): %s", len(events), error
        )
        if self._on_dead_letter_cb is not None:
            for event in events:
                try:
                    self._on_dead_letter_cb(event, error)
                except Exception:
                    log.exception("on_dead_letter callback failed")

    # -- internals: the flusher -------------------------------------------------------------

    async def _run(self) -> None:
        store, wake = self._store, self._wake
        assert wake is not None
        limit = self.settings.max_concurrent_requests
        while not self._stopping:
            now = self._clock()
            force = self._forcing > 0
            wake_at: float | None = None
            for kind in _KINDS:
                while len(self._sends) < limit and self._active[kind] < self._capacity[kind]:
                    due_at = store.due_at(kind, now, force)
                    if due_at is None:
                        break
                    due_at = max(due_at, self._hold_until[kind])
                    if due_at > now:
                        wake_at = due_at if wake_at is None else min(wake_at, due_at)
                        break
                    batch = store.take(kind, now)
                    if batch is None:  # pragma: no cover - due_at said there was one
                        break
                    self._start_send(batch)
            wake.clear()
            if wake_at is None:
                await wake.wait()  # an enqueue, a finished send, flush() or close sets it
            else:
                await _wait(wake, wake_at - now)

    def _start_send(self, batch: _Batch) -> None:
        # Encoded inside the task: whatever happens, the events are in todo until resolved.
        todo: deque[_Chunk] = deque([(batch.events, None)])
        task = asyncio.get_running_loop().create_task(self._deliver(batch, todo))
        self._active[batch.kind] += 1
        self._sends[task] = (batch, todo)
        task.add_done_callback(self._send_done)

    def _send_done(self, task: asyncio.Task[None]) -> None:
        entry = self._sends.pop(task, None)
        if entry is not None:
            self._active[entry[0].kind] -= 1
        if self._wake is not None:
            self._wake.set()
        if self._progress is not None:
            self._progress.set()

    async def _deliver(self, batch: _Batch, todo: deque[_Chunk]) -> None:
        """Send a batch, bisecting rejected chunks; the events not yet resolved stay in *todo*.

        Whatever way this ends, each event of the batch is sent, dead-lettered, or back in the
        store: nothing vanishes.
        """
        last_chance: VoyadoError | None = None
        try:
            chunks = _chunks(batch.events, self.settings.max_batch_bytes)
            todo.clear()
            todo.extend(chunks)
            try:
                await self._send_chunks(batch.kind, todo)
            except _Retry as retry:
                events = _take_all(todo)
                if self._retry_later(batch, events, retry.error):
                    return
                if len(events) == 1:
                    self._dead_letter(events, retry.error)
                    return
                middle = len(events) // 2  # the whole batch is known to fail: start split
                todo.extend([(events[:middle], None), (events[middle:], None)])
                last_chance = retry.error
            if last_chance is not None:
                log.warning(
                    "retry budget spent for %d %s; trying halves once to isolate a bad event",
                    sum(len(e) for e, _ in todo), batch.kind.replace("_", " "),
                )
                await self._send_chunks(batch.kind, todo, last_chance)
        except asyncio.CancelledError:
            # Shutdown: what was not confirmed goes back to the store, to be spooled.
            self._store.failed(
                batch, _take_all(todo), batch.attempts, batch.first_failure, self._clock()
            )
            raise
        except Exception as error:  # a bug, not a Voyado answer: keep the events, retry later
            self._crashes += 1
            log.exception("unexpected error while sending a batch; it will be retried")
            events = _take_all(todo)
            if not self._retry_later(batch, events, error):
                self._dead_letter(events, VoyadoError(f"unexpected error: {error!r}"[:300]))
        else:
            if last_chance is None:
                self._hold_until[batch.kind] = 0.0  # Voyado answers again

    async def _send_chunks(
        self, kind: Kind, todo: deque[_Chunk], last_chance: VoyadoError | None = None
    ) -> None:
        """Send the chunks of *todo* in order, resolving each.

        A retriable failure raises ``_Retry`` (the failed chunk and the rest stay in *todo*),
        except in the *last chance* of a batch whose retry budget is spent: Voyado answers 500
        to some payloads, so one bad event must not take the batch down. Each failing chunk is
        then split and its halves tried once; a lone failing event is dead-lettered. Past
        ``2 log2(n) + 2`` failures the cause is not one event (Voyado is down): the rest is
        dead-lettered, so an outage costs a few requests, not one per event.
        """
        path = _PATHS[kind]
        store = self._store
        failures_left = 2 * sum(len(e) for e, _ in todo).bit_length() + 2
        while todo:
            events, body = todo[0]
            self._requests += 1
            try:
                await self.client._send(path, body if body is not None else _encode(events))
            except AuthenticationError as error:
                for chunk_events in _take_chunks(todo):
                    self._dead_letter(chunk_events, error)
                return
            except ApiError as error:
                if error.retriable:
                    if last_chance is None:
                        raise _Retry(error) from None
                    failures_left = self._split_or_give_up(todo, error, failures_left)
                    continue
                todo.popleft()
                if error.status in _REJECTED and len(events) > 1:
                    # Bisect: the good half goes through, the bad one is split again.
                    middle = len(events) // 2
                    todo.extendleft([(events[middle:], None), (events[:middle], None)])
                    continue
                self._dead_letter(events, error)  # the isolated bad event, or a final status
            except VoyadoError as error:  # TransportError
                if last_chance is None:
                    raise _Retry(error) from None
                failures_left = self._split_or_give_up(todo, error, failures_left)
            else:
                todo.popleft()
                store.resolved(len(events), "sent")

    def _split_or_give_up(
        self, todo: deque[_Chunk], error: VoyadoError, failures_left: int
    ) -> int:
        """Last chance: split the failed head chunk, or dead-letter (it, or everything)."""
        events, _ = todo.popleft()
        failures_left -= 1
        if failures_left <= 0:
            self._dead_letter(events, error)
            for chunk_events in _take_chunks(todo):
                self._dead_letter(chunk_events, error)
        elif len(events) == 1:
            self._dead_letter(events, error)
        else:
            middle = len(events) // 2
            todo.extendleft([(events[middle:], None), (events[:middle], None)])
        return failures_left

    def _retry_later(self, batch: _Batch, events: list[Event], error: Exception) -> bool:
        """Back off and put *events* back; False (events untouched) when the budget is spent."""
        if not events:
            return True
        now = self._clock()
        attempts = batch.attempts + 1
        first_failure = batch.first_failure if batch.attempts else now
        policy = self.settings.retry
        wait = policy.backoff(attempts)
        if isinstance(error, RateLimitError) and error.retry_after is not None:
            wait = max(wait, error.retry_after)
        if not policy.allows(attempts, now - first_failure, wait):
            log.error("retry budget exhausted after %d attempts for %d events",
                      attempts, len(events))
            return False
        self._retries += 1
        self._hold_until[batch.kind] = max(self._hold_until[batch.kind], now + wait)
        self._log.warning(
            f"retry:{batch.kind}",
            "delivery of %d %s failed (%s); retrying in %.1f s",
            len(events),
            batch.kind.replace("_", " "),
            error,
            wait,
        )
        self._store.failed(batch, events, attempts, first_failure, now + wait)
        return True


if sys.version_info >= (3, 11):

    async def _wait(event: asyncio.Event, timeout: float) -> bool:
        """Wait for *event* at most *timeout* seconds; False on timeout.

        Not ``asyncio.wait_for``: on Python 3.10 and 3.11 it swallows a cancellation that
        arrives as the event is set, which let a cancelled flusher run on after close.
        """
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            return False
        return True

else:  # pragma: no cover - Python 3.10

    async def _wait(event: asyncio.Event, timeout: float) -> bool:
        waiter = asyncio.ensure_future(event.wait())
        try:
            done, _ = await asyncio.wait({waiter}, timeout=timeout)
        finally:
            waiter.cancel()
        return bool(done)


def _parts(events: list[Event]) -> list[bytes]:
    """Each event's JSON on its own.

    One wire dict is alive at a time, so encoding allocates no batch of GC-tracked containers:
    a list of 500 dicts would survive collections, get promoted and eventually trigger a full
    collection over every buffered event, stalling the loop for tens of milliseconds.
    """
    to_wire, dumps = _TO_WIRE, orjson.dumps
    return [dumps(to_wire[type(e)](e)) for e in events]


def _encode(events: list[Event]) -> bytes:
    return b"[" + b",".join(_parts(events)) + b"]"


def _chunks(events: list[Event], max_bytes: int) -> list[_Chunk]:
    """Encoded request bodies of at most *max_bytes* (a lone larger event goes alone)."""
    parts = _parts(events)
    if sum(map(len, parts)) + len(parts) + 1 <= max_bytes or len(events) == 1:
        return [(events, b"[" + b",".join(parts) + b"]")]
    chunks: list[_Chunk] = []
    start, size = 0, 2  # the brackets
    for index, part in enumerate(parts):
        if index > start and size + len(part) + 1 > max_bytes:
            chunks.append((events[start:index], b"[" + b",".join(parts[start:index]) + b"]"))
            start, size = index, 2
        size += len(part) + 1
    chunks.append((events[start:], b"[" + b",".join(parts[start:]) + b"]"))
    return chunks


def _take_chunks(todo: deque[_Chunk]) -> list[list[Event]]:
    chunks = [events for events, _ in todo]
    todo.clear()
    return chunks


def _take_all(todo: deque[_Chunk]) -> list[Event]:
    """Empty *todo* and return its events (so that no one else can resolve them twice)."""
    return [event for events in _take_chunks(todo) for event in events]
