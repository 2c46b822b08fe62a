"""A journal row's body: format 2 is an object keyed by field name, read back by name."""

from __future__ import annotations

import sqlite3

import attrs
import orjson
import pytest

import voyado_tracking as vt
from voyado_tracking._journal._body import (
    V1_MIGRATION,
    add_v1_functions,
    decode_cart,
    decode_view,
    encode_cart,
    encode_views,
)

CONTACT = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
FULL_VIEW = vt.ProductView(
    "SKU-1", CONTACT, time="2024-05-01T10:00:00.123456+02:00", category="shoes",
    session_id="s", new_session=False, language="sv-SE", url="https://shop.example/p/1",
    external_referrer="https://ref.example", utm=[vt.Utm("utm_source", "mail"),
                                                  vt.Utm("utm_term", "")],
)
FULL_CART = vt.Cart("c1", CONTACT, [vt.CartItem("SKU-1", 2), vt.CartItem("SKU-2", 0)],
                    time="2024-05-01T10:00:00-05:00", language="en-US",
                    url="https://shop.example/cart")

CHECKED_OUT = vt.Cart.checked_out("c1", CONTACT, time="2024-05-01T10:00:00-05:00")


def names(cls: type) -> set[str]:
    return {a.name for a in attrs.fields(cls)}


def view_body(view: vt.ProductView) -> dict[str, object]:
    body: dict[str, object] = orjson.loads(encode_views([view]))[0]
    return body


def test_a_body_holds_every_field_of_the_model_by_name() -> None:
    """The encoders are written out by hand: a field added to a model must be added there."""
    assert set(view_body(FULL_VIEW)) == names(vt.ProductView)
    assert set(view_body(FULL_VIEW)["utm"][0]) == names(vt.Utm)  # type: ignore[index]
    cart = orjson.loads(encode_cart(FULL_CART))
    assert set(cart) == names(vt.Cart) - {"checkout"}  # only written when true
    assert set(cart["items"][0]) == names(vt.CartItem)
    checked_out = orjson.loads(encode_cart(CHECKED_OUT))
    assert set(checked_out) - {"language", "url"} == names(vt.Cart) - {"language", "url"}


def test_a_checked_out_cart_keeps_its_flag_through_the_journal() -> None:
    assert orjson.loads(encode_cart(CHECKED_OUT))["checkout"] is True
    back = decode_cart(encode_cart(CHECKED_OUT))
    assert back.checkout is True
    assert back == CHECKED_OUT
    assert decode_cart(encode_cart(FULL_CART)).checkout is False


def test_every_field_survives_the_round_trip() -> None:
    assert decode_view(encode_views([FULL_VIEW])[1:-1]) == FULL_VIEW  # the run's one element
    assert decode_cart(encode_cart(FULL_CART)) == FULL_CART
    assert decode_cart(encode_cart(FULL_CART)).time.utcoffset() == FULL_CART.time.utcoffset()


def test_fields_that_are_none_are_left_out_and_read_back_as_none() -> None:
    view = vt.ProductView("SKU-1", CONTACT, time="2024-05-01T10:00:00Z", new_session=False)
    assert view_body(view) == {"item_id": "SKU-1", "contact_id": CONTACT,
                               "time": "2024-05-01T10:00:00+00:00", "new_session": False}
    assert decode_view(orjson.dumps(view_body(view))) == view


def test_a_key_this_version_does_not_know_is_ignored() -> None:
    body = view_body(FULL_VIEW)
    body["placement"] = "top"
    body["utm"][0]["origin"] = "ad"  # type: ignore[index]
    assert decode_view(orjson.dumps(body)) == FULL_VIEW
    cart = orjson.loads(encode_cart(FULL_CART))
    cart["checked_out"] = True
    cart["items"][0]["price"] = 9.5
    assert decode_cart(orjson.dumps(cart)) == FULL_CART


def test_a_missing_optional_key_takes_its_default() -> None:
    view = decode_view(b'{"item_id": "SKU-1", "contact_id": "%s", "time": "2024-05-01T10:00:00Z"}'
                       % CONTACT.encode())
    assert view == vt.ProductView("SKU-1", CONTACT, time="2024-05-01T10:00:00Z")
    cart = decode_cart(b'{"cart_reference": "c1", "contact_id": "%s", '
                       b'"time": "2024-05-01T10:00:00Z"}' % CONTACT.encode())
    assert cart == vt.Cart("c1", CONTACT, time="2024-05-01T10:00:00Z")


@pytest.mark.parametrize("body", [
    b'["SKU-1", "3fa85f64-5717-4562-b3fc-2c963f66afa6"]',  # a format-1 array
    b'{"contact_id": "3fa85f64-5717-4562-b3fc-2c963f66afa6"}',  # no item_id
    b'{"item_id": "SKU-1", "contact_id": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "utm": [1]}',
    b"not json",
])
def test_a_body_that_is_not_a_view_raises_what_recovery_catches(body: bytes) -> None:
    with pytest.raises((ValueError, TypeError)):
        decode_view(body)


def migrated(table: str, bodies: list[bytes]) -> list[bytes | str]:
    """*bodies* (format 1) after the format-1 migration of a *table* holding them."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE views (body BLOB)")
    db.execute("CREATE TABLE carts (body BLOB)")
    db.executemany(f"INSERT INTO {table} VALUES (?)", [(b,) for b in bodies])
    add_v1_functions(db)
    db.executescript(V1_MIGRATION)
    return [row[0] for row in db.execute(f"SELECT body FROM {table} ORDER BY rowid")]


def test_a_format_1_body_is_read_through_the_frozen_field_order() -> None:
    view = orjson.dumps(["SKU-1", CONTACT, "2024-05-01T10:00:00.123456+02:00", "shoes", "s",
                         False, "sv-SE", "https://shop.example/p/1", "https://ref.example",
                         [["utm_source", "mail"], ["utm_term", ""]]])
    cart = orjson.dumps(["c1", CONTACT, [["SKU-1", 2], ["SKU-2", 0]],
                         "2024-05-01T10:00:00-05:00", "en-US", "https://shop.example/cart"])
    assert [decode_view(body) for body in migrated("views", [view])] == [FULL_VIEW]
    assert [decode_cart(body) for body in migrated("carts", [cart])] == [FULL_CART]


def test_a_format_1_body_that_cannot_be_read_is_left_as_it_is() -> None:
    """Recovery then removes that one row as unreadable; the migration does not fail."""
    bad = [b"not json", b'["SKU-1"]', b'{"item_id": "SKU-1"}']
    assert migrated("views", bad) == bad
