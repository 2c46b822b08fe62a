"""PendingStore: the pending events of one buffer, pure and synchronous.

It holds the pending carts (an ordered map keyed by ``cart_reference``, so an update replaces
the pending one in place) and product views (a FIFO), the events waiting to retry, the
collapse and merge rule, the memory bound and overflow policies, thresholds and deadlines, and
the event accounting behind ``stats``. It is driven with an explicit ``now``: every rule is
unit-testable without an event loop or a clock, and ``tune`` can replay hours of traffic
through it in virtual time.

Scheduling is decided here and nowhere else: :meth:`PendingStore.plan` takes every batch that
may go now (size, bytes, age, a due retry, or forced; within the driver's :class:`Lanes`:
per-stream capacity, the overall limit and the retry holds) and says when to look again. The
sender, the outbox's stream writer and ``tune``'s simulation all drive the store through it.
The store also knows the batches in flight (from :meth:`take` until :meth:`landed`), so
``flush()`` asks it alone what is still owed (:meth:`owes`).

Overflow (``drop_oldest``) evicts the oldest pending product view first and a pending cart
only when no view is pending: a cart's latest state is what drives the abandoned-cart mail,
and a pending cart counts as one event however often it was updated.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Literal

from ._errors import BufferFullError
from ._models import Cart, ProductView, supersedes
from ._records import KINDS, Batch, CartEntry, DropReason, Kind, Lanes, Marks
from ._settings import FlushSettings
from ._wire import Event, size_hint

__all__ = ["PendingStore"]

class PendingStore:
    """The pending events of one buffer. Pure: no I/O, no loop, time passed in as ``now``.

    Carts live in an ordered map ``cart_reference -> CartEntry``; an update replaces the cart
    in place and keeps the entry's place and age.
    Product views live in a FIFO. A view batch that failed waits in ``retry_views`` as it was,
    so its retry budget stays its own and no newer event joins it. A cart that failed waits in
    ``retry_carts`` (its entry carrying attempts, first failure and not-before), merged
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
        self.carts: OrderedDict[str, CartEntry] = OrderedDict()
        self.cart_bytes = 0
        self.cart_arrivals = 0  # first-arrival numbers handed out so far
        self.retry_carts: OrderedDict[str, CartEntry] = OrderedDict()
        self.views: deque[ProductView] = deque()
        self.view_times: deque[float] = deque()
        self.view_bytes = 0
        self.view_arrivals = 0  # views ever appended: the next view's arrival number
        self.retry_views: deque[Batch] = deque()
        self.retrying_views = 0
        self.in_flight = 0
        self.flying: set[Batch] = set()  # taken and not landed yet
        self.enqueued = 0
        self.recovered = 0  # taken from a journal of an earlier run (beside enqueued)
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
        fresh = entry is not None
        if entry is None and self.retry_carts:
            entry = self.retry_carts.get(cart.cart_reference)
        if entry is not None:
            # An update of a pending cart: never overflow, only the latest instant survives.
            self.enqueued += 1
            self.collapsed += 1
            if supersedes(cart, entry.cart):
                if fresh:  # the byte trigger counts fresh carts only
                    self.cart_bytes += size_hint(cart) - size_hint(entry.cart)
                entry.cart = cart
            return False
        if self.held >= self.settings.max_pending and not self._make_room(cart):
            return False
        self.enqueued += 1
        self.carts[cart.cart_reference] = CartEntry(cart, now, self.cart_arrivals)
        self.cart_arrivals += 1
        self.cart_bytes += size_hint(cart)
        n = len(self.carts)
        return (
            n == 1
            or n == self.settings.max_batch_size
            or self.cart_bytes >= self.settings.max_batch_bytes
        )

    def add_recovered(self, event: Event, now: float) -> bool:
        """Take an event recovered from a journal, counted as ``recovered``, not ``enqueued``.

        The caller makes room first: recovery never pushes other events out.
        """
        wake = self.add(event, now)
        self.enqueued -= 1
        self.recovered += 1
        return wake

    def _make_room(self, incoming: Event) -> bool:
        """Apply the overflow policy; False when *incoming* itself is dropped."""
        policy = self.settings.overflow
        if policy == "raise":
            raise BufferFullError(
                f"the buffer holds max_pending={self.settings.max_pending} events"
            )
        if policy == "drop_oldest" and (self.carts or self.views):
            self.drop(self._pop_oldest(), "overflow")
            return True
        # drop_newest, or drop_oldest with everything in flight or retrying (never dropped)
        self.enqueued += 1
        self.drop(incoming, "overflow")
        return False

    def _pop_oldest(self) -> Event:
        """The oldest pending product view; the oldest pending cart only if no view is."""
        if self.views:
            self.view_times.popleft()
            view = self.views.popleft()
            self.view_bytes -= size_hint(view)
            return view
        _, entry = self.carts.popitem(last=False)
        self.cart_bytes -= size_hint(entry.cart)
        return entry.cart

    def drop(self, event: Event, reason: DropReason) -> None:
        """Count *event* as dropped (it left the buffer undelivered) and report it."""
        self.dropped += 1
        if self._on_drop is not None:
            self._on_drop(event, reason)

    # -- what is due, and when ------------------------------------------------------------

    def _fresh_due_at(self, kind: Kind, now: float, force: bool) -> float | None:
        """When the fresh events of a stream are due: now at a threshold, else by age."""
        oldest: float | None
        if kind == "carts":
            oldest = next(iter(self.carts.values())).first_at if self.carts else None
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
            return min((entry.not_before for entry in self.retry_carts.values()), default=None)
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

    def plan(self, now: float, lanes: Lanes) -> tuple[list[Batch], float | None]:
        """Take every batch that may go now, within *lanes*; and when to look again.

        A stream sends while its lane is open and something is due (forced while
        ``lanes.forcing``), not before its retry hold. Taken batches are started in *lanes*.
        The wake-up time is ``None`` when only a new event or a finished batch can make
        anything due.
        """
        force = lanes.forcing > 0
        batches: list[Batch] = []
        wake_at: float | None = None
        for kind in KINDS:
            while lanes.open(kind):
                due_at = self.due_at(kind, now, force)
                if due_at is None:
                    break
                due_at = max(due_at, lanes.hold_until[kind])
                if due_at > now:
                    wake_at = due_at if wake_at is None else min(wake_at, due_at)
                    break
                batch = self.take(kind, now)
                if batch is None:  # pragma: no cover - due_at said there was one
                    break
                lanes.start(kind)
                batches.append(batch)
        return batches, wake_at

    # -- batches ---------------------------------------------------------------------------

    def take(self, kind: Kind, now: float) -> Batch | None:
        """Remove the next batch of a stream (now in flight until :meth:`landed`): a retry
        that is due first, else up to ``max_batch_size`` of the oldest fresh events."""
        batch = self._take_views(now) if kind == "product_views" else self._take_carts(now)
        if batch is not None:
            self.flying.add(batch)
        return batch

    def landed(self, batch: Batch) -> None:
        """A batch taken with :meth:`take` is over: each of its events was resolved or put
        back with :meth:`failed`."""
        self.flying.discard(batch)

    def _take_views(self, now: float) -> Batch | None:
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
        batch = Batch("product_views", [], times[0], self.view_arrivals - len(views))
        popleft = views.popleft
        batch.events = [popleft() for _ in range(count)]
        pop_time = times.popleft
        batch.times = [pop_time() for _ in range(count)]
        # The byte count is an estimate for the trigger only: scale it rather than measure the
        # taken events again.
        self.view_bytes = self.view_bytes * len(views) // (len(views) + count)
        self.in_flight += count
        return batch

    def _take_carts(self, now: float) -> Batch | None:
        limit = self.settings.max_batch_size
        ready = []
        for reference, entry in self.retry_carts.items():
            if entry.not_before <= now:
                ready.append(reference)
                if len(ready) == limit:
                    break
        entries: list[CartEntry]
        if ready:  # retried carts go first, in batches of their own
            entries = [self.retry_carts.pop(reference) for reference in ready]
        elif self.carts:
            popitem = self.carts.popitem
            entries = [popitem(last=False)[1] for _ in range(min(limit, len(self.carts)))]
            self.cart_bytes = (
                self.cart_bytes - sum(size_hint(e.cart) for e in entries) if self.carts else 0
            )
        else:
            return None
        events: list[Event] = [entry.cart for entry in entries]
        seqs = [entry.seq for entry in entries]
        times = [entry.first_at for entry in entries]
        batch = Batch("carts", events, min(times), min(seqs), seqs, times=times)
        if ready:
            batch.attempts = max(e.attempts for e in entries)
            batch.first_failure = min(e.first_failure for e in entries)
        self.in_flight += len(events)
        return batch

    def failed(
        self, batch: Batch, events: list[Event], attempts: int, first_failure: float,
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
            times = batch.times_of(events)
            self.retry_views.append(
                Batch("product_views", events, min(times), batch.mark, None,
                       attempts, first_failure, not_before, times)
            )
            self.retrying_views += len(events)
            return
        seq_of = dict(zip(map(id, batch.events), batch.seqs or (), strict=False))
        for cart, first_at in zip(events, batch.times_of(events), strict=True):
            assert isinstance(cart, Cart)
            reference = cart.cart_reference
            seq = seq_of.get(id(cart), batch.mark)
            entry = self.carts.pop(reference, None)
            if entry is not None:
                self.cart_bytes -= size_hint(entry.cart)
            else:
                entry = self.retry_carts.pop(reference, None)
            if entry is not None:
                # Merge by the collapse rule; the pending update arrived later, so it also
                # wins an equal instant.
                self.collapsed += 1
                if supersedes(entry.cart, cart):
                    cart = entry.cart
                first_at, seq = min(first_at, entry.first_at), min(seq, entry.seq)
            self.retry_carts[reference] = CartEntry(
                cart, first_at, seq, attempts, first_failure, not_before
            )

    def resolved(
        self, count: int, outcome: Literal["sent", "dead_lettered", "spooled"]
    ) -> None:
        """*count* in-flight events left the buffer."""
        self.in_flight -= count
        if outcome == "sent":
            self.sent += count
        elif outcome == "dead_lettered":
            self.dead_lettered += count
        else:
            self.spooled += count

    def count_spooled(self, count: int) -> None:
        """*count* events taken out with :meth:`drain` were written to a spool."""
        self.spooled += count

    def oldest_pending_at(self) -> float | None:
        """Arrival of the oldest pending or retrying event (not in flight); None if none."""
        oldest = [batch.first_at for batch in self.retry_views]
        oldest.extend(entry.first_at for entry in self.retry_carts.values())
        if self.view_times:
            oldest.append(self.view_times[0])
        if self.carts:  # in first-arrival order
            oldest.append(next(iter(self.carts.values())).first_at)
        return min(oldest, default=None)

    def marks(self) -> Marks:
        """Arrival numbers, per stream, that every event enqueued so far is below."""
        return {"product_views": self.view_arrivals, "carts": self.cart_arrivals}

    def owes(self, marks: Marks) -> bool:
        """Whether an event that arrived before *marks* is pending, retrying or in flight."""
        return not self.settled(marks) or any(
            batch.mark < marks[batch.kind] for batch in self.flying
        )

    def settled(self, marks: Marks) -> bool:
        """Whether no pending or retrying event arrived before *marks* (in flight aside)."""
        view_mark, cart_mark = marks["product_views"], marks["carts"]
        if self.views and self.view_arrivals - len(self.views) < view_mark:
            return False
        if any(batch.mark < view_mark for batch in self.retry_views):
            return False
        return not any(
            entry.seq < cart_mark for entry in (*self.carts.values(), *self.retry_carts.values())
        )

    def drain(self) -> list[Event]:
        """Remove and return every pending and retrying event."""
        events: list[Event] = [entry.cart for entry in self.retry_carts.values()]
        events.extend(entry.cart for entry in self.carts.values())
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


