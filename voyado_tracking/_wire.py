"""The camelCase JSON wire format of Voyado's tracking endpoints.

One cattrs converter, built once at import, turns models into wire dicts: field names renamed
to camelCase by a hook factory, absent optional fields omitted (never ``null``), ``time`` in
ISO 8601 with the event's own offset, and a cart's ``items`` always present (``[]`` for an
emptied cart, which is what stops Engage's abandoned-cart mail). orjson makes the bytes.
For speed the two event types' functions are written out by hand (one per request in a shop,
on the event loop); the tests pin them equal to the converter's, which stays the reference.

The way back (wire dict to model) is written by hand rather than left to cattrs: cattrs'
primitive hooks coerce (``str(5)``, ``int("3")``), which would hide exactly the bad input we
must report. Every problem becomes an :class:`InvalidEventError` naming the camelCase path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Final, Literal, TypeVar

import attrs
import cattrs
import orjson
from cattrs.fns import identity
from cattrs.gen import make_dict_unstructure_fn, override

from ._errors import InvalidEventError, shorten
from ._models import Cart, CartItem, ProductView, Utm

__all__ = [
    "CARTS",
    "CARTS_BATCH",
    "PRODUCT_VIEW",
    "PRODUCT_VIEWS",
    "Event",
    "EventType",
    "dumps",
    "encode_batch",
    "encode_parts",
    "event_from_wire",
    "event_to_wire",
    "loads",
    "split_bodies",
    "structure",
]

Event = Cart | ProductView
EventType = Literal["cart", "product_view"]
_E = TypeVar("_E")

# Voyado's four tracking endpoints (all POST, JSON body).
CARTS: Final = "/api/v2/tracking/carts"
CARTS_BATCH: Final = "/api/v2/tracking/carts/batch"
PRODUCT_VIEW: Final = "/api/v2/tracking/productview"
PRODUCT_VIEWS: Final = "/api/v2/tracking/productviews"
# Voyado requires a User-Agent of the form "System/Version".
USER_AGENT_PATTERN: Final = re.compile(r"\S+/\S+.*")

EVENT_TYPES: Final[dict[str, type[Event]]] = {"cart": Cart, "product_view": ProductView}
TYPE_NAMES: Final[dict[type[Event], EventType]] = {Cart: "cart", ProductView: "product_view"}

# Fields sent even when empty: an emptied cart must say so.
_ALWAYS_SENT: Final = frozenset({(Cart, "items")})
# Fields that are never on the wire, either way: a cart's checkout flag is a local note (in
# event files it is the record's top-level "checkout" key, see _eventfile).
_NOT_ON_WIRE: Final = frozenset({(Cart, "checkout")})


def camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.capitalize() for part in rest)


_converter = cattrs.Converter()
# orjson writes aware datetimes as RFC 3339 with their own offset, faster than isoformat().
# cattrs' own ``identity`` (not an equivalent lambda) lets the generated unstructure function
# read the attribute inline instead of calling a hook per field: the buffer encodes every
# event on the event loop, so this is the hottest path of a flush.
_converter.register_unstructure_hook(datetime, identity)
# Optional text and flags are passed as they are (None is omitted by the field override).
_converter.register_unstructure_hook_func(
    lambda t: t in (str | None, bool | None), identity  # also equal to Optional[str] etc.
)


def _unstructure_factory(cls: type[Any]) -> Callable[[Any], dict[str, Any]]:
    overrides = {
        a.name: override(omit=True) if (cls, a.name) in _NOT_ON_WIRE else override(
            rename=camel(a.name),
            omit_if_default=(cls, a.name) not in _ALWAYS_SENT and a.default in (None, ()),
        )
        for a in attrs.fields(cls)
    }
    return make_dict_unstructure_fn(cls, _converter, **overrides)  # type: ignore[arg-type]


_converter.register_unstructure_hook_factory(attrs.has, _unstructure_factory)



def _cart_to_wire(cart: Cart) -> dict[str, Any]:
    # The converter's function for Cart, written out: each item's dict inline instead of a
    # call per item, `is not None` instead of `!= None` (tests/test_wire.py pins the two equal).
    wire = {
        "cartReference": cart.cart_reference,
        "contactId": cart.contact_id,
        "items": [{"sku": item.sku, "quantity": item.quantity} for item in cart.items],
        "time": cart.time,
    }
    if cart.language is not None:
        wire["language"] = cart.language
    if cart.url is not None:
        wire["url"] = cart.url
    return wire


def _view_to_wire(view: ProductView) -> dict[str, Any]:
    # The converter's function for ProductView, written out (see _cart_to_wire).
    wire: dict[str, Any] = {"itemId": view.item_id, "contactId": view.contact_id,
                            "time": view.time}
    if view.category is not None:
        wire["category"] = view.category
    if view.session_id is not None:
        wire["sessionId"] = view.session_id
    if view.new_session is not None:
        wire["newSession"] = view.new_session
    if view.language is not None:
        wire["language"] = view.language
    if view.url is not None:
        wire["url"] = view.url
    if view.external_referrer is not None:
        wire["externalReferrer"] = view.external_referrer
    if view.utm:
        wire["utm"] = [{"key": utm.key, "value": utm.value} for utm in view.utm]
    return wire


# The converter's own functions stay the reference (CONVERTER_TO_WIRE, for the tests).
CONVERTER_TO_WIRE: Final[dict[type, Callable[[Any], dict[str, Any]]]] = {
    cls: _converter.get_unstructure_hook(cls) for cls in (Cart, ProductView)
}
_TO_WIRE: Final[dict[type, Callable[[Any], dict[str, Any]]]] = {
    Cart: _cart_to_wire, ProductView: _view_to_wire,
}


def event_to_wire(event: Event) -> dict[str, Any]:
    """The camelCase wire dict of an event."""
    return _TO_WIRE[type(event)](event)


def _to_wire_default(event: Any) -> dict[str, Any]:
    # orjson's ``default``: called for each event as orjson meets it in a list, so one wire
    # dict is alive at a time and the whole body is one buffer (see encode_batch).
    try:
        return _TO_WIRE[type(event)](event)
    except KeyError:
        raise TypeError(f"not a Cart or ProductView: {type(event).__name__}") from None


def dumps(events: Iterable[Event]) -> bytes:
    """The JSON array body of a batch request."""
    return orjson.dumps(events if isinstance(events, list) else list(events),
                        default=_to_wire_default)


def dumps_one(event: Event) -> bytes:
    return orjson.dumps(_TO_WIRE[type(event)](event))


loads = orjson.loads

# -- wire dict -> model --------------------------------------------------------------------

_NESTED: Final[dict[tuple[type, str], type]] = {
    (Cart, "items"): CartItem,
    (ProductView, "utm"): Utm,
}
# Voyado needs a cart's time to order its updates; "now" would be a silent guess on replay.
_REQUIRED_ON_WIRE: Final = frozenset({(Cart, "time")})


@attrs.frozen
class _Spec:
    fields: dict[str, tuple[str, type | None]]
    required: tuple[str, ...]


def _spec(cls: type) -> _Spec:
    fields: dict[str, tuple[str, type | None]] = {}
    required: list[str] = []
    for a in attrs.fields(cls):
        if (cls, a.name) in _NOT_ON_WIRE:
            continue
        fields[camel(a.name)] = (a.name, _NESTED.get((cls, a.name)))
        if a.default is attrs.NOTHING or (cls, a.name) in _REQUIRED_ON_WIRE:
            required.append(camel(a.name))
    return _Spec(fields, tuple(required))


_SPECS: Final[dict[type, _Spec]] = {cls: _spec(cls) for cls in (Cart, ProductView, CartItem, Utm)}


def _prefixed(path: str, error: InvalidEventError) -> InvalidEventError:
    field = ".".join(camel(part) for part in error.field.split("."))
    return InvalidEventError(f"{path}.{field}" if path else field, error.problem)


def structure(cls: type[_E], data: object, path: str = "") -> _E:
    """A validated model from its wire dict; any problem is an InvalidEventError."""
    spec = _SPECS[cls]
    if not isinstance(data, dict):
        raise InvalidEventError(path or cls.__name__, f"must be a JSON object, got {shorten(data)}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        entry = spec.fields.get(key)
        if entry is None:
            known = ", ".join(spec.fields)
            name = shorten(key) if not key or not str(key).isprintable() else str(key)
            where = f"{path}.{name}" if path else name
            raise InvalidEventError(where, f"is not a {cls.__name__} field (known: {known})")
        if value is None:  # null means absent
            continue
        name, nested = entry
        if nested is not None:
            where = f"{path}.{key}" if path else key
            if not isinstance(value, list):
                raise InvalidEventError(where, f"must be a JSON array, got {shorten(value)}")
            value = [structure(nested, v, f"{where}[{i}]") for i, v in enumerate(value)]
        kwargs[name] = value
    for key in spec.required:
        if spec.fields[key][0] not in kwargs:
            raise InvalidEventError(f"{path}.{key}" if path else key, "is required")
    try:
        return cls(**kwargs)
    except InvalidEventError as error:
        raise _prefixed(path, error) from None


def event_from_wire(kind: str, data: object) -> Event:
    """A Cart or ProductView from its type name and wire dict."""
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise InvalidEventError("type", f"must be 'cart' or 'product_view', got {shorten(kind)}")
    return structure(cls, data)


# -- size estimates (the buffer's byte trigger) ----------------------------------------------


def size_hint(event: Event) -> int:
    """A cheap estimate of an event's JSON size in bytes, for the buffer's byte threshold.

    Exact sizes are measured when a batch is encoded; this only decides when to wake up.
    """
    if type(event) is ProductView:
        # Unrolled (no tuple, no loop): this runs twice per buffered view, on the event loop.
        size = 90 + len(event.item_id)
        text = event.category
        if text is not None:
            size += 16 + len(text)
        text = event.session_id
        if text is not None:
            size += 16 + len(text)
        text = event.url
        if text is not None:
            size += 16 + len(text)
        text = event.external_referrer
        if text is not None:
            size += 16 + len(text)
        if event.utm:
            for utm in event.utm:
                size += 20 + len(utm.key) + len(utm.value)
        return size
    size = 110 + len(event.cart_reference) + 28 * len(event.items)  # type: ignore[union-attr]
    for item in event.items:  # type: ignore[union-attr]
        size += len(item.sku)
    if event.url is not None:
        size += 8 + len(event.url)
    return size


# -- batch bodies (the buffer's requests) ---------------------------------------------------


def encode_parts(events: list[Event]) -> list[bytes]:
    """Each event's JSON on its own (to split a batch that is over the byte limit)."""
    to_wire, dumps_ = _TO_WIRE, orjson.dumps
    return [dumps_(to_wire[type(e)](e)) for e in events]


def encode_batch(events: list[Event]) -> bytes:
    """The JSON array body of a batch request, in one orjson call and one buffer.

    orjson asks ``default`` for each event's wire dict as it goes, so one wire dict is alive
    at a time: no batch of GC-tracked containers (a list of 500 dicts would survive
    collections, get promoted and eventually trigger a full collection over every buffered
    event, stalling the loop), and no 500 separate ``bytes`` to join (each one a malloc'd
    buffer: the heap grew and was trimmed by about 1.5 MB per batch, 300-400 page faults).
    The bytes are those of ``b"[" + b",".join(encode_parts(events)) + b"]"``.
    """
    return orjson.dumps(events, default=_to_wire_default)


def split_bodies(
    events: list[Event], max_bytes: int
) -> list[tuple[list[Event], bytes]]:
    """Request bodies of at most *max_bytes* each, in order (a lone larger event goes alone)."""
    body = encode_batch(events)
    if len(body) <= max_bytes or len(events) == 1:
        return [(events, body)]
    del body
    parts = encode_parts(events)
    bodies: list[tuple[list[Event], bytes]] = []
    start, size = 0, 2  # the brackets
    for index, part in enumerate(parts):
        if index > start and size + len(part) + 1 > max_bytes:
            bodies.append((events[start:index], b"[" + b",".join(parts[start:index]) + b"]"))
            start, size = index, 2
        size += len(part) + 1
    bodies.append((events[start:], b"[" + b",".join(parts[start:]) + b"]"))
    return bodies
