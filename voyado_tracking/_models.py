"""The tracking events: frozen, slotted attrs classes, validated when they are built.

An invalid value raises :class:`InvalidEventError` naming the field, at the place the event is
created, so a bad event never reaches a buffer or the wire. The models know nothing of JSON:
the camelCase wire format lives in ``_wire``.

Limits we enforce beyond Voyado's documentation, to keep every accepted event sendable:
strings must be valid UTF-8 text (no lone surrogates) and at most ``MAX_TEXT`` characters
(``MAX_URL`` for URLs); quantities fit Voyado's 32-bit integers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar
from urllib.parse import urlsplit
from uuid import UUID

import attrs

from ._errors import InvalidEventError, shorten

__all__ = ["Cart", "CartItem", "ProductView", "Utm", "parse_time"]

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


@attrs.frozen
class Cart:
    """The state of a shopper's cart at ``time``.

    Send an emptied or checked-out cart with ``items=()``: Engage then stops the abandoned-cart
    flow for it. Only the update with the latest ``time`` (by instant) counts.
    """

    cart_reference: str = attrs.field(validator=_text)
    contact_id: str = attrs.field(converter=_contact_str, validator=_contact_id)
    items: tuple[CartItem, ...] = attrs.field(
        default=(), converter=_items
    )
    time: datetime = attrs.field(factory=_utc_now, converter=parse_time)
    language: str | None = attrs.field(default=None, validator=_language)
    url: str | None = attrs.field(default=None, validator=_url)


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
