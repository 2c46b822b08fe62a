"""A journal row's body: how an event is written to the journal and read back.

Format 2 (this version's) is the event as a JSON object keyed by its constructor's argument
names, a UTM or cart item as an object too; a field that is ``None`` (or an empty ``utm``) is
left out (so is a cart's ``checkout`` flag unless it is true)::

    {"item_id": "SKU-1", "contact_id": "3fa8...", "time": "2024-05-01T10:00:00+02:00",
     "url": "https://shop.example/p/1", "utm": [{"key": "utm_source", "value": "mail"}]}
    {"cart_reference": "c1", "contact_id": "3fa8...", "items": [{"sku": "SKU-1",
     "quantity": 2}], "time": "2024-05-01T10:00:00Z"}

Reading decodes by name and rebuilds events through their validating constructors: a key
this version does not know is ignored and a missing one takes its default, so a field added
later needs no new format. A run of views is encoded with one ``orjson.dumps`` of a list of
dicts, which the writer inserts with one statement (``json_each``): this costs the writer
thread, and so the event loop it shares the GIL with, several times less than one wire dict
per event.

Format 1 wrote a body as a JSON array of the fields in a fixed order. A format-1 file is
rewritten to format 2 when it is adopted: :data:`V1_MIGRATION` calls the functions that
:func:`add_v1_functions` gives a connection, which read the rows through that order, frozen
in ``_V1_VIEW_FIELDS`` and ``_V1_CART_FIELDS`` whatever the models become.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, Final

import attrs
import orjson

from .._models import Cart, CartItem, ProductView, Utm

__all__ = ["V1_MIGRATION", "add_v1_functions", "decode_cart", "decode_view", "encode_cart",
           "encode_views"]


def _nested(value: object) -> dict[str, object]:
    if type(value) is Utm:
        return {"key": value.key, "value": value.value}
    if type(value) is CartItem:
        return {"sku": value.sku, "quantity": value.quantity}
    raise TypeError(f"cannot journal a {type(value).__name__}")


def encode_views(views: list[ProductView]) -> bytes:
    """A JSON array with one body per view."""
    # Written out: a loop over the attrs fields costs the writer twice as much. The tests pin
    # that every field of the model is written.
    bodies: list[dict[str, Any]] = []
    add = bodies.append
    for v in views:
        body: dict[str, Any] = {"item_id": v.item_id, "contact_id": v.contact_id, "time": v.time}
        if v.category is not None:
            body["category"] = v.category
        if v.session_id is not None:
            body["session_id"] = v.session_id
        if v.new_session is not None:
            body["new_session"] = v.new_session
        if v.language is not None:
            body["language"] = v.language
        if v.url is not None:
            body["url"] = v.url
        if v.external_referrer is not None:
            body["external_referrer"] = v.external_referrer
        if v.utm:
            body["utm"] = v.utm
        add(body)
    return orjson.dumps(bodies, default=_nested)


def encode_cart(cart: Cart) -> bytes:
    body: dict[str, Any] = {"cart_reference": cart.cart_reference,
                            "contact_id": cart.contact_id, "items": cart.items, "time": cart.time}
    if cart.language is not None:
        body["language"] = cart.language
    if cart.url is not None:
        body["url"] = cart.url
    if cart.checkout:
        body["checkout"] = True
    return orjson.dumps(body, default=_nested)


_NAMES: Final[dict[type, frozenset[str]]] = {cls: frozenset(a.name for a in attrs.fields(cls))
                 for cls in (Cart, CartItem, ProductView, Utm)}


def _fields(cls: type, body: object) -> dict[str, Any]:
    """The fields of *body*, a JSON object, that *cls* knows (a later version may add some)."""
    if type(body) is not dict:
        raise TypeError(f"a journaled {cls.__name__} is a JSON object, not {type(body).__name__}")
    names = _NAMES[cls]
    return body if body.keys() <= names else {k: v for k, v in body.items() if k in names}


def decode_view(body: bytes | str) -> ProductView:
    """A validated view from its body (``ValueError`` or ``TypeError`` if it is not one)."""
    fields = _fields(ProductView, orjson.loads(body))
    if "utm" in fields:
        fields["utm"] = [Utm(**_fields(Utm, utm)) for utm in fields["utm"]]
    return ProductView(**fields)


def decode_cart(body: bytes | str) -> Cart:
    fields = _fields(Cart, orjson.loads(body))
    if "items" in fields:
        fields["items"] = [CartItem(**_fields(CartItem, item)) for item in fields["items"]]
    return Cart(**fields)


# -- format 1, frozen ----------------------------------------------------------------------

# Format 1's bodies: JSON arrays of the fields in this order, a UTM or cart item as a pair.
_V1_VIEW_FIELDS: Final = ("item_id", "contact_id", "time", "category", "session_id",
                          "new_session", "language", "url", "external_referrer", "utm")
_V1_CART_FIELDS: Final = ("cart_reference", "contact_id", "items", "time", "language", "url")
_V1_PAIRS: Final = {"utm": ("key", "value"), "items": ("sku", "quantity")}


def _v1_body(names: tuple[str, ...]) -> Callable[[bytes | str], bytes | str]:
    """Rewrites a format-1 body (fields in the order of *names*) as a format-2 one."""

    def rewrite(body: bytes | str) -> bytes | str:
        try:
            fields = dict(zip(names, orjson.loads(body), strict=True))
            for name, keys in _V1_PAIRS.items():
                if name in fields:
                    fields[name] = [dict(zip(keys, pair, strict=True)) for pair in fields[name]]
            return orjson.dumps(fields)
        except (ValueError, TypeError):  # left as it is: recovery removes it as unreadable
            return body

    return rewrite


V1_MIGRATION: Final = (
    "UPDATE views SET body = v1_view_body(body); UPDATE carts SET body = v1_cart_body(body)"
)


def add_v1_functions(db: sqlite3.Connection) -> None:
    """Give *db* the SQL functions :data:`V1_MIGRATION` calls."""
    db.create_function("v1_view_body", 1, _v1_body(_V1_VIEW_FIELDS), deterministic=True)
    db.create_function("v1_cart_body", 1, _v1_body(_V1_CART_FIELDS), deterministic=True)
