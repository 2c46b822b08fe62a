"""The camelCase wire format and the JSON Lines event files."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import voyado_tracking as vt
from voyado_tracking._eventfile import event_to_line, line_to_event
from voyado_tracking._wire import (
    CONVERTER_TO_WIRE,
    dumps,
    encode_batch,
    encode_parts,
    event_from_wire,
    event_to_wire,
    split_bodies,
    structure,
)

GUID = "0b6f7d49-3c47-4b0a-9a8e-9a1d0f6b2c11"
CEST = timezone(timedelta(hours=2))


def test_cart_wire_dict_is_camel_case_with_its_own_offset() -> None:
    event = vt.Cart(
        "cart-1",
        GUID,
        items=[vt.CartItem("sku-1", 2)],
        time=datetime(2021, 9, 22, 11, 0, tzinfo=CEST),
        language="sv-SE",
        url="https://shop.example/cart",
    )
    assert orjson.loads(dumps([event])) == [
        {
            "cartReference": "cart-1",
            "contactId": GUID,
            "items": [{"sku": "sku-1", "quantity": 2}],
            "time": "2021-09-22T11:00:00+02:00",
            "language": "sv-SE",
            "url": "https://shop.example/cart",
        }
    ]


def test_emptied_cart_keeps_empty_items_list() -> None:
    """An emptied or checked-out cart must say so, or Engage mails about a bought cart."""
    wire = orjson.loads(dumps([vt.Cart("cart-1", GUID, time="2021-09-22T11:00:00Z")]))[0]
    assert wire["items"] == []


def test_absent_optional_fields_are_omitted_never_null() -> None:
    view = vt.ProductView("sku-1", GUID, time="2021-09-22T11:00:00Z")
    assert orjson.loads(dumps([view])) == [
        {"itemId": "sku-1", "contactId": GUID, "time": "2021-09-22T11:00:00+00:00"}
    ]


def test_new_session_false_is_sent() -> None:
    view = vt.ProductView("sku-1", GUID, new_session=False)
    assert event_to_wire(view)["newSession"] is False


def test_utm_is_a_list_of_key_value_objects() -> None:
    view = vt.ProductView("sku-1", GUID, utm=[vt.Utm("utm_source", "mail")])
    assert orjson.loads(dumps([view]))[0]["utm"] == [{"key": "utm_source", "value": "mail"}]


def test_null_on_the_wire_means_absent() -> None:
    view = structure(vt.ProductView, {"itemId": "i", "contactId": GUID, "category": None})
    assert view.category is None


def test_unknown_wire_field_is_rejected_by_name() -> None:
    with pytest.raises(vt.InvalidEventError, match="not a ProductView field") as info:
        structure(vt.ProductView, {"itemId": "i", "contactId": GUID, "item_id": "x"})
    assert info.value.field == "item_id"


def test_cart_time_is_required_on_the_wire() -> None:
    """Replaying a cart without its time would silently reorder it after newer updates."""
    with pytest.raises(vt.InvalidEventError, match="is required") as info:
        structure(vt.Cart, {"cartReference": "c", "contactId": GUID})
    assert info.value.field == "time"


def test_wire_values_are_not_coerced() -> None:
    data = {"cartReference": "c", "contactId": GUID, "time": "2021-09-22T11:00:00Z",
            "items": [{"sku": "s", "quantity": "3"}]}
    with pytest.raises(vt.InvalidEventError, match="must be an int") as info:
        structure(vt.Cart, data)
    assert info.value.field == "items[0].quantity"


def test_wire_errors_name_the_camel_case_field() -> None:
    with pytest.raises(vt.InvalidEventError) as info:
        structure(vt.ProductView, {"itemId": "i", "contactId": GUID, "newSession": "yes"})
    assert info.value.field == "newSession"


def test_nested_list_must_be_a_json_array() -> None:
    with pytest.raises(vt.InvalidEventError, match="JSON array") as info:
        structure(vt.ProductView, {"itemId": "i", "contactId": GUID, "utm": {"key": "k"}})
    assert info.value.field == "utm"


def test_event_from_wire_rejects_unknown_type() -> None:
    with pytest.raises(vt.InvalidEventError) as info:
        event_from_wire("order", {})
    assert info.value.field == "type"


def test_line_with_unhashable_type_is_an_invalid_event_error() -> None:
    with pytest.raises(vt.InvalidEventError) as info:
        line_to_event('{"type": [], "event": {}}')
    assert info.value.field == "type"


@pytest.mark.parametrize("line", ["not json", "[1, 2]", '{"type": "cart"}', b"\xff\xfe", "\ud800"])
def test_malformed_line_is_an_invalid_event_error(line: str | bytes) -> None:
    with pytest.raises(vt.InvalidEventError):
        line_to_event(line)


def test_line_extra_keys_are_ignored() -> None:
    event = vt.ProductView("i", GUID)
    line = event_to_line(event, reason="shutdown")
    assert line.endswith(b"\n")
    assert orjson.loads(line)["reason"] == "shutdown"
    assert line_to_event(line) == event


# -- round trip ------------------------------------------------------------------------------

text = st.text(min_size=1, max_size=40).filter(str.strip)
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
aware = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=offsets
)
contact_ids = st.one_of(st.uuids().map(str), st.from_regex(r"\A[A-Za-z0-9_-]{22}\Z"))
languages = st.from_regex(r"\A[a-z]{2}(-[A-Z]{2})?\Z")
urls = st.from_regex(r"\Ahttps?://[a-z]{1,10}\.example/[a-z0-9/]{0,20}\Z")
carts = st.builds(
    vt.Cart,
    cart_reference=text,
    contact_id=contact_ids,
    items=st.lists(st.builds(vt.CartItem, text, st.integers(0, 2**31 - 1)), max_size=4),
    time=aware,
    language=st.none() | languages,
    url=st.none() | urls,
)
views = st.builds(
    vt.ProductView,
    item_id=text,
    contact_id=contact_ids,
    time=aware,
    category=st.none() | text,
    session_id=st.none() | text,
    new_session=st.none() | st.booleans(),
    language=st.none() | languages,
    url=st.none() | urls,
    external_referrer=st.none() | urls,
    utm=st.lists(st.builds(vt.Utm, text, st.text(max_size=20)), max_size=3),
)
events = st.one_of(carts, views)


def _same(a: Any, b: Any) -> bool:
    """Equal, and the time keeps its own offset (== on datetimes compares instants only)."""
    return bool(a == b and a.time.utcoffset() == b.time.utcoffset())


@settings(max_examples=200, deadline=None)
@given(events)
def test_valid_events_round_trip_through_wire_dicts(event: vt.Cart | vt.ProductView) -> None:
    wire = orjson.loads(orjson.dumps(event_to_wire(event)))
    assert _same(structure(type(event), wire), event)


@settings(max_examples=200, deadline=None)
@given(events)
def test_valid_events_round_trip_through_json_lines(event: vt.Cart | vt.ProductView) -> None:
    assert _same(line_to_event(event_to_line(event)), event)


@settings(max_examples=50, deadline=None)
@given(st.lists(events, max_size=5))
def test_batch_body_is_the_list_of_wire_dicts(batch: list[vt.Cart | vt.ProductView]) -> None:
    expected = [orjson.loads(orjson.dumps(event_to_wire(e))) for e in batch]
    assert orjson.loads(dumps(batch)) == expected


@settings(max_examples=300, deadline=None)
@given(events)
def test_written_out_wire_functions_equal_the_converters(
    event: vt.Cart | vt.ProductView,
) -> None:
    mine, reference = event_to_wire(event), CONVERTER_TO_WIRE[type(event)](event)
    assert mine == reference
    assert list(mine) == list(reference)  # the same keys in the same order: the same bytes
    assert orjson.dumps(mine) == orjson.dumps(reference)


@settings(max_examples=50, deadline=None)
@given(st.lists(events, min_size=1, max_size=6), st.integers(1024, 4096))
def test_batch_body_in_one_call_is_the_joined_parts(
    batch: list[vt.Cart | vt.ProductView], max_bytes: int
) -> None:
    assert encode_batch(batch) == b"[" + b",".join(encode_parts(batch)) + b"]"
    bodies = split_bodies(batch, max_bytes)
    assert [e for events, _ in bodies for e in events] == batch
    for events, body in bodies:
        assert body == b"[" + b",".join(encode_parts(events)) + b"]"
        assert len(body) <= max_bytes or len(events) == 1


def _whole_minute_offset(moment: datetime) -> bool:
    offset = moment.utcoffset()
    return offset is not None and not offset % timedelta(minutes=1)


@settings(max_examples=200, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(1950, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.timezones()
    ).filter(_whole_minute_offset)
)
def test_times_in_named_zones_round_trip_equal(moment: datetime) -> None:
    """DST folds and gaps included: == on the round-tripped event still holds."""
    event = vt.Cart("c", GUID, time=moment)
    again = line_to_event(event_to_line(event))
    assert _same(again, event)
    assert hash(again) == hash(event)


def test_zoneinfo_time_serialises_with_its_offset_at_that_instant() -> None:
    from zoneinfo import ZoneInfo

    summer = datetime(2021, 7, 1, 12, 0, tzinfo=ZoneInfo("Europe/Stockholm"))
    event = vt.Cart("c", GUID, time=summer)
    assert orjson.loads(dumps([event]))[0]["time"] == "2021-07-01T12:00:00+02:00"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
CART_KEYS = ["cartReference", "contactId", "items", "time", "language", "url"]
VIEW_KEYS = ["itemId", "contactId", "time", "category", "sessionId", "newSession", "language",
             "url", "externalReferrer", "utm"]


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["cart", "product_view", "order", 3, None]),
    st.one_of(
        st.dictionaries(st.sampled_from(CART_KEYS + VIEW_KEYS + ["sku", "x"]), json_values),
        json_values,
    ),
)
def test_any_json_line_is_an_event_or_invalid_event_error(kind: object, event: object) -> None:
    """Replayed spools and `send` input are untrusted: nothing but InvalidEventError escapes."""
    line = orjson.dumps({"type": kind, "event": event})
    parsed = _parse_or_none(line)
    if parsed is not None:
        assert _same(line_to_event(event_to_line(parsed)), parsed)


def _parse_or_none(line: bytes) -> vt.Cart | vt.ProductView | None:
    try:
        return line_to_event(line)
    except vt.InvalidEventError:
        return None


def test_an_empty_or_unprintable_key_is_named_readably() -> None:
    from voyado_tracking._errors import InvalidEventError
    from voyado_tracking._wire import structure

    with pytest.raises(InvalidEventError) as caught:
        structure(vt.ProductView, {"": 1})
    assert caught.value.field == "''"
    with pytest.raises(InvalidEventError) as caught:
        structure(vt.ProductView, {"a\nb": 1})
    assert caught.value.field == "'a\\nb'"
