"""The records a pending store hands around, and the table of its streams.

- :data:`STREAMS`: what differs between the streams of carts and product views, as data:
  the batch endpoint, and whether batches go one at a time.
- :class:`Lanes`: what a driver of the store (the sender, the outbox's writer, ``tune``'s
  simulation) has in flight per stream, and how long a stream is held after a failure;
  :meth:`PendingStore.plan` reads it to decide what to send now.
- :class:`Batch` (events taken together from one stream) and :class:`CartEntry` (a pending
  cart): slotted classes rather than positional lists: they read by name, and cost no more.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

import attrs

from ._models import Cart
from ._settings import FlushSettings
from ._wire import CARTS_BATCH, PRODUCT_VIEWS, Event

__all__ = [
    "KINDS", "STREAMS", "Batch", "CartEntry", "DropReason", "Kind", "Lanes", "Marks",
    "StreamKind",
]

Kind = Literal["carts", "product_views"]
DropReason = Literal["overflow", "shutdown", "expired"]
KINDS: tuple[Kind, Kind] = ("carts", "product_views")
# Arrival numbers per stream that every event enqueued so far is below (see flush()).
Marks = dict[Kind, int]


@attrs.frozen
class StreamKind:
    """One stream of a pending store: how its batches travel."""

    kind: Kind
    batch_path: str
    # Cart batches go one at a time, so a cart's updates reach Voyado in arrival order even
    # at equal times; product views use up to ``max_concurrent_requests``.
    one_at_a_time: bool


STREAMS: Final[dict[Kind, StreamKind]] = {
    "carts": StreamKind("carts", CARTS_BATCH, one_at_a_time=True),
    "product_views": StreamKind("product_views", PRODUCT_VIEWS, one_at_a_time=False),
}


class Lanes:
    """In-flight batches per stream, their limits, and the retry hold of each stream."""

    __slots__ = ("active", "busy", "capacity", "forcing", "hold_until", "limit")

    def __init__(self, capacity: Mapping[Kind, int], limit: int) -> None:
        self.capacity = dict(capacity)
        self.limit = limit  # batches in flight over all streams
        self.active: dict[Kind, int] = dict.fromkeys(KINDS, 0)
        self.busy = 0
        # A stream whose last attempt failed waits this long before it sends anything more.
        self.hold_until: dict[Kind, float] = dict.fromkeys(KINDS, 0.0)
        self.forcing = 0  # > 0 while flush() or close wants everything sent now

    @classmethod
    def for_settings(cls, settings: FlushSettings) -> Lanes:
        limit = settings.max_concurrent_requests
        return cls({k: 1 if s.one_at_a_time else limit for k, s in STREAMS.items()}, limit)

    def open(self, kind: Kind) -> bool:
        return self.busy < self.limit and self.active[kind] < self.capacity[kind]

    def start(self, kind: Kind) -> None:
        self.active[kind] += 1
        self.busy += 1

    def done(self, kind: Kind) -> None:
        self.active[kind] -= 1
        self.busy -= 1


class Batch:
    """Events taken together from one stream, with what must survive a failed attempt."""

    __slots__ = (
        "attempts", "events", "first_at", "first_failure", "kind", "mark", "not_before", "seqs",
        "times",
    )

    def __init__(
        self,
        kind: Kind,
        events: list[Event],
        first_at: float,
        mark: int,
        seqs: list[int] | None = None,
        attempts: int = 0,
        first_failure: float = 0.0,
        not_before: float = 0.0,
        times: list[float] | None = None,
    ) -> None:
        self.kind = kind
        self.events = events
        self.first_at = first_at  # arrival of its oldest event
        # The smallest arrival number among its events (views: position in arrival order;
        # carts: first-arrival number), for flush() to know whether it waits for this batch.
        self.mark = mark
        self.seqs = seqs  # carts: each cart's first-arrival number
        # The retry budget travels with the events, not with the stream: a success elsewhere
        # in the stream must not give a batch that keeps failing a fresh budget.
        self.attempts = attempts
        self.first_failure = first_failure
        self.not_before = not_before
        # Each event's arrival (carts: of the first update still pending), for the delivery
        # delay; taken at take(), so enqueue does no extra work.
        self.times = times

    def times_of(self, events: list[Event]) -> list[float]:
        """The arrival times of *events*, some (or all) of this batch's events."""
        times = self.times
        if times is None:
            return [self.first_at] * len(events)
        if len(events) == len(self.events):  # chunks never overlap: the whole batch
            return times
        time_of = dict(zip(map(id, self.events), times, strict=False))
        return [time_of.get(id(event), self.first_at) for event in events]


class CartEntry:
    """A pending (or retrying) cart: its latest update and what it keeps across updates."""

    __slots__ = ("attempts", "cart", "first_at", "first_failure", "not_before", "seq")

    def __init__(
        self,
        cart: Cart,
        first_at: float,
        seq: int,
        attempts: int = 0,
        first_failure: float = 0.0,
        not_before: float = 0.0,
    ) -> None:
        self.cart = cart
        self.first_at = first_at  # arrival of the first update still pending
        self.seq = seq  # first-arrival number, for flush()
        self.attempts = attempts
        self.first_failure = first_failure
        self.not_before = not_before
