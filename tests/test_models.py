"""The event models: each validation rule, and fuzzed input (a valid model or InvalidEventError)."""

from __future__ import annotations

import pickle
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import voyado_tracking as vt
from voyado_tracking._models import MAX_QUANTITY, MAX_TEXT, MAX_URL
from voyado_tracking._wire import dumps_one
from voyado_tracking._wire import event_to_wire as to_wire

GUID = "0b6f7d49-3c47-4b0a-9a8e-9a1d0f6b2c11"
SHORT_GUID = "SW_6C0c8S0qajR0PaxsMEQ"
CEST = timezone(timedelta(hours=2))


def cart(**overrides: Any) -> vt.Cart:
    fields: dict[str, Any] = {"cart_reference": "cart-1", "contact_id": GUID}
    fields.update(overrides)
    return vt.Cart(**fields)


def view(**overrides: Any) -> vt.ProductView:
    fields: dict[str, Any] = {"item_id": "sku-1", "contact_id": GUID}
    fields.update(overrides)
    return vt.ProductView(**fields)


# -- time ------------------------------------------------------------------------------------


def test_naive_datetime_is_rejected() -> None:
    with pytest.raises(vt.InvalidEventError, match="timezone-aware") as info:
        cart(time=datetime(2021, 9, 22, 11, 0))
    assert info.value.field == "time"


def test_iso_string_without_offset_is_rejected() -> None:
    with pytest.raises(vt.InvalidEventError, match="no UTC offset") as info:
        view(time="2021-09-22T11:00:00")
    assert info.value.field == "time"


def test_iso_string_with_offset_is_parsed_keeping_its_offset() -> None:
    event = cart(time="2021-09-22T11:00:00+02:00")
    assert event.time == datetime(2021, 9, 22, 11, 0, tzinfo=CEST)
    assert event.time.utcoffset() == timedelta(hours=2)


def test_iso_string_with_z_means_utc() -> None:
    assert cart(time="2021-09-22T09:00:00Z").time.utcoffset() == timedelta(0)


def test_garbage_time_string_is_rejected() -> None:
    with pytest.raises(vt.InvalidEventError, match="ISO 8601") as info:
        cart(time="yesterday at noon")
    assert info.value.field == "time"


def test_time_of_wrong_type_is_rejected() -> None:
    with pytest.raises(vt.InvalidEventError, match="got int") as info:
        cart(time=1632301200)
    assert info.value.field == "time"


def test_times_compare_by_instant_not_wall_clock() -> None:
    """10:00+02:00 (08:00 UTC) is earlier than 09:30Z, whatever the wall clocks say."""
    assert cart(time="2021-09-22T10:00:00+02:00").time < cart(time="2021-09-22T09:30:00Z").time


def test_sub_minute_utc_offset_is_rejected() -> None:
    """The wire format has no seconds in offsets; rounding would move the event in time."""
    odd = timezone(timedelta(hours=1, seconds=30))
    with pytest.raises(vt.InvalidEventError, match="not whole minutes"):
        cart(time=datetime(2021, 1, 1, tzinfo=odd))
    with pytest.raises(vt.InvalidEventError, match="not whole minutes"):
        cart(time="2021-01-01T00:00:00+01:00:30")


def test_datetime_subclass_is_stored_as_a_plain_datetime() -> None:
    """pendulum / pandas.Timestamp are datetimes, but orjson cannot encode subclasses."""

    class Moment(datetime):
        pass

    event = cart(time=Moment(2021, 9, 22, 11, 0, 0, 5, tzinfo=CEST))
    assert type(event.time) is datetime
    assert event.time == datetime(2021, 9, 22, 11, 0, 0, 5, tzinfo=CEST)
    assert event.time.utcoffset() == timedelta(hours=2)
    assert b"2021-09-22T11:00:00.000005+02:00" in dumps_one(event)
    assert to_wire(event)["time"] is event.time


def test_zoned_time_is_kept_as_its_fixed_offset_at_that_instant() -> None:
    """What the wire carries, so a replayed event equals the original (DST folds included)."""
    from zoneinfo import ZoneInfo

    second_0230 = datetime(2021, 10, 31, 2, 30, tzinfo=ZoneInfo("Europe/Stockholm"), fold=1)
    event = cart(time=second_0230)
    assert event.time.tzinfo == timezone(timedelta(hours=1))
    assert event.time.timestamp() == second_0230.timestamp()


def test_default_time_is_now_in_utc() -> None:
    before = datetime.now(timezone.utc)
    event = view()
    assert before <= event.time <= datetime.now(timezone.utc)
    assert event.time.utcoffset() == timedelta(0)


# -- identifiers and text --------------------------------------------------------------------


def test_contact_id_accepts_a_uuid_and_stores_its_canonical_string() -> None:
    contact = uuid.UUID(GUID.upper())
    at = "2024-05-01T10:00:00Z"
    assert cart(contact_id=contact, time=at) == cart(contact_id=str(contact), time=at)
    assert view(contact_id=contact).contact_id == GUID.lower()
    assert to_wire(cart(contact_id=contact))["contactId"] == GUID.lower()


@pytest.mark.parametrize("contact_id", [GUID, GUID.upper(), SHORT_GUID])
def test_contact_id_accepts_guid_and_short_guid(contact_id: str) -> None:
    assert cart(contact_id=contact_id).contact_id == contact_id


@pytest.mark.parametrize(
    "contact_id", ["not-a-guid", GUID[:-1], "{" + GUID + "}", SHORT_GUID + "x", "x" * 21]
)
def test_malformed_contact_id_is_rejected(contact_id: str) -> None:
    with pytest.raises(vt.InvalidEventError, match="GUID") as info:
        view(contact_id=contact_id)
    assert info.value.field == "contact_id"


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_required_text_must_not_be_blank(blank: str) -> None:
    with pytest.raises(vt.InvalidEventError, match="must not be empty") as info:
        cart(cart_reference=blank)
    assert info.value.field == "cart_reference"


def test_text_field_rejects_non_string() -> None:
    with pytest.raises(vt.InvalidEventError, match="must be a string, got int") as info:
        view(item_id=42)
    assert info.value.field == "item_id"


def test_text_longer_than_limit_is_rejected() -> None:
    with pytest.raises(vt.InvalidEventError, match="too long") as info:
        view(category="c" * (MAX_TEXT + 1))
    assert info.value.field == "category"
    assert view(category="c" * MAX_TEXT).category == "c" * MAX_TEXT


def test_lone_surrogate_is_rejected() -> None:
    """It cannot be encoded as UTF-8, so it could never be sent."""
    with pytest.raises(vt.InvalidEventError, match="surrogate") as info:
        cart(cart_reference="cart-\ud800")
    assert info.value.field == "cart_reference"


def test_non_ascii_text_is_accepted() -> None:
    assert view(category="Skor & kängor 👟").category == "Skor & kängor 👟"


def test_long_values_are_truncated_in_messages() -> None:
    with pytest.raises(vt.InvalidEventError) as info:
        view(contact_id="x" * 5000)
    assert len(str(info.value)) < 200


def test_error_names_the_field_and_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"^language: "):
        view(language="not a culture")


def test_invalid_event_error_survives_pickling() -> None:
    error = vt.InvalidEventError("time", "is bad")
    again = pickle.loads(pickle.dumps(error))
    assert (again.field, again.problem, str(again)) == ("time", "is bad", "time: is bad")


@pytest.mark.parametrize("language", ["sv-SE", "en", "fi-FI", "zh-Hant-TW"])
def test_language_accepts_culture_codes(language: str) -> None:
    assert cart(language=language).language == language


@pytest.mark.parametrize("language", ["s", "svenska!", "sv_SE", "sv-"])
def test_language_rejects_non_culture_codes(language: str) -> None:
    with pytest.raises(vt.InvalidEventError, match="culture code") as info:
        cart(language=language)
    assert info.value.field == "language"


@pytest.mark.parametrize(
    "url",
    ["example.com/p", "ftp://example.com/p", "https://", "https://ex ample.com", "mailto:a@b"],
)
def test_url_must_be_absolute_http(url: str) -> None:
    with pytest.raises(vt.InvalidEventError, match="absolute http") as info:
        view(url=url)
    assert info.value.field == "url"


def test_external_referrer_is_checked_like_url() -> None:
    with pytest.raises(vt.InvalidEventError) as info:
        view(external_referrer="javascript:alert(1)")
    assert info.value.field == "external_referrer"


def test_url_may_be_longer_than_text_limit_up_to_its_own() -> None:
    long_url = "https://shop.example/" + "p" * (MAX_URL - 30)
    assert view(url=long_url).url == long_url
    with pytest.raises(vt.InvalidEventError, match="too long"):
        view(url=long_url + "p" * 100)


# -- cart items and utm ----------------------------------------------------------------------


def test_quantity_rejects_bool() -> None:
    with pytest.raises(vt.InvalidEventError, match="must be an int, got bool") as info:
        vt.CartItem("sku", True)
    assert info.value.field == "quantity"


def test_quantity_rejects_float() -> None:
    with pytest.raises(vt.InvalidEventError, match="got float"):
        vt.CartItem("sku", 1.0)  # type: ignore[arg-type]


def test_quantity_must_fit_a_32_bit_int_and_not_be_negative() -> None:
    assert vt.CartItem("sku", 0).quantity == 0
    assert vt.CartItem("sku", MAX_QUANTITY).quantity == MAX_QUANTITY
    for bad in (-1, MAX_QUANTITY + 1):
        with pytest.raises(vt.InvalidEventError, match="between 0 and"):
            vt.CartItem("sku", bad)


def test_quantity_too_large_to_print_is_still_an_invalid_event_error() -> None:
    """str() of a >4300-digit int raises ValueError; the message must not try to show it."""
    with pytest.raises(vt.InvalidEventError, match="quantity") as info:
        vt.CartItem("sku", 10**5000)
    assert len(str(info.value)) < 200


def test_items_become_a_tuple() -> None:
    items = [vt.CartItem("a", 1), vt.CartItem("b", 2)]
    assert cart(items=items).items == tuple(items)
    assert cart(items=iter(items)).items == tuple(items)


@pytest.mark.parametrize("items", ["ab", b"ab", {"sku": "a"}, 5, None])
def test_items_must_be_an_iterable_of_cart_items(items: object) -> None:
    with pytest.raises(vt.InvalidEventError) as info:
        cart(items=items)
    assert info.value.field == "items"


def test_item_of_wrong_type_is_named_by_index() -> None:
    with pytest.raises(vt.InvalidEventError, match="must be a CartItem, got dict") as info:
        cart(items=[vt.CartItem("a", 1), {"sku": "b", "quantity": 1}])
    assert info.value.field == "items[1]"


def test_utm_value_may_be_empty_but_key_may_not() -> None:
    assert vt.Utm("utm_term", "").value == ""
    with pytest.raises(vt.InvalidEventError) as info:
        vt.Utm("", "x")
    assert info.value.field == "key"


def test_utm_element_of_wrong_type_is_rejected() -> None:
    with pytest.raises(vt.InvalidEventError) as info:
        view(utm=[("utm_source", "mail")])
    assert info.value.field == "utm[0]"


def test_new_session_rejects_non_bool() -> None:
    with pytest.raises(vt.InvalidEventError, match="must be a bool, got int") as info:
        view(new_session=1)
    assert info.value.field == "new_session"


def test_models_are_frozen_and_hashable() -> None:
    event = view(utm=[vt.Utm("utm_source", "mail")])
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.item_id = "other"  # type: ignore[misc]
    assert hash(event) == hash(view(time=event.time, utm=[vt.Utm("utm_source", "mail")]))


# -- fuzzing ---------------------------------------------------------------------------------

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**40), max_value=2**40).map(lambda n: n * 10**4000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1),
    st.text(min_size=1, max_size=3).map(lambda t: t * 4000),
    st.datetimes(),
    st.datetimes(timezones=st.timezones()),
    st.datetimes().map(lambda d: d.isoformat()),
    st.from_regex(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d{1,9})?)?([+-]\d\d(:?\d\d)?|Z)?"),
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u)[:-1] + "g"),
    st.lists(st.builds(vt.CartItem, st.just("sku"), st.integers(0, 5)), max_size=3),
    st.lists(st.integers(), max_size=3),
)
def _outcome(build: Any) -> vt.InvalidEventError | None:
    """None if *build* made a model; its InvalidEventError if not (anything else propagates)."""
    try:
        build()
    except vt.InvalidEventError as error:
        return error
    return None


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "cart_reference": anything,
            "contact_id": st.one_of(anything, st.just(GUID)),
            "items": anything,
            "time": anything,
            "language": anything,
            "url": anything,
        },
    )
)
def test_cart_from_arbitrary_values_is_valid_or_invalid_event_error(kwargs: dict[str, Any]) -> None:
    kwargs.setdefault("cart_reference", "c")
    kwargs.setdefault("contact_id", GUID)
    error = _outcome(lambda: vt.Cart(**kwargs))
    assert error is None or (error.field and len(str(error)) < 400)


@FUZZ
@given(
    st.fixed_dictionaries(
        {},
        optional=dict.fromkeys(
            (
                "item_id",
                "contact_id",
                "time",
                "category",
                "session_id",
                "new_session",
                "language",
                "url",
                "external_referrer",
                "utm",
            ),
            anything,
        ),
    )
)
def test_product_view_from_arbitrary_values_is_valid_or_invalid_event_error(
    kwargs: dict[str, Any],
) -> None:
    kwargs.setdefault("item_id", "i")
    kwargs.setdefault("contact_id", GUID)
    error = _outcome(lambda: vt.ProductView(**kwargs))
    assert error is None or (error.field and len(str(error)) < 400)


@FUZZ
@given(sku=anything, quantity=anything, key=anything, value=anything)
def test_item_and_utm_from_arbitrary_values_are_valid_or_invalid_event_error(
    sku: object, quantity: object, key: object, value: object
) -> None:
    item_error = _outcome(lambda: vt.CartItem(sku, quantity))  # type: ignore[arg-type]
    utm_error = _outcome(lambda: vt.Utm(key, value))  # type: ignore[arg-type]
    assert item_error is None or item_error.field in {"sku", "quantity"}
    assert utm_error is None or utm_error.field in {"key", "value"}


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(alphabet="hHtTpPsS:/.-[]@?#%09azAZ \x00\x7f\u00e9", max_size=30),
        st.text(max_size=30).map(lambda tail: "https://" + tail),
        st.text(max_size=30).map(lambda tail: "HTTP://" + tail),
    )
)
def test_url_fast_path_accepts_nothing_urlsplit_would_reject(text: str) -> None:
    """The one-regex shortcut for common URLs never widens what counts as a valid URL."""
    from urllib.parse import urlsplit

    from voyado_tracking._models import _PLAIN_URL

    if _PLAIN_URL.fullmatch(text):
        parts = urlsplit(text)
        assert parts.scheme.lower() in ("http", "https")
        assert parts.netloc
        assert not any(ch <= " " or ch == "\x7f" for ch in text)
