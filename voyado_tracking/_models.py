"""The tracking events: frozen, slotted attrs classes, validated when they are built.

An invalid value raises :class:`InvalidEventError` naming the field, at the place the event is
created, so a bad event never reaches a buffer or the wire. The models know nothing of JSON:
the camelCase wire format lives in ``_wire``.

Limits we enforce beyond Voyado's documentation, to keep every accepted event sendable:
strings must be valid UTF-8 text (no lone surrogates) and at most ``MAX_TEXT`` characters
(``MAX_URL`` for URLs); quantities fit Voyado's 32-bit integers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar
from urllib.parse import urlsplit
from uuid import UUID

import attrs

from ._errors import InvalidEventError, shorten

__all__ = ["Cart", "CartItem", "ProductView", "Utm", "parse_time", "supersedes"]

MAX_TEXT = 1024
MAX_URL = 8192
MAX_QUANTITY = 2**31 - 1

_GUID = re.compile(
    r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
    r"|[A-Za-z0-9_-]{22}"
)
_CULTURE = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*")
_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")
# The common shape of a valid URL, checked with one regex; anything else goes through urlsplit.
# It only matches strings urlsplit accepts as an http(s) URL with a host.
_PLAIN_URL = re.compile(
    r"[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:[/?#][^\x00-\x20\x7f]*)?"
)
_UTC = timezone.utc
_WHOLE_MINUTE = timedelta(minutes=1)


def _check_text(field: str, value: object, *, limit: int = MAX_TEXT, empty_ok: bool = False) -> str:
    # The common case in one test: short, non-blank ASCII text.
    if type(value) is str and value.isascii() and 0 < len(value) <= limit and not value.isspace():
        return value
    if not isinstance(value, str):
        raise InvalidEventError(field, f"must be a string, got {type(value).__name__}")
    if not empty_ok and (not value or value.isspace()):
        raise InvalidEventError(field, "must not be empty")
    if len(value) > limit:
        raise InvalidEventError(field, f"is too long ({len(value)} characters, at most {limit})")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidEventError(field, "is not valid Unicode text (lone surrogate)") from None
    return value


def _text(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    _check_text(attribute.name, value)


def _optional_text(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _check_text(attribute.name, value)


def _contact_str(value: str | UUID) -> str:
    """A ``uuid.UUID`` as its canonical lower-case string; anything else as it is."""
    if type(value) is str:
        return value
    if isinstance(value, UUID):
        return str(value)
    return value  # not a contact id at all: the validator names the problem


def _contact_id(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if not _GUID.fullmatch(_check_text(attribute.name, value)):
        raise InvalidEventError(
            attribute.name, f"must be a GUID or a 22-character short GUID, got {shorten(value)}"
        )


def _language(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not _CULTURE.fullmatch(_check_text(attribute.name, value)):
        raise InvalidEventError(
            attribute.name, f"must be a culture code such as 'sv-SE', got {shorten(value)}"
        )


def _url(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    text = _check_text(attribute.name, value, limit=MAX_URL)
    if _PLAIN_URL.fullmatch(text):
        return
    if not _URL_FORBIDDEN.search(text):
        try:
            parts = urlsplit(text)
        except ValueError:
            pass
        else:
            if parts.scheme.lower() in ("http", "https") and parts.netloc:
                return
    raise InvalidEventError(
        attribute.name, f"must be an absolute http(s) URL, got {shorten(value)}"
    )


def _quantity(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidEventError(attribute.name, f"must be an int, got {type(value).__name__}")
    if not 0 <= value <= MAX_QUANTITY:
        raise InvalidEventError(
            attribute.name, f"must be between 0 and {MAX_QUANTITY}, got {shorten(value)}"
        )


def _optional_bool(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, bool):
        raise InvalidEventError(attribute.name, f"must be a bool, got {type(value).__name__}")


def _check_offset(field: str, offset: timedelta | None) -> None:
    # The wire format (ISO 8601, "+02:00") has no seconds in offsets: orjson would round a
    # sub-minute offset and silently move the event to another instant.
    if offset is not None and offset % _WHOLE_MINUTE:
        raise InvalidEventError(field, f"has a UTC offset of {offset}, not whole minutes")


def parse_time(value: object, field: str = "time") -> datetime:
    """An aware datetime from a datetime or an ISO 8601 string with an offset (or ``Z``)."""
    if type(value) is datetime and value.tzinfo is _UTC:
        return value  # the default "now", and most times a shop already has
    if isinstance(value, str):
        text = value.strip()
        if text[-1:] in ("Z", "z"):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidEventError(
                field, f"must be an ISO 8601 date-time with an offset, got {shorten(value)}"
            ) from None
        if parsed.tzinfo is None:
            raise InvalidEventError(
                field, f"has no UTC offset (add one, e.g. 'Z' or '+02:00'): {shorten(value)}"
            )
        _check_offset(field, parsed.utcoffset())
        return parsed
    if isinstance(value, datetime):
        try:
            offset = value.utcoffset()
        except Exception:  # a broken tzinfo implementation
            offset = None
        if offset is None:
            raise InvalidEventError(
                field, "must be timezone-aware (a naive datetime has no instant; add tzinfo)"
            )
        _check_offset(field, offset)
        if type(value) is not datetime or type(value.tzinfo) is not timezone:
            # Kept as a plain datetime with a fixed offset, exactly what the wire carries: orjson
            # cannot encode datetime subclasses (pendulum, pandas.Timestamp), and a zone-aware
            # time in a DST fold or gap never compares equal to its own round trip (PEP 495).
            value = datetime(
                value.year, value.month, value.day, value.hour, value.minute, value.second,
                value.microsecond, tzinfo=timezone(offset),
            )
        return value
    raise InvalidEventError(
        field, f"must be an aware datetime or an ISO 8601 string, got {type(value).__name__}"
    )


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


_T = TypeVar("_T")


def _tuple_of(kind: type[_T], field: str, value: object) -> tuple[_T, ...]:
    if type(value) is tuple and not value:
        return value
    if isinstance(value, (str, bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        raise InvalidEventError(
            field, f"must be an iterable of {kind.__name__}, got {type(value).__name__}"
        )
    result = tuple(value)
    for index, element in enumerate(result):
        if not isinstance(element, kind):
            raise InvalidEventError(
                f"{field}[{index}]", f"must be a {kind.__name__}, got {type(element).__name__}"
            )
    return result


def _items(value: Iterable[CartItem]) -> tuple[CartItem, ...]:
    return _tuple_of(CartItem, "items", value)


def _utms(value: Iterable[Utm]) -> tuple[Utm, ...]:
    return _tuple_of(Utm, "utm", value)


@attrs.frozen
class CartItem:
    """One line of a cart: a SKU and how many of it (0 or more)."""

    sku: str = attrs.field(validator=_text)
    quantity: int = attrs.field(validator=_quantity)


def _checkout(instance: Cart, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not bool:
        raise InvalidEventError(attribute.name, f"must be a bool, got {type(value).__name__}")
    if value and instance.items:
        raise InvalidEventError(
            attribute.name, f"a checked-out cart has no items, got {len(instance.items)}"
        )


@attrs.frozen
class Cart:
    """The state of a shopper's cart at ``time``.

    Send an emptied cart with ``items=()``: Engage then stops the abandoned-cart flow for it.
    Only the update with the latest ``time`` (by instant) counts. Send a checkout with
    :meth:`Cart.checked_out`, which stamps it ahead so that no later-arriving update of the
    cart can win over it.

    ``checkout`` marks a cart made by :meth:`checked_out`. It is a local note, never sent to
    Voyado and not part of equality: a checked-out cart equals the emptied cart Voyado
    receives.
    """

    cart_reference: str = attrs.field(validator=_text)
    contact_id: str = attrs.field(converter=_contact_str, validator=_contact_id)
    items: tuple[CartItem, ...] = attrs.field(
        default=(), converter=_items
    )
    time: datetime = attrs.field(factory=_utc_now, converter=parse_time)
    language: str | None = attrs.field(default=None, validator=_language)
    url: str | None = attrs.field(default=None, validator=_url)
    checkout: bool = attrs.field(default=False, eq=False, kw_only=True, validator=_checkout)

    @classmethod
    def checked_out(
        cls,
        cart_reference: str,
        contact_id: str | UUID,
        *,
        time: datetime | str | None = None,
        skew: float = 5.0,
    ) -> Cart:
        """The emptied cart of a checkout, stamped *skew* seconds after *time* (default now).

        Stamped ahead, it wins the plain latest-by-time rule (in the buffer, the journal,
        the fleet's stream and at Voyado) against every update of the cart stamped up to
        *skew* seconds after the checkout, such as one from a worker whose clock runs ahead.
        An update stamped later than that is a new cart under the same reference: use one
        ``cart_reference`` per order, or ``skew=0``.
        """
        if (not isinstance(skew, (int, float)) or isinstance(skew, bool)
                or not math.isfinite(skew) or skew < 0):
            raise InvalidEventError("skew", f"must be a finite number of seconds >= 0, got "
                                    f"{shorten(skew)}")
        base = _utc_now() if time is None else parse_time(time)
        try:
            stamped = base + timedelta(seconds=skew)
        except OverflowError:
            raise InvalidEventError("skew", f"moves time {shorten(time)} past the year 9999"
                                    ) from None
        return cls(cart_reference, contact_id, (), stamped, checkout=True)


@attrs.frozen
class Utm:
    """One UTM parameter of a product view, e.g. ``Utm("utm_source", "newsletter")``."""

    key: str = attrs.field(validator=_text)
    value: str = attrs.field()

    @value.validator
    def _check_value(self, attribute: attrs.Attribute[Any], value: object) -> None:
        _check_text(attribute.name, value, empty_ok=True)


@attrs.frozen
class ProductView:
    """A contact looked at a product (the input of abandoned-browse flows)."""

    item_id: str = attrs.field(validator=_text)
    contact_id: str = attrs.field(converter=_contact_str, validator=_contact_id)
    time: datetime = attrs.field(factory=_utc_now, converter=parse_time)
    category: str | None = attrs.field(default=None, validator=_optional_text)
    session_id: str | None = attrs.field(default=None, validator=_optional_text)
    new_session: bool | None = attrs.field(default=None, validator=_optional_bool)
    language: str | None = attrs.field(default=None, validator=_language)
    url: str | None = attrs.field(default=None, validator=_url)
    external_referrer: str | None = attrs.field(default=None, validator=_url)
    utm: tuple[Utm, ...] = attrs.field(default=(), converter=_utms)


# -- fast constructors ----------------------------------------------------------------------
#
# A shop builds one event per request, so construction is the caller's cost. attrs' generated
# __init__ calls a converter or validator per field (about 20 Python calls for a product view).
# The __init__ below checks the common shape of each field inline, with the same rules, and
# hands anything else to attrs' __init__ (kept in _FULL_INIT), which decides and raises:
# the fast path never raises and never accepts what the full validation rejects
# (tests/test_models.py pins this with generated inputs).

_NOTHING: Any = attrs.NOTHING
_now = datetime.now
_guid = _GUID.fullmatch
_culture = _CULTURE.fullmatch
_plain_url = _PLAIN_URL.fullmatch
_FULL_INIT: dict[type, Callable[..., None]] = {
    cls: cls.__init__ for cls in (CartItem, Cart, ProductView)
}
_full_item, _full_cart, _full_view = _FULL_INIT[CartItem], _FULL_INIT[Cart], _FULL_INIT[
    ProductView
]


def _setters(cls: type, names: str) -> tuple[Callable[[Any, Any], None], ...]:
    # The slots' own descriptors: frozen classes forbid setattr, and these skip that check.
    return tuple(cls.__dict__[name].__set__ for name in names.split())


_set_sku, _set_quantity = _setters(CartItem, "sku quantity")
(
    _set_reference, _set_cart_contact, _set_items, _set_cart_time, _set_cart_language,
    _set_cart_url, _set_checkout,
) = _setters(Cart, "cart_reference contact_id items time language url checkout")
(
    _set_item_id, _set_contact, _set_time, _set_category, _set_session, _set_new_session,
    _set_language, _set_url, _set_referrer, _set_utm,
) = _setters(
    ProductView,
    "item_id contact_id time category session_id new_session language url external_referrer utm",
)


def _cart_item_init(self: CartItem, sku: str, quantity: int) -> None:
    if (
        type(sku) is str and sku.isascii() and 0 < len(sku) <= MAX_TEXT and not sku.isspace()
        and type(quantity) is int and 0 <= quantity <= MAX_QUANTITY
    ):
        _set_sku(self, sku)
        _set_quantity(self, quantity)
        return
    _full_item(self, sku, quantity)


def _cart_init(
    self: Cart,
    cart_reference: str,
    contact_id: str | UUID,
    items: Iterable[CartItem] = (),
    time: datetime | str = _NOTHING,
    language: str | None = None,
    url: str | None = None,
    *,
    checkout: bool = False,
) -> None:
    checked: tuple[CartItem, ...] | None = None
    kind = type(items)
    if kind is tuple or kind is list:
        checked = tuple(items)
        for item in checked:
            if type(item) is not CartItem:
                checked = None
                break
    if (
        checked is not None
        and type(cart_reference) is str and cart_reference.isascii()
        and 0 < len(cart_reference) <= MAX_TEXT and not cart_reference.isspace()
        and type(contact_id) is str and _guid(contact_id) is not None
        and (time is _NOTHING or (type(time) is datetime and time.tzinfo is _UTC))
        and (language is None or (type(language) is str and len(language) <= MAX_TEXT
                                  and _culture(language) is not None))
        and (url is None or (type(url) is str and url.isascii() and len(url) <= MAX_URL
                             and _plain_url(url) is not None))
        and checkout is False
    ):
        _set_reference(self, cart_reference)
        _set_cart_contact(self, contact_id)
        _set_items(self, checked)
        _set_cart_time(self, _now(_UTC) if time is _NOTHING else time)
        _set_cart_language(self, language)
        _set_cart_url(self, url)
        _set_checkout(self, False)
        return
    _full_cart(self, cart_reference, contact_id, items, time, language, url, checkout=checkout)


def _product_view_init(
    self: ProductView,
    item_id: str,
    contact_id: str | UUID,
    time: datetime | str = _NOTHING,
    category: str | None = None,
    session_id: str | None = None,
    new_session: bool | None = None,
    language: str | None = None,
    url: str | None = None,
    external_referrer: str | None = None,
    utm: Iterable[Utm] = (),
) -> None:
    if (
        type(item_id) is str and item_id.isascii() and 0 < len(item_id) <= MAX_TEXT
        and not item_id.isspace()
        and type(contact_id) is str and _guid(contact_id) is not None
        and (time is _NOTHING or (type(time) is datetime and time.tzinfo is _UTC))
        and (category is None or (type(category) is str and category.isascii()
                                  and 0 < len(category) <= MAX_TEXT and not category.isspace()))
        and (session_id is None or (type(session_id) is str and session_id.isascii()
                                    and 0 < len(session_id) <= MAX_TEXT
                                    and not session_id.isspace()))
        and (new_session is None or type(new_session) is bool)
        and (language is None or (type(language) is str and len(language) <= MAX_TEXT
                                  and _culture(language) is not None))
        and (url is None or (type(url) is str and url.isascii() and len(url) <= MAX_URL
                             and _plain_url(url) is not None))
        and (external_referrer is None or (
            type(external_referrer) is str and external_referrer.isascii()
            and len(external_referrer) <= MAX_URL and _plain_url(external_referrer) is not None
        ))
        and type(utm) is tuple and not utm
    ):
        _set_item_id(self, item_id)
        _set_contact(self, contact_id)
        _set_time(self, _now(_UTC) if time is _NOTHING else time)
        _set_category(self, category)
        _set_session(self, session_id)
        _set_new_session(self, new_session)
        _set_language(self, language)
        _set_url(self, url)
        _set_referrer(self, external_referrer)
        _set_utm(self, utm)
        return
    _full_view(self, item_id, contact_id, time, category, session_id, new_session, language,
               url, external_referrer, utm)


for _cls, _init in ((CartItem, _cart_item_init), (Cart, _cart_init),
                    (ProductView, _product_view_init)):
    _init.__doc__ = _FULL_INIT[_cls].__doc__
    _init.__qualname__ = f"{_cls.__name__}.__init__"
    setattr(_cls, "__init__", _init)  # noqa: B010 (mypy: no assignment to a method)
del _cls, _init


def supersedes(new: Cart, old: Cart) -> bool:
    """The collapse rule: whether *new*, which arrived after *old*, replaces it.

    Only the latest instant of a cart matters to Voyado; an equal instant goes to the later
    arrival. The store, the forwarder's ledger and the tests' oracles ask this one function
    (the journal's SQL upsert mirrors it).
    """
    return new.time >= old.time
