"""Simulated shop traffic, and the oracle of what Voyado should end up holding.

:func:`shop_traffic` plays shoppers in virtual time: sessions of product views (session ids,
categories, UTM parameters, referrers), items added and removed, and checkouts sent with
``Cart.checked_out`` (or, with ``checkout_skew=None``, as plain emptied carts: the mistake
that rule prevents), each shopper in the culture and UTC offset of its locale. It reads no clock:
the same arguments always give the same events, in the same order (by instant, ties in
shopper order), so a demo, a soak test or a benchmark run can be repeated exactly.

:func:`latest_carts` is the oracle for cart state: per ``cart_reference`` the update with
the latest ``time`` by instant, and of equal instants the later one in the sequence, which
is Voyado's rule and the fake's.
"""

from __future__ import annotations

import heapq
import random
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Final

import attrs

from .._models import Cart, CartItem, ProductView, Utm, supersedes
from .._wire import Event

__all__ = ["DEFAULT_START", "latest_carts", "shop_traffic"]

DEFAULT_START: Final = datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc)

_SHOP: Final = "https://shop.example.com"
_LOCALES: Final = (
    ("sv-SE", timezone(timedelta(hours=1))),
    ("sv-SE", timezone(timedelta(hours=2))),
    ("fi-FI", timezone(timedelta(hours=2))),
    ("nb-NO", timezone(timedelta(hours=1))),
    ("en-GB", timezone.utc),
    ("de-DE", timezone(timedelta(hours=1))),
    ("en-US", timezone(timedelta(hours=-5))),
    ("en-IN", timezone(timedelta(hours=5, minutes=30))),
)
_CATALOGUE: Final = {
    category: [f"{category[:3].upper()}-{n:03d}" for n in range(1, 41)]
    for category in ("shoes", "jackets", "shirts", "bags", "watches", "socks")
}
_CATEGORIES: Final = tuple(_CATALOGUE)
_CAMPAIGNS: Final = (
    (),
    (),
    (Utm("utm_source", "newsletter"), Utm("utm_medium", "email")),
    (Utm("utm_source", "google"), Utm("utm_medium", "cpc"), Utm("utm_campaign", "black-friday")),
    (Utm("utm_source", "instagram"), Utm("utm_medium", "social")),
)
_REFERRERS: Final = (None, None, "https://www.google.com/", "https://www.instagram.com/")


@attrs.define
class _Shopper:
    """One shopper's state between its events; its clock is virtual seconds from the start."""

    number: int
    rng: random.Random
    start: datetime
    think: float
    contact_id: str = ""
    language: str = ""
    zone: timezone = timezone.utc
    clock: float = 0.0
    last_micro: int = -1

    def __attrs_post_init__(self) -> None:
        self.contact_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        self.language, self.zone = self.rng.choice(_LOCALES)
        self.clock = self.rng.uniform(0, self.think)

    def now(self) -> datetime:
        # Strictly increasing per shopper, so "the latest update" of a cart is well defined.
        micro = max(int(self.clock * 1e6), self.last_micro + 1)
        self.last_micro = micro
        return (self.start + timedelta(microseconds=micro)).astimezone(self.zone)

    def cart(self, reference: str, items: dict[str, int]) -> Cart:
        return Cart(reference, self.contact_id, items=[CartItem(s, q) for s, q in items.items()],
                    time=self.now(), language=self.language, url=f"{_SHOP}/cart")

    def checkout(self, reference: str, skew: float | None) -> Cart:
        """The cart emptied at checkout: ``Cart.checked_out`` stamped *skew* ahead, or a
        plain emptied update (None)."""
        if skew is None:
            return self.cart(reference, {})
        done = Cart.checked_out(reference, self.contact_id, time=self.now(), skew=skew)
        # The shopper's next event comes after the checkout's stamp: each shopper's events
        # stay in time order, which the merge in shop_traffic relies on.
        self.last_micro += round(skew * 1e6)
        return attrs.evolve(done, language=self.language, url=f"{_SHOP}/cart")

    def wait(self, mean: float) -> None:
        self.clock += self.rng.expovariate(1.0 / mean)


def _visits(
    shopper: _Shopper, view_share: float, checkout_share: float, checkout_skew: float | None
) -> Iterator[Event]:
    """A shopper's events, forever."""
    rng = shopper.rng
    visit = 0
    while True:
        visit += 1
        session_id = uuid.UUID(int=rng.getrandbits(128), version=4).hex
        reference = f"cart-{shopper.number:05d}-{visit:03d}"
        items: dict[str, int] = {}
        utm, referrer = rng.choice(_CAMPAIGNS), rng.choice(_REFERRERS)
        category = rng.choice(_CATEGORIES)
        sku = rng.choice(_CATALOGUE[category])
        first = True

        for _ in range(rng.randint(2, 14)):
            if rng.random() < view_share or (first and view_share > 0):
                if rng.random() < 0.3:
                    category = rng.choice(_CATEGORIES)
                sku = rng.choice(_CATALOGUE[category])
                yield ProductView(
                    sku, shopper.contact_id, time=shopper.now(), category=category,
                    session_id=session_id, new_session=first, language=shopper.language,
                    url=f"{_SHOP}/{category}/{sku.lower()}",
                    external_referrer=referrer if first else None, utm=utm if first else (),
                )
                first = False
            elif not items or rng.random() < 0.6:
                items[sku] = items.get(sku, 0) + rng.choice((1, 1, 1, 2))
                yield shopper.cart(reference, items)
            else:
                removed = rng.choice(list(items))
                if items[removed] > 1 and rng.random() < 0.5:
                    items[removed] -= 1
                else:
                    del items[removed]
                yield shopper.cart(reference, items)
            shopper.wait(shopper.think)
        if items and rng.random() < checkout_share:
            items.clear()  # checked out: an emptied cart stops the abandoned-cart mail
            yield shopper.checkout(reference, checkout_skew)
        shopper.wait(shopper.think * 3)


def shop_traffic(
    seed: int = 0,
    *,
    events: int = 10_000,
    shoppers: int = 100,
    view_share: float = 0.62,
    checkout_share: float = 0.45,
    think: float = 20.0,
    start: datetime = DEFAULT_START,
    checkout_skew: float | None = 5.0,
) -> list[Event]:
    """*events* events of *shoppers* simulated shoppers, in order of their ``time``.

    ``view_share`` is the share of a visit's steps that are product views (0 gives cart
    updates only), ``checkout_share`` the share of filled carts checked out (sent emptied)
    at the end of a visit, ``think`` the mean virtual seconds between a shopper's steps, and
    ``start`` the instant the shop opens, ``checkout_skew`` the ``skew`` of the checkouts'
    ``Cart.checked_out`` (None: plain emptied carts, unmarked). Every product view is
    distinct (its shopper's clock only moves forward), so a lost view can be told from a
    duplicate. Carts still open when
    the traffic ends stay as they are: abandoned.
    """
    if events < 0 or shoppers < 1:
        raise ValueError("shop_traffic needs events >= 0 and shoppers >= 1")
    if checkout_skew is not None and not 0.0 <= checkout_skew < float("inf"):
        raise ValueError("shop_traffic needs checkout_skew >= 0 (finite) or None")
    if not (0.0 <= view_share < 1.0 and 0.0 <= checkout_share <= 1.0 and think > 0):
        raise ValueError("shop_traffic needs 0 <= view_share < 1, 0 <= checkout_share <= 1 "
                         "and think > 0")
    streams = [
        _visits(_Shopper(n, random.Random(f"shop-{seed}-{n}"), start, think),
                view_share, checkout_share, checkout_skew)
        for n in range(shoppers)
    ]
    # Merged by instant; the shopper's number breaks ties (events themselves never compare).
    heap = [(event.time, n, event) for n, event in enumerate(map(next, streams))]
    heapq.heapify(heap)
    out: list[Event] = []
    while len(out) < events:
        _, n, event = heap[0]
        out.append(event)
        following = next(streams[n])
        heapq.heapreplace(heap, (following.time, n, following))
    return out


def latest_carts(events: Iterable[Event]) -> dict[str, Cart]:
    """What Voyado should hold: the latest update of each cart by instant (ties: the later
    one in *events*), keyed by ``cart_reference``."""
    latest: dict[str, Cart] = {}
    for event in events:
        if isinstance(event, Cart):
            current = latest.get(event.cart_reference)
            if current is None or supersedes(event, current):
                latest[event.cart_reference] = event
    return latest
