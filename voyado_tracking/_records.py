"""The records a pending store hands around: a batch taken from a stream, and a pending cart.

Slotted classes rather than positional lists: they read by name, and cost no more.
"""

from __future__ import annotations

from typing import Literal

from ._models import Cart
from ._wire import Event

__all__ = ["KINDS", "Batch", "CartEntry", "DropReason", "Kind"]

Kind = Literal["carts", "product_views"]
DropReason = Literal["overflow", "shutdown", "expired"]
KINDS: tuple[Kind, Kind] = ("carts", "product_views")


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
