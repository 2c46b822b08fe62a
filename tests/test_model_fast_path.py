"""The models' fast constructors against the full validation, on generated inputs.

``CartItem``, ``Cart`` and ``ProductView`` check the common shape of their fields inline and
hand anything else to attrs' generated ``__init__`` (the full validation). For every input,
both must agree: the same ``InvalidEventError`` (field and problem), or equal objects whose
fields have the same types.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import voyado_tracking as vt
from voyado_tracking._models import _FULL_INIT, MAX_QUANTITY, MAX_TEXT, MAX_URL

ASCII = st.characters(min_codepoint=0, max_codepoint=0x7F)
SURROGATE = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
UTC = timezone.utc


class Sku(str):
    pass


class Quantity(enum.IntEnum):
    TWO = 2


class Item(vt.CartItem):
    pass


class OneShot:
    """Items given as an iterator: each side of a comparison gets its own."""

    def __init__(self, items: list[vt.CartItem]) -> None:
        self.items = items


def other_char(char: str) -> str:
    return "g" if char != "g" else "h"


def around(limit: int) -> st.SearchStrategy[str]:
    return st.sampled_from([limit - 1, limit, limit + 1]).map(lambda n: "a" * n)


texts = st.one_of(
    st.text(ASCII, max_size=12),
    st.text(max_size=6),
    st.text(SURROGATE, min_size=1, max_size=2).map(lambda s: "a" + s),
    st.sampled_from(["", " ", "\t\n", "a b", "sku-1", "é", "\x00"]),
    around(MAX_TEXT),
    st.text(ASCII, min_size=1, max_size=5).map(Sku),
)
anything = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(), st.binary(max_size=3)
)
optional_texts = st.one_of(st.none(), texts, anything)

guids = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids(),
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", min_size=21,
            max_size=23),
    st.uuids().map(lambda u: str(u)[:-1] + other_char(str(u)[-1])),
    st.uuids().map(lambda u: str(u) + "\n"),
    st.uuids().map(lambda u: Sku(str(u))),
    texts,
    anything,
)


languages = st.one_of(
    st.from_regex(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,2}", fullmatch=True),
    st.sampled_from(["sv-SE", "sv_SE", "s", "svenska-sverige-1", "sv-SE\n", "SV-se"]),
    st.just("sv" + "-abcdefgh" * 114),  # a valid culture code longer than MAX_TEXT
    optional_texts,
)
hosts = st.text("abcXYZ019.-_:[]@", min_size=0, max_size=12)
tails = st.text(st.one_of(ASCII, st.sampled_from("é\u2028")), max_size=20)
urls = st.one_of(
    st.builds(lambda scheme, host, sep, tail: f"{scheme}://{host}{sep}{tail}",
              st.sampled_from(["http", "https", "HTTPS", "hTtP", "ftp", "http:", ""]),
              hosts, st.sampled_from(["", "/", "?", "#", ":8080/", ":123456/", " "]), tails),
    st.sampled_from([0, 1, 2]).map(
        lambda d: "https://shop.example.com/" + "p" * (MAX_URL - 25 + d - 1)
    ),
    optional_texts,
)
times = st.one_of(
    st.just(attrs.NOTHING),
    st.datetimes(timezones=st.just(UTC)),
    st.datetimes(timezones=st.sampled_from([timezone(timedelta(hours=2)),
                                            timezone(timedelta(seconds=30))])),
    st.datetimes(timezones=st.timezones()),
    st.datetimes(),
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
    st.sampled_from(["2026-11-27T10:00:00Z", "2026-11-27", "yesterday"]),
    anything,
)
quantities = st.one_of(
    st.integers(-2, 3),
    st.sampled_from([MAX_QUANTITY, MAX_QUANTITY + 1, True, False, 1.0, Quantity.TWO, "1"]),
)
items = st.builds(vt.CartItem, st.sampled_from(["a", "sku-2"]), st.integers(0, 3))
item_lists = st.one_of(
    st.lists(items, max_size=3),
    st.lists(items, max_size=3).map(tuple),
    st.lists(st.one_of(items, st.just(Item("x", 1)), st.just({"sku": "x", "quantity": 1})),
             max_size=3),
    st.lists(items, max_size=3).map(OneShot),
    st.sampled_from(["ab", b"ab", {"a": 1}, None, 5, [1], ["a"], [None], (vt.Utm("a", "b"),)]),
)
utms = st.one_of(
    st.just(()),
    st.lists(st.builds(vt.Utm, st.just("utm_source"), st.just("mail")), max_size=2),
    st.lists(st.builds(vt.Utm, st.just("utm_source"), st.just("mail")), max_size=2).map(tuple),
    st.sampled_from([None, "utm", [("utm_source", "mail")]]),
)
FAST = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# The common shapes, which the fast path takes: every generated call starts from these and
# replaces up to two fields with a value from the wide strategies above.
words = st.text("abcXYZ019-_ ./>", min_size=1, max_size=12).filter(lambda s: not s.isspace())
COMMON: dict[str, st.SearchStrategy[Any]] = {
    "sku": words,
    "quantity": st.integers(0, 5),
    "item_id": words,
    "cart_reference": words,
    "contact_id": st.one_of(st.uuids().map(str), st.just("SW_6C0c8S0qajR0PaxsMEQ")),
    "items": st.lists(items, max_size=3),
    "time": st.one_of(st.just(attrs.NOTHING), st.datetimes(timezones=st.just(UTC))),
    "category": st.one_of(st.none(), words),
    "session_id": st.one_of(st.none(), words),
    "new_session": st.one_of(st.none(), st.booleans()),
    "language": st.one_of(st.none(), st.sampled_from(["sv-SE", "en", "nb-NO"])),
    "url": st.one_of(st.none(), words.map(lambda w: "https://shop.example.com/p/" + w.strip())),
    "external_referrer": st.one_of(st.none(), st.just("http://search.example/?q=shoes")),
    "utm": st.just(()),
    "checkout": st.just(False),
}
EDGE_TEXTS = ["", " ", "\t\n", "a" * MAX_TEXT, "a" * (MAX_TEXT + 1), "é", "a\ud800", Sku("x"),
              None, 1, b"x"]
EDGE_URLS = ["http://shop.example.com/p/é", "https://shop.example.com/a b", "ftp://x/",
             "https://shop.example.com/" + "p" * (MAX_URL - 25),
             "https://shop.example.com/" + "p" * (MAX_URL - 24), "https://", "", " ", None, 1,
             Sku("https://shop.example.com/"), "https://shop.example.com/\ud800",
             "https://shop.example.com/\x7f", "HTTPS://SHOP.EXAMPLE.COM:8080?q"]


def edges(values: list[Any], wide: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Half the draws from hand-picked boundary values, half from a wide strategy."""
    return st.one_of(st.sampled_from(values), wide)


WIDE: dict[str, st.SearchStrategy[Any]] = {
    "sku": edges(EDGE_TEXTS, texts),
    "quantity": quantities,
    "item_id": edges(EDGE_TEXTS, texts),
    "cart_reference": edges(EDGE_TEXTS, texts),
    "contact_id": guids,
    "items": item_lists,
    "time": times,
    "category": edges(EDGE_TEXTS, optional_texts),
    "session_id": edges(EDGE_TEXTS, optional_texts),
    "new_session": st.sampled_from([None, True, False, 0, 1, "yes"]),
    "language": edges(["sv" + "-abcdefgh" * 114, "sv-SE\n", "s", "é", *EDGE_TEXTS], languages),
    "url": edges(EDGE_URLS, urls),
    "external_referrer": edges(EDGE_URLS, urls),
    "utm": utms,
    "checkout": st.sampled_from([False, True, None, 0, 1, "yes"]),
}


@st.composite
def arguments(draw: st.DrawFn, cls: type) -> dict[str, Any]:
    names = [a.name for a in attrs.fields(cls)]
    odd = draw(st.sets(st.sampled_from(names), min_size=1, max_size=2))
    return {name: draw(WIDE[name] if name in odd else COMMON[name]) for name in names}


def build(make: Any) -> tuple[str, Any]:
    try:
        return "ok", make()
    except vt.InvalidEventError as error:
        return "invalid", (error.field, error.problem)


def full(cls: type, kwargs: dict[str, Any]) -> Any:
    """An instance built by attrs' generated __init__ alone: every converter and validator
    (given the arguments positionally, the keyword-only ones by name)."""
    kw_only = {a.name for a in attrs.fields(cls) if a.kw_only}
    instance = object.__new__(cls)
    _FULL_INIT[cls](instance, *(v for k, v in kwargs.items() if k not in kw_only),
                    **{k: v for k, v in kwargs.items() if k in kw_only})
    return instance


def assert_same_outcome(fast: tuple[str, Any], checked: tuple[str, Any], time: Any) -> None:
    assert fast[0] == checked[0], (fast, checked)
    if fast[0] == "invalid":
        assert fast[1] == checked[1]
        return
    a, b = fast[1], checked[1]
    for field in attrs.fields(type(a)):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if field.name == "time" and time is attrs.NOTHING:  # "now", a moment apart
            assert type(x) is datetime
            assert x.tzinfo is UTC
            assert y.tzinfo is UTC
            continue
        assert type(x) is type(y), field.name
        assert x == y, field.name
        if isinstance(x, datetime):
            assert type(x.tzinfo) is type(y.tzinfo)
            assert x.utcoffset() == y.utcoffset()


def given_arguments(cls: type) -> Any:
    return given(arguments(cls))


def iterators(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two copies of the arguments, each with its own iterator of items where one is asked."""
    items = kwargs.get("items")
    if not isinstance(items, OneShot):
        return kwargs, kwargs
    return {**kwargs, "items": iter(items.items)}, {**kwargs, "items": iter(items.items)}


@FAST
@given_arguments(vt.CartItem)
def test_cart_item_fast_path_accepts_exactly_what_the_full_validation_accepts(
    kwargs: dict[str, Any],
) -> None:
    assert_same_outcome(build(lambda: vt.CartItem(**kwargs)),
                        build(lambda: full(vt.CartItem, kwargs)), None)


@FAST
@given_arguments(vt.Cart)
def test_cart_fast_path_accepts_exactly_what_the_full_validation_accepts(
    kwargs: dict[str, Any],
) -> None:
    mine, theirs = iterators(kwargs)
    assert_same_outcome(build(lambda: vt.Cart(**mine)),
                        build(lambda: full(vt.Cart, theirs)), kwargs["time"])


@FAST
@given_arguments(vt.ProductView)
def test_product_view_fast_path_accepts_exactly_what_the_full_validation_accepts(
    kwargs: dict[str, Any],
) -> None:
    assert_same_outcome(build(lambda: vt.ProductView(**kwargs)),
                        build(lambda: full(vt.ProductView, kwargs)), kwargs["time"])


BASE: dict[type, dict[str, Any]] = {
    vt.CartItem: {"sku": "sku-1", "quantity": 1},
    vt.Cart: {"cart_reference": "cart-1", "contact_id": "0b6f7d49-3c47-4b0a-9a8e-9a1d0f6b2c11",
              "items": [vt.CartItem("a", 1)], "time": attrs.NOTHING, "language": "sv-SE",
              "url": "https://shop.example.com/cart", "checkout": False},
    vt.ProductView: {"item_id": "sku-1", "contact_id": "SW_6C0c8S0qajR0PaxsMEQ",
                     "time": datetime(2026, 11, 27, 10, 0, tzinfo=UTC), "category": "shoes",
                     "session_id": "s-1", "new_session": True, "language": "sv-SE",
                     "url": "https://shop.example.com/p/1", "external_referrer": None,
                     "utm": ()},
}
EDGES: dict[str, list[Any]] = {
    "sku": EDGE_TEXTS, "item_id": EDGE_TEXTS, "cart_reference": EDGE_TEXTS,
    "category": EDGE_TEXTS, "session_id": EDGE_TEXTS,
    "quantity": [-1, 0, MAX_QUANTITY, MAX_QUANTITY + 1, True, 1.0, Quantity.TWO, "1", None],
    "contact_id": ["0B6F7D49-3C47-4B0A-9A8E-9A1D0F6B2C11", "0b6f7d49-3c47-4b0a-9a8e-9a1d0f6b2c1g",
                   "0b6f7d49-3c47-4b0a-9a8e-9a1d0f6b2c11\n", "SW_6C0c8S0qajR0PaxsME",
                   Sku("SW_6C0c8S0qajR0PaxsMEQ"), *EDGE_TEXTS],
    "items": [(), [], [Item("x", 1)], [{"sku": "x", "quantity": 1}], [1], "ab", None, {"a": 1},
              (vt.Utm("a", "b"),)],
    "time": [datetime(2026, 1, 1), datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2))),
             datetime(2026, 1, 1, tzinfo=timezone(timedelta(seconds=30))),
             "2026-11-27T10:00:00Z", "2026-11-27", None, 0],
    "new_session": [None, False, 0, 1, "yes"],
    "language": ["sv" + "-abcdefgh" * 114, "sv-SE\n", "s", "SV-se", "sv_SE", *EDGE_TEXTS],
    "url": EDGE_URLS, "external_referrer": EDGE_URLS,
    "utm": [[], None, "utm", [vt.Utm("utm_source", "mail")], [("utm_source", "mail")]],
    "checkout": [True, None, 0, 1, "yes"],  # True with items is refused, by both paths
}


@pytest.mark.parametrize("cls", [vt.CartItem, vt.Cart, vt.ProductView])
def test_fast_path_agrees_with_the_full_validation_on_each_boundary_value(cls: type) -> None:
    for name, values in EDGES.items():
        if name not in BASE[cls]:
            continue
        for value in values:
            kwargs = {**BASE[cls], name: value}
            assert_same_outcome(build(lambda kw=kwargs: cls(**kw)),
                                build(lambda kw=kwargs: full(cls, kw)),
                                kwargs.get("time"))


def test_fast_constructors_keep_keyword_arguments_and_defaults() -> None:
    view = vt.ProductView(item_id="sku-1", contact_id="0b6f7d49-3c47-4b0a-9a8e-9a1d0f6b2c11",
                          url="https://shop.example.com/p/1")
    cart = vt.Cart(cart_reference="c-1", contact_id=view.contact_id,
                   items=[vt.CartItem(sku="a", quantity=1)])
    assert view.time.tzinfo is UTC
    assert view.utm == ()
    assert view.category is None
    assert cart.items == (vt.CartItem("a", 1),)
    assert cart.url is None
    assert attrs.evolve(view, url=None).url is None
