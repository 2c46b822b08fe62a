"""Outcomes: the one place that writes a sink's event accounting, and tells whoever must know.

Every way an event leaves a :class:`PendingStore` goes through one :class:`Outcomes`: sent
(2xx), put back to retry, dead-lettered, dropped (overflow, shutdown, expired), kept or
spooled at close, recovered from a journal. It writes the store's counters and fans out:

- to the :class:`Keeper`, the other holder of the events, if any: the journal (rows to
  delete, or to keep for the next start) or a forwarder's stream (entries to ack, dead-letter
  or release). :data:`NO_KEEPER` stands in when there is none, so nothing branches on it;
- to the loss log (rate-limited warnings whose counts add up to ``stats``);
- to the user's ``on_drop`` / ``on_dead_letter`` hooks;
- to whoever waits for progress (``flush()``, ``put()``, close) through :attr:`progress`;
- to its :attr:`observers` (metrics: ``vt.instrument()``, the forwarder's ``/metrics``), if
  any: after each batch and at close they get the :class:`Totals` (:meth:`publish`), and per
  request and delivered chunk what a histogram needs. Never per ``enqueue``: the counts an
  enqueue changes reach them with the next batch.

Accounting invariant (checked by the tests): every event ``enqueued`` or ``recovered`` ends up
exactly once as ``collapsed``, ``sent``, ``dropped``, ``dead_lettered`` or ``spooled``, or is
still pending (retrying included) or in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, NamedTuple, TypeVar

from ._clock import Clock
from ._delays import DeliveryDelays
from ._errors import ClientClosedError, VoyadoError
from ._eventfile import append_events
from ._losslog import LossLog
from ._records import Batch, DropReason, Marks
from ._settings import FlushSettings
from ._stats import BufferStats
from ._store import PendingStore
from ._wire import Event

__all__ = [
    "NO_KEEPER", "DeadLetterHook", "DropHook", "Keeper", "Observer", "Outcomes", "Totals",
    "report_dead_letters",
]

log = logging.getLogger("voyado_tracking")

_S = TypeVar("_S", bound=BufferStats)
DropHook = Callable[[Event, str], object]
DeadLetterHook = Callable[[Event, VoyadoError], object]


class Keeper:
    """The other holder of a sink's events (a journal, a stream), told where they end.

    This base keeps nothing and hears nothing (:data:`NO_KEEPER`); the journal and the
    forwarder's settlement override what concerns them.
    """

    __slots__ = ()

    def left(self, events: list[Event]) -> None:
        """*events* are done with, whichever way (what :meth:`sent`, :meth:`dead` and
        :meth:`dropped` tell, unless overridden)."""

    def sent(self, events: list[Event]) -> None:
        """*events* were delivered (2xx)."""
        self.left(events)

    def dead(self, events: list[Event], error: VoyadoError) -> None:
        """*events* were dead-lettered with *error*."""
        self.left(events)

    def dropped(self, event: Event) -> None:
        """*event* left undelivered (dropped, or refused by a full store)."""
        self.left([event])

    def keep(self, events: list[Event], *, in_flight: bool) -> list[Event]:
        """At close (or when the client closed): keep what can be kept for a later delivery;
        return the events that are not kept. *in_flight*: taken for a send."""
        return events

    def progress(self) -> None:
        """Room may have freed in the store."""

    def flush_marks(self, marks: Marks) -> Marks | None:
        """The marks ``flush()`` must wait for (None: not known yet)."""
        return marks

    def unclosed(self, held: int) -> str:
        """What becomes of *held* events of a sink that was never closed (for its log)."""
        return "they are lost"


NO_KEEPER: Final = Keeper()


class Totals(NamedTuple):
    """What a sink publishes to its observers: its counters (events, except ``retries``) and
    what its gauges show. Immutable, so another thread may read the last one published."""

    enqueued: int
    recovered: int
    collapsed: int
    sent: int
    dropped_overflow: int
    dropped_shutdown: int
    dropped_expired: int
    dead_lettered: int
    spooled: int
    retries: int
    pending_carts: int
    pending_product_views: int
    in_flight: int
    oldest_pending_at: float | None  # on the sink's clock; None when nothing is pending


class Observer:
    """Hears a sink's outcomes, on the sink's event loop (see :attr:`Outcomes.observers`).

    This base hears nothing; the metrics (``_observe.SinkObserver``) override it.
    """

    __slots__ = ()

    def published(self, totals: Totals) -> None:
        """After each batch, at close, and whenever the sink's watcher ticks."""

    def delivered(self, arrivals: list[float], now: float) -> None:
        """Events that arrived at *arrivals* (clock time) were delivered at *now*."""

    def batched(self, events: int) -> None:
        """The sink sends a request of *events* events."""


class Outcomes:
    """The accounting of one sink's :class:`PendingStore` (which it owns), and the fan-out.

    *name* says what the sink is in log lines ("buffer", "outbox", "forwarder"), and *sink*
    its class; *client_closed* tells whether the sink's client was closed under it.
    """

    def __init__(
        self,
        settings: FlushSettings,
        clock: Clock,
        *,
        name: str = "buffer",
        sink: str = "TrackingBuffer",
        spool_path: Path | None = None,
        on_drop: DropHook | None = None,
        on_dead_letter: DeadLetterHook | None = None,
        client_closed: Callable[[], bool] = lambda: False,
    ) -> None:
        self.settings = settings
        self.store = PendingStore(settings, self.dropped)
        self.keeper: Keeper = NO_KEEPER
        self.spool_path = spool_path
        self.losses = LossLog(clock=clock)
        self.delays = DeliveryDelays()  # enqueue to 2xx, of the last delivered events
        self.progress = asyncio.Event()  # set whenever something left the store or landed
        self.requests = 0
        self.retries = 0
        self.drops: dict[DropReason, int] = {"overflow": 0, "shutdown": 0, "expired": 0}
        self.observers: tuple[Observer, ...] = ()  # metrics, when watched
        self._clock = clock
        self._name = name
        self._sink = sink
        self._on_drop = on_drop
        self._on_dead_letter = on_dead_letter
        self._client_closed = client_closed
        self._retry_log = LossLog(clock=clock)

    def snapshot(self, cls: type[_S], **extra: Any) -> _S:
        """A stats snapshot of the store and the requests (*extra*: the sink's own fields)."""
        s = self.store
        oldest = s.oldest_pending_at()
        p50, p99 = self.delays.percentiles()
        return cls(
            enqueued=s.enqueued, collapsed=s.collapsed, sent=s.sent, requests=self.requests,
            retries=self.retries, dropped=s.dropped, dead_lettered=s.dead_lettered,
            spooled=s.spooled, pending_carts=s.pending_carts,
            pending_product_views=s.pending_views, in_flight=s.in_flight,
            recovered=s.recovered,
            oldest_pending_age=0.0 if oldest is None else self._clock.now() - oldest,
            delivery_delay_p50=p50, delivery_delay_p99=p99, **extra,
        )

    @property
    def name(self) -> str:
        """What the sink is: "buffer", "outbox" or "forwarder"."""
        return self._name

    def totals(self) -> Totals:
        """The counters and gauges to publish (on the sink's loop: it walks the retry maps)."""
        s, drops = self.store, self.drops
        return Totals(
            s.enqueued, s.recovered, s.collapsed, s.sent, drops["overflow"], drops["shutdown"],
            drops["expired"], s.dead_lettered, s.spooled, self.retries, s.pending_carts,
            s.pending_views, s.in_flight, s.oldest_pending_at(),
        )

    def publish(self) -> None:
        """Tell the observers the totals (nothing to do when there are none)."""
        if self.observers:
            totals = self.totals()
            for observer in self.observers:
                observer.published(totals)

    # -- what waits on it ---------------------------------------------------------------------

    def owes(self, marks: Marks) -> bool:
        """Whether an event that arrived before *marks* is not finished with yet (pending,
        retrying, in flight, or, with a journal, still being recovered)."""
        marks_now = self.keeper.flush_marks(marks)
        return marks_now is None or self.store.owes(marks_now)

    def notify(self) -> None:
        """Wake whoever waits for progress."""
        self.progress.set()

    def progressed(self) -> None:
        """Something left the store or landed: wake waiters; the keeper may refill."""
        self.progress.set()
        self.keeper.progress()
        if self.observers:
            self.publish()  # once per batch: what this one and the enqueues since changed

    # -- requests -----------------------------------------------------------------------------

    def requested(self, events: int) -> None:
        """The sink sends a request of *events* events."""
        self.requests += 1
        for observer in self.observers:
            observer.batched(events)

    def sent(self, batch: Batch, events: list[Event]) -> None:
        """*events* of *batch* were delivered."""
        self.store.resolved(len(events), "sent")
        arrivals, now = batch.times_of(events), self._clock.now()
        self.delays.record(arrivals, now)
        for observer in self.observers:
            observer.delivered(arrivals, now)
        self.keeper.sent(events)

    def retry(
        self, batch: Batch, events: list[Event], error: VoyadoError, attempts: int,
        first_failure: float, not_before: float,
    ) -> None:
        """*events* of *batch* failed in a retriable way: back to the store until *not_before*."""
        self.retries += 1
        kind = batch.kind.replace("_", " ")
        wait = max(0.0, not_before - self._clock.now())
        self._retry_log.record(
            f"retry:{batch.kind}", len(events), f"delivery failed, will retry: {kind}",
            f"{error}; next try in {wait:.1f} s",
        )
        self.store.failed(batch, events, attempts, first_failure, not_before)

    def requeue(self, batch: Batch, events: list[Event], attempts: int = 0,
                first_failure: float = 0.0, not_before: float = 0.0) -> None:
        """*events* of *batch* go back unresolved (a cancelled send, a failed write)."""
        self.store.failed(batch, events, attempts, first_failure, not_before)

    def final(self, events: list[Event], error: VoyadoError) -> None:
        """The sender gives up on in-flight *events*: dead letters, or kept/spooled when the
        client was closed under the sink (not Voyado's verdict)."""
        store = self.store
        if isinstance(error, ClientClosedError):
            self.losses.record(
                "client-closed", len(events), f"the TrackingClient was closed before the "
                f"{self._sink}; could not deliver", f"close the {self._name} before its client",
            )
            rest = self.keeper.keep(events, in_flight=True)
            store.resolved(len(events) - len(rest), "spooled")
            if self._spool(rest):
                store.resolved(len(rest), "spooled")
                return
            events = rest
        else:
            self.keeper.dead(events, error)
        store.resolved(len(events), "dead_lettered")
        self.losses.record(f"dead:{type(error).__name__}", len(events), "dead-lettered",
                           str(error))
        report_dead_letters(self._on_dead_letter, events, error)

    # -- drops, recovery, close -----------------------------------------------------------------

    def dropped(self, event: Event, reason: DropReason, *, kept: bool = True) -> None:
        """The store's drop hook: *event* left undelivered (it counted it). *kept*: the
        keeper was told of it (False for an event dropped before it reached the store)."""
        self.drops[reason] += 1
        if kept:
            self.keeper.dropped(event)
        if reason == "overflow":
            self.losses.record(
                "drop:overflow", 1, f"{self._name} full (max_pending="
                f"{self.settings.max_pending}, overflow={self.settings.overflow!r}): dropped",
            )
        if self._on_drop is not None:
            try:
                self._on_drop(event, reason)
            except Exception:
                log.exception("on_drop callback failed")

    def unreadable(self) -> None:
        """A forwarder read an entry it cannot decode: taken in and dead-lettered at once."""
        self.store.enqueued += 1
        self.store.dead_lettered += 1

    def refused(self, event: Event) -> None:
        """A full store with ``overflow="raise"`` refused *event* (never counted)."""
        self.keeper.dropped(event)

    def recovered(self, event: Event, now: float) -> bool:
        """Take *event*, recovered from a journal; True when the drain should wake."""
        return self.store.add_recovered(event, now)

    def superseded(self, count: int) -> None:
        """*count* cart updates a journal held were superseded there by a delivered newer
        update before recovery read them: recovered, and collapsed into that update."""
        self.store.recovered += count
        self.store.collapsed += count

    def expired(self, event: Event) -> None:
        """*event*, recovered from a journal, is too old to deliver."""
        self.store.recovered += 1
        self.store.drop(event, "expired")

    def dispose(self, events: list[Event]) -> None:
        """At close: keep, spool or count as dropped what is left (drained from the store),
        then publish the final totals."""
        try:
            self._dispose(events)
        finally:
            self.publish()

    def _dispose(self, events: list[Event]) -> None:
        store = self.store
        kept = len(events)
        events = self.keeper.keep(events, in_flight=False)
        store.count_spooled(kept - len(events))  # what stays with the keeper
        if not events:
            return
        if self._client_closed():
            log.warning(
                "the TrackingClient was closed before the %s: %d events could not be "
                "delivered at shutdown (close the %s first)", self._sink, len(events), self._name,
            )
        if self._spool(events):
            store.count_spooled(len(events))
            return
        for event in events:
            store.drop(event, "shutdown")
        log.warning(
            "dropped %d undelivered events at shutdown (set spool_path to keep them)",
            len(events),
        )

    def _spool(self, events: list[Event]) -> bool:
        """Append *events* to the spool file; False when there is none or it failed."""
        if not events:
            return True
        if self.spool_path is None:
            return False
        try:
            append_events(self.spool_path, events, reason="shutdown")
        except OSError as error:
            log.error("could not write %d events to the spool file: %s", len(events), error)
            return False
        log.warning("spooled %d undelivered events to %s", len(events), self.spool_path)
        return True


def report_dead_letters(
    hook: DeadLetterHook | None, events: list[Event], error: VoyadoError
) -> None:
    """Call the user's ``on_dead_letter`` for each event; a failing callback is logged."""
    if hook is None:
        return
    for event in events:
        try:
            hook(event, error)
        except Exception:
            log.exception("on_dead_letter callback failed")
