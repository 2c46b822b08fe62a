"""Intake: the lifecycle every event sink shares (``TrackingBuffer``, ``RedisOutbox``).

OpenTelemetry keeps all the logic of its batch processors in one ``BatchProcessor``; this is
ours. An :class:`Intake` owns a :class:`PendingStore` (through its :class:`Outcomes`) and a
:class:`Drain`, the background part that empties the store (the buffer's ``Sender``, the
outbox's stream writer). It does, once for every sink:

- the lifecycle, one :class:`State`: ``NEW`` (not bound to an event loop yet), ``OPEN``,
  ``CLOSING``, ``CLOSED``;
- the binding to one event loop and one process (a sink must never be used across ``fork``:
  its loop, tasks and sockets belong to the parent). In a forked child every entry point
  fails at once with :class:`ForkedProcessError` (``enqueue_threadsafe`` returns a failed
  future rather than one no loop will ever run), logged once per sink; the open sinks the
  child inherited are kept alive and never called, so their destructors neither close the
  parent's sockets nor log or warn about the parent's events;
- ``enqueue`` (type dispatch into the store, the journal's append first when there is one),
  ``enqueue_threadsafe``, ``put`` (waits for room), ``flush`` (waits until the events enqueued
  before it are no longer owed), and the bounded ``aclose``: drain within the timeout, stop the
  drain, then keep, spool or count as dropped what is left (:meth:`Outcomes.dispose`);
- a sink never closed: logged with its count when garbage-collected or at interpreter exit.

Subclasses say what differs: their drain's delivery target, what else to close
(:meth:`_close_resources`), and their words in messages.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import enum
import functools
import logging
import os
import warnings
import weakref
from collections.abc import Callable
from typing import Any, Final, Protocol, TypeVar

from ._clock import Clock, wait_until
from ._errors import BufferClosedError, BufferFullError, ForkedProcessError
from ._lifecycle import AsyncClosing, call_threadsafe
from ._models import Cart, ProductView
from ._outcomes import Outcomes
from ._records import Lanes
from ._settings import FlushSettings
from ._wire import Event

__all__ = ["Drain", "Intake", "Lifecycle", "State", "drain_then_stop"]

log = logging.getLogger("voyado_tracking")

_CANCEL_GRACE: Final = 1.0  # seconds for cancelled sends to hand their events back

# Bumped in a forked child: a sink must never be used across fork.
_fork_generation = 0


def _after_fork() -> None:
    global _fork_generation
    _fork_generation += 1
    inherited = list(_open_sinks)
    _open_sinks.clear()
    if inherited:
        from ._forksafe import keep_forever

        keep_forever(inherited)  # never destroyed here: see the module docstring


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


_NOT_READY: Final = object()  # never a running loop


class State(enum.Enum):
    NEW = "new"  # not bound to an event loop yet
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Drain(Protocol):
    """The background part of a sink: empties its store (sends, writes)."""

    lanes: Lanes  # what it has in flight; ``lanes.forcing`` while flush() or close waits

    def start(self) -> None:
        """Start in the running loop (idempotent; never after stop)."""

    def wake(self) -> None:
        """Something new may be due."""

    async def stop(self, grace: float) -> None:
        """Stop within *grace* seconds; what it held is back in the store."""


class _Journal(Protocol):
    append: Callable[[Event], None]

    def start(self) -> None: ...


_open_sinks: weakref.WeakSet[Intake] = weakref.WeakSet()
_I = TypeVar("_I", bound="Intake")


@atexit.register
def _report_unclosed_at_exit() -> None:
    for sink in list(_open_sinks):
        if sink._fork_generation == _fork_generation:
            sink._report_unclosed("the interpreter is exiting")


class Lifecycle(AsyncClosing):
    """The state of a sink (or a forwarder) and its bounded close, over a drain."""

    _noun = "buffer"  # in messages: "the buffer is closed"

    def __init__(
        self, settings: FlushSettings, outcomes: Outcomes, drain: Drain, clock: Clock
    ) -> None:
        self.settings = settings
        self._outcomes = outcomes
        self._store = outcomes.store
        self._drain = drain
        self._clock = clock
        self._state = State.NEW
        self._fork_generation = _fork_generation
        self._fork_logged = False
        self._closed: asyncio.Future[None] | None = None

    async def aclose(self, timeout: float | None = None) -> None:
        """Stop intake, hand over what is queued within *timeout* seconds, spool the rest.

        ``timeout`` defaults to ``settings.shutdown_timeout``; the call returns within it.
        Idempotent: a second call waits for the first.
        """
        self._check_fork()
        if self._closed is not None:
            await asyncio.shield(self._closed)
            return
        state, self._state = self._state, State.CLOSING
        self._closing()
        self._closed = asyncio.get_running_loop().create_future()
        timeout = self.settings.shutdown_timeout if timeout is None else max(0.0, timeout)
        clock = self._clock
        deadline = clock.now() + timeout
        # Keep a slice of the time for cancelled requests to hand their events back.
        grace = min(_CANCEL_GRACE, timeout / 4)
        try:
            if state is State.OPEN:
                await self._stop_intake(deadline - grace)
            await drain_then_stop(clock, self._drain, self._outcomes, deadline, grace,
                                  deliver=state is State.OPEN and self._can_drain())
        finally:
            try:
                await self._close_resources(deadline, grace)
            finally:
                self._finish_close()

    def _finish_close(self) -> None:
        self._state = State.CLOSED
        self._outcomes.losses.flush()
        self._outcomes.notify()  # wake flush() and put() callers: it is over
        assert self._closed is not None
        self._closed.set_result(None)

    def _closing(self) -> None:
        """Intake stops (synchronously, as the close begins)."""

    async def _stop_intake(self, until: float) -> None:
        """What feeds the store stops, by *until* at the latest (clock time)."""

    def _can_drain(self) -> bool:
        """Whether the drain can still deliver at close."""
        return True

    async def _close_resources(self, deadline: float, grace: float) -> None:
        """Close what the sink owns besides its drain, by *deadline* (plus *grace* for
        tasks that must be cancelled)."""

    def _check_fork(self) -> None:
        if self._fork_generation != _fork_generation:
            raise self._forked_error()

    def _forked_error(self) -> ForkedProcessError:
        name = type(self).__name__
        message = (
            f"this {name} was built before fork and cannot be used in a forked child "
            f"(process {os.getpid()}): its event loop, tasks and sockets belong to the parent. "
            f"Build the {name} in the child, or use voyado_tracking.Tracker, which starts "
            "afresh in each process"
        )
        if not self._fork_logged:
            self._fork_logged = True
            log.error("%s", message)
        return ForkedProcessError(message)


class Intake(Lifecycle):
    """The shared lifecycle of an event sink (see the module docstring)."""

    def __init__(
        self,
        settings: FlushSettings,
        outcomes: Outcomes,
        drain: Drain,
        clock: Clock,
        journal: _Journal | None = None,
    ) -> None:
        super().__init__(settings, outcomes, drain, clock)
        store = self._store
        self._now = clock.now
        self._journal = journal
        # The store's adders, typed loosely: enqueue checks the type itself.
        self._add_view: Callable[[Any, float], bool] = store.add_view
        self._add_cart: Callable[[Any, float], bool] = store.add_cart
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready_loop: object = _NOT_READY

    # -- intake -------------------------------------------------------------------------------

    def enqueue(self, event: Event) -> None:
        """Queue a Cart or ProductView for delivery. Synchronous, O(1), never blocks.

        Raises :class:`BufferClosedError` after close, :class:`BufferFullError` when full with
        ``overflow="raise"``, ``TypeError`` for anything that is not an event.
        """
        # One test for "open, in this loop, drain started, same process": _ready_loop is
        # the loop only while all of that holds (enqueue is the caller's cost: keep it short).
        if (
            asyncio._get_running_loop() is not self._ready_loop
            or self._fork_generation != _fork_generation
        ):
            self._ensure_running()  # starts the drain, or raises
        kind = type(event)
        if kind is ProductView:
            add = self._add_view
        elif kind is Cart:
            add = self._add_cart
        else:
            raise TypeError(f"enqueue() takes a Cart or ProductView, got {kind.__name__}")
        journal = self._journal
        if journal is not None:
            # Appended first: if the store drops the event (overflow), its row goes again.
            journal.append(event)
        try:
            wake = add(event, self._now())
        except BufferFullError:
            self._outcomes.refused(event)
            raise
        if wake:
            self._drain.wake()

    def enqueue_threadsafe(self, event: Event) -> concurrent.futures.Future[None]:
        """Queue an event from another thread; the future holds the outcome of ``enqueue``."""
        if self._fork_generation != _fork_generation:
            future: concurrent.futures.Future[None] = concurrent.futures.Future()
            future.set_exception(self._forked_error())
            return future
        loop = self._loop
        if loop is None:
            raise RuntimeError(
                f"the {self._noun} is not bound to an event loop yet: create it, or enqueue "
                "once, inside the loop that runs it"
            )
        if self._state is not State.OPEN:
            raise BufferClosedError(f"the {self._noun} is closed")
        return call_threadsafe(loop, functools.partial(self.enqueue, event))

    async def put(self, event: Event, timeout: float | None = None) -> None:
        """Queue an event, waiting while the sink is full (for bulk producers).

        Raises :class:`BufferFullError` if there is still no room after *timeout* seconds.
        """
        self._ensure_running()
        store, bound = self._store, self.settings.max_pending

        def has_room() -> bool:
            return (
                self._state is not State.OPEN  # let enqueue raise BufferClosedError
                or (isinstance(event, Cart) and store.has_cart(event.cart_reference))
                or store.held < bound
            )

        if not await self._wait_until(has_room, timeout):
            raise BufferFullError(
                f"no room in the {self._noun} after {timeout:g} s: it holds "
                f"{store.held} events (max_pending={bound})"
            )
        self.enqueue(event)

    def drop_unqueued(self, event: Event, reason: str) -> None:
        """*event* was dropped before it reached the store (a Tracker's hand-off applies
        the overflow policy in the caller's thread): counted as enqueued and dropped, logged
        and reported to ``on_drop`` like the store's own drops."""
        store = self._store
        store.enqueued += 1
        store.dropped += 1
        self._outcomes.dropped(event, reason, kept=False)  # type: ignore[arg-type]

    # -- flush and close ----------------------------------------------------------------------

    async def flush(self, timeout: float | None = None) -> None:
        """Hand over everything enqueued before the call, ignoring the flush thresholds.

        Returns once those events left (sent, dead-lettered or dropped; events enqueued
        during the flush are not waited for); raises ``TimeoutError`` if that takes longer
        than *timeout* seconds (they stay queued).
        """
        self._ensure_running()
        marks, outcomes, drain = self._store.marks(), self._outcomes, self._drain

        def done() -> bool:
            return self._state is State.CLOSED or not outcomes.owes(marks)

        drain.lanes.forcing += 1
        drain.wake()
        try:
            if not await self._wait_until(done, timeout):
                raise TimeoutError(f"flush() did not finish in {timeout:g} s: {self._held()}")
        finally:
            drain.lanes.forcing -= 1

    async def __aenter__(self: _I) -> _I:
        self._ensure_running()
        return self

    def _closing(self) -> None:
        self._ready_loop = _NOT_READY
        _open_sinks.discard(self)

    def _held(self) -> str:
        """What the sink still holds, for a timeout's message."""
        return f"{self._store.held} events not handed over yet"

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_fork_generation", None) != _fork_generation:
            return  # built before fork: the parent's events, the parent's business
        if getattr(self, "_state", State.CLOSED) in (State.NEW, State.OPEN):
            held = self._report_unclosed("it was garbage-collected")
            self._abandoned()
            if held:
                _warn(
                    f"{type(self).__name__} garbage-collected with {held} undelivered events; "
                    f"close it with 'await {self._noun}.aclose()'",
                    ResourceWarning, source=self, stacklevel=1,
                )

    def _abandoned(self) -> None:
        """Collected without being closed: let go of what would outlive the sink (a thread,
        files). Thread-safe: the collector may run on any thread."""

    def _report_unclosed(self, why: str) -> int:
        """Log (as an error) the events a sink that was never closed still holds."""
        store = self._store
        held = store.held
        if held and self._state in (State.NEW, State.OPEN):
            log.error(
                "a %s was never closed and %s with %d undelivered events "
                "(%d carts, %d product views); %s. Close it with 'async with' "
                "or 'await %s.aclose()'",
                type(self).__name__, why, held, store.pending_carts, store.pending_views,
                self._outcomes.keeper.unclosed(held), self._noun,
            )
        return held

    # -- loop binding -------------------------------------------------------------------------

    def _bind_if_running(self) -> None:
        """Bind to the running loop, if there is one (a sink built inside its loop)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # bound on first use inside a loop
        self._bind(loop)

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._state = State.OPEN
        _open_sinks.add(self)

    def _ensure_running(self) -> None:
        self._check_fork()
        name = type(self).__name__
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                f"{name}.enqueue() needs a running event loop; from another thread "
                "use enqueue_threadsafe()"
            ) from None
        if self._state is State.NEW:
            self._bind(loop)
        elif self._state is not State.OPEN:
            raise BufferClosedError(f"the {self._noun} is closed")
        elif loop is not self._loop:
            raise RuntimeError(f"this {name} belongs to another event loop")
        self._drain.start()
        self._ready_loop = loop
        if self._journal is not None:
            self._journal.start()

    async def _wait_until(self, condition: Callable[[], bool], timeout: float | None) -> bool:
        """Wait until *condition* holds; False if *timeout* seconds pass first."""
        return await wait_until(self._clock, self._outcomes.progress, condition, timeout,
                                before_wait=self._restart_drain)

    def _restart_drain(self) -> None:
        if self._state is State.OPEN:
            self._drain.start()  # after a crash, before its restart ran


async def drain_then_stop(
    clock: Clock, drain: Drain, outcomes: Outcomes, deadline: float, grace: float, *,
    deliver: bool,
) -> None:
    """The bounded part of a close: with *deliver*, let *drain* empty the store until
    *grace* seconds before *deadline*; stop it by the deadline; then keep, spool or drop
    what is left. Never waits past the deadline, and accounts for every event even when
    cancelled."""
    store = outcomes.store
    try:
        if deliver and store.held:
            drain.start()
            drain.lanes.forcing += 1
            drain.wake()
            await wait_until(clock, outcomes.progress, lambda: store.held == 0,
                             deadline - grace - clock.now())
    finally:
        try:
            await drain.stop(max(0.0, deadline - clock.now()))
        finally:
            # Also when cancelled again in there: nothing may stay unaccounted for.
            outcomes.dispose(store.drain())
