"""What Engage would do with what a FakeVoyado received: the abandoned-cart and abandoned-browse
mails it would send, and why a cart does or does not mail (``fake.engage``).

Voyado's documented rules, emulated (not Voyado's code):

- An **abandoned-cart** mail goes out at most once per cart, for its latest update (the fake's
  own latest-by-time state), when the cart has items, its contact is known, its ``language``
  has a product feed holding at least one of its SKUs, and it has been idle for
  ``abandon_after`` seconds: ``due = time + abandon_after <= now``. The mail shows the cart's
  SKUs that are in that feed.
- An **abandoned-browse** mail goes out once per browse session: a contact's product views in
  time order, split where the ``session_id`` changes, where ``new_session`` is true, or at a
  gap of more than 30 minutes. It mails when no cart update of that contact falls between the
  session's first view and ``abandon_after`` after its last one, ``due = last view +
  abandon_after <= now``, and at least one viewed item is in the feed of the view's language;
  it shows those items, distinct, latest first, at most 25.

A contact is known when no contact was registered (``add_contact`` never used: any valid id
counts), else when its id, or the 22-character short GUID of it, is a registered one. A cart
or a view without ``language`` never mails: Engage picks the product feed by it.
``product_feeds`` maps a culture code (compared case-insensitively) to the SKUs of its feed;
None means every locale has a feed with every SKU.
"""

from __future__ import annotations

import base64
import binascii
import math
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Final, Literal, Protocol

import attrs

from .._models import Cart, ProductView

__all__ = ["Engage", "EngageMail", "SESSION_GAP"]

SESSION_GAP: Final = timedelta(minutes=30)
_MAX_BROWSE_SKUS: Final = 25

MailKind = Literal["abandoned_cart", "abandoned_browse"]


@attrs.frozen
class EngageMail:
    """One mail Engage would send: ``kind`` is ``"abandoned_cart"`` (with ``cart_reference``)
    or ``"abandoned_browse"`` (with the session's ``session_id``, None if its views had
    none); ``skus`` are the products it shows; ``due`` is when it goes out."""

    kind: MailKind
    contact_id: str
    cart_reference: str | None
    session_id: str | None
    skus: tuple[str, ...]
    due: datetime

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, camelCase (as in ``/_fake/state``)."""
        return {"kind": self.kind, "contactId": self.contact_id,
                "cartReference": self.cart_reference, "sessionId": self.session_id,
                "skus": list(self.skus), "due": self.due.isoformat()}


class _Registered(Protocol):
    contact_id: str


class _Received(Protocol):
    """What the emulation reads of a FakeVoyado."""

    carts: dict[str, Cart]
    cart_updates: list[Cart]
    product_views: list[ProductView]
    contacts: list[Any]


def canonical_contact(contact_id: str) -> str:
    """One spelling per contact: a GUID in lower case; a short GUID as the GUID it encodes."""
    if len(contact_id) == 22:
        try:
            raw = base64.urlsafe_b64decode(contact_id + "==")
        except (binascii.Error, ValueError):
            return contact_id
        if len(raw) == 16:
            return str(uuid.UUID(bytes_le=raw))
        return contact_id
    return contact_id.lower()


def _feeds(value: Mapping[str, Iterable[str]] | None) -> dict[str, frozenset[str]] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"product_feeds must be a mapping of locale to SKUs, got "
                        f"{type(value).__name__}")
    feeds = {}
    for locale, skus in value.items():
        if not isinstance(locale, str) or isinstance(skus, (str, bytes)):
            raise TypeError("product_feeds maps a culture code (str) to an iterable of SKUs, "
                            f"got {locale!r}: {type(skus).__name__}")
        feeds[locale.lower()] = frozenset(skus)
    return feeds


class Engage:
    """The mails a FakeVoyado's data would trigger (``fake.engage``). Reads the fake's state
    each time it is asked: nothing is kept here."""

    def __init__(
        self,
        received: _Received,
        *,
        product_feeds: Mapping[str, Iterable[str]] | None = None,
        abandon_after: float = 1800.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if (not isinstance(abandon_after, (int, float)) or isinstance(abandon_after, bool)
                or not math.isfinite(abandon_after) or abandon_after < 0):
            raise ValueError(f"abandon_after must be a finite number of seconds >= 0, got "
                             f"{abandon_after!r}")
        if clock is not None and not callable(clock):
            raise TypeError("clock must be a callable returning an aware datetime, or None")
        self._received = received
        self.product_feeds = _feeds(product_feeds)
        self.abandon_after = timedelta(seconds=abandon_after)
        self._clock = clock

    def __repr__(self) -> str:
        return (f"voyado_tracking.testing.Engage(abandon_after="
                f"{self.abandon_after.total_seconds():g}, product_feeds="
                f"{'all' if self.product_feeds is None else sorted(self.product_feeds)})")

    # -- the questions ----------------------------------------------------------------------

    def mails(self, now: datetime | None = None) -> list[EngageMail]:
        """Every mail due by *now* (an aware datetime; default the fake's clock, else the
        UTC wall time), ordered by when it goes out."""
        at = self._now(now)
        known = self._known()
        mails = [mail for cart in self._received.carts.values()
                 if (mail := self._cart_mail(cart, known)) is not None and mail.due <= at]
        mails += [mail for mail in self._browse_mails(known) if mail.due <= at]
        mails.sort(key=lambda m: (m.due, m.kind, m.cart_reference or "", m.session_id or "",
                                  m.contact_id))
        return mails

    def explain(self, cart_reference: str, now: datetime | None = None) -> str:
        """Why the cart *cart_reference* does or does not mail, by *now*: the first that
        applies of "never received", "emptied", "unknown contact", "no language", "language L
        has no product feed", "no SKU in the L feed", "idle only N minutes", "mails at
        <ISO time>"."""
        at = self._now(now)
        cart = self._received.carts.get(cart_reference)
        if cart is None:
            return "never received"
        reason = self._cart_blocked(cart, self._known())
        if reason is not None:
            return reason
        due = cart.time + self.abandon_after
        if due > at:
            idle = max(0, math.floor((at - cart.time).total_seconds() / 60))
            return f"idle only {idle} minutes"
        return f"mails at {due.isoformat()}"

    def state(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """The mails due by *now*, JSON-ready (``/_fake/state``'s ``engageMails``)."""
        return [mail.as_dict() for mail in self.mails(now)]

    # -- the rules --------------------------------------------------------------------------

    def _now(self, now: datetime | None) -> datetime:
        if now is None:
            now = self._clock() if self._clock is not None else datetime.now(timezone.utc)
        if not isinstance(now, datetime) or now.utcoffset() is None:
            raise ValueError(f"now must be an aware datetime, got {now!r}")
        return now

    def _known(self) -> frozenset[str] | None:
        """The canonical ids of the registered contacts; None: every contact counts."""
        registered: Sequence[_Registered] = self._received.contacts
        if not registered:
            return None
        return frozenset(canonical_contact(c.contact_id) for c in registered)

    def _in_feed(self, language: str | None) -> frozenset[str] | None:
        """The feed of *language* (None: every SKU is in it); KeyError if it has none."""
        if self.product_feeds is None:
            return None
        return self.product_feeds[(language or "").lower()]

    def _cart_blocked(self, cart: Cart, known: frozenset[str] | None) -> str | None:
        if not cart.items:
            return "emptied"
        if known is not None and canonical_contact(cart.contact_id) not in known:
            return "unknown contact"
        if cart.language is None:
            return "no language"
        try:
            feed = self._in_feed(cart.language)
        except KeyError:
            return f"language {cart.language} has no product feed"
        if feed is not None and not any(item.sku in feed for item in cart.items):
            return f"no SKU in the {cart.language} feed"
        return None

    def _cart_mail(self, cart: Cart, known: frozenset[str] | None) -> EngageMail | None:
        if self._cart_blocked(cart, known) is not None:
            return None
        feed = self._in_feed(cart.language)
        skus = tuple(dict.fromkeys(item.sku for item in cart.items
                                   if feed is None or item.sku in feed))
        return EngageMail("abandoned_cart", cart.contact_id, cart.cart_reference, None, skus,
                          cart.time + self.abandon_after)

    def _browse_mails(self, known: frozenset[str] | None) -> list[EngageMail]:
        views: dict[str, list[ProductView]] = {}
        for view in self._received.product_views:
            views.setdefault(canonical_contact(view.contact_id), []).append(view)
        carts: dict[str, list[datetime]] = {}
        for update in self._received.cart_updates:
            carts.setdefault(canonical_contact(update.contact_id), []).append(update.time)
        mails = []
        for contact, seen in views.items():
            if known is not None and contact not in known:
                continue
            for session in sessions(seen):
                first, last = session[0].time, session[-1].time
                due = last + self.abandon_after
                if any(first <= t <= due for t in carts.get(contact, ())):
                    continue
                skus = self._browse_skus(session)
                if skus:
                    mails.append(EngageMail("abandoned_browse", session[0].contact_id, None,
                                            session[0].session_id, skus, due))
        return mails

    def _browse_skus(self, session: Sequence[ProductView]) -> tuple[str, ...]:
        skus: dict[str, None] = {}
        for view in reversed(session):
            if view.language is None:
                continue
            try:
                feed = self._in_feed(view.language)
            except KeyError:
                continue
            if feed is None or view.item_id in feed:
                skus.setdefault(view.item_id)
                if len(skus) == _MAX_BROWSE_SKUS:
                    break
        return tuple(skus)


def sessions(views: Iterable[ProductView]) -> list[list[ProductView]]:
    """One contact's *views* as browse sessions: in time order, split where the session id
    changes, where ``new_session`` is true, or after a gap of more than 30 minutes."""
    ordered = sorted(views, key=lambda v: v.time)
    out: list[list[ProductView]] = []
    for view in ordered:
        if out:
            previous = out[-1][-1]
            if (view.session_id == previous.session_id and view.new_session is not True
                    and view.time - previous.time <= SESSION_GAP):
                out[-1].append(view)
                continue
        out.append([view])
    return out
