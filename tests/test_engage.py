"""FakeVoyado's Engage emulation: which mails Engage would send for what it received, and why a
cart does or does not mail. Events reach the fake over loopback through a real client."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from conftest import CONTACT, fake_server_process

import voyado_tracking as vt
from voyado_tracking.testing import EngageMail, FakeVoyado
from voyado_tracking.testing._fake import STATE_PATH
from voyado_tracking.testing._visits import short_guid

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=timezone.utc)
OTHER = "9b2e4c1a-0d4f-4e8a-9c7b-2a1f3e5d6c7b"
HOUR = timedelta(hours=1)


def basket(ref: str, *skus: str, at: datetime = T0, who: str = CONTACT,
           language: str | None = "sv-SE") -> vt.Cart:
    return vt.Cart(ref, who, [vt.CartItem(s, 1) for s in skus], time=at, language=language)


def look(item: str, at: datetime, *, session: str | None = "s1", who: str = CONTACT,
         new_session: bool | None = None, language: str | None = "sv-SE") -> vt.ProductView:
    return vt.ProductView(item, who, time=at, session_id=session, new_session=new_session,
                          language=language)


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


@pytest.fixture
async def shop(fake: FakeVoyado) -> AsyncIterator[vt.TrackingClient]:
    async with vt.TrackingClient(fake.url, fake.api_key, max_requests_per_second=None) as c:
        yield c


async def send(client: vt.TrackingClient, *events: vt.Cart | vt.ProductView) -> None:
    carts = [e for e in events if isinstance(e, vt.Cart)]
    views = [e for e in events if isinstance(e, vt.ProductView)]
    if carts:
        await client.register_carts(carts)
    if views:
        await client.register_product_views(views)


def carts_of(fake: FakeVoyado, now: datetime) -> list[tuple[str | None, tuple[str, ...]]]:
    return [(m.cart_reference, m.skus) for m in fake.engage.mails(now) if m.kind ==
            "abandoned_cart"]


def browse_of(fake: FakeVoyado, now: datetime) -> list[tuple[str | None, tuple[str, ...]]]:
    return [(m.session_id, m.skus) for m in fake.engage.mails(now) if m.kind ==
            "abandoned_browse"]


# -- abandoned carts -----------------------------------------------------------------------


async def test_a_cart_with_items_mails_once_for_its_latest_update(
    fake: FakeVoyado, shop: vt.TrackingClient
) -> None:
    await send(shop, basket("c1", "SKU-1", at=T0), basket("c1", "SKU-2", at=T0 + minutes(5)),
               basket("c1", "SKU-9", at=T0 + minutes(2)))
    (mail,) = fake.engage.mails(now=T0 + 2 * HOUR)
    assert mail == EngageMail("abandoned_cart", CONTACT, "c1", None, ("SKU-2",),
                              T0 + minutes(35))


async def test_a_cart_mails_once_it_has_been_idle_abandon_after_not_before(
    fake: FakeVoyado, shop: vt.TrackingClient
) -> None:
    await send(shop, basket("c1", "SKU-1"))
    assert fake.engage.mails(now=T0 + minutes(30) - timedelta(microseconds=1)) == []
    assert [m.due for m in fake.engage.mails(now=T0 + minutes(30))] == [T0 + minutes(30)]


async def test_abandon_after_sets_the_idle_time() -> None:
    async with FakeVoyado(abandon_after=60.0) as fake, vt.TrackingClient(
        fake.url, fake.api_key
    ) as client:
        await send(client, basket("c1", "SKU-1"))
        assert carts_of(fake, T0 + minutes(1)) == [("c1", ("SKU-1",))]


async def test_an_emptied_cart_never_mails(fake: FakeVoyado, shop: vt.TrackingClient) -> None:
    await send(shop, basket("c1", "SKU-1"), basket("c1", at=T0 + minutes(1)))
    assert fake.engage.mails(now=T0 + 2 * HOUR) == []


async def test_a_checked_out_cart_never_mails(fake: FakeVoyado, shop: vt.TrackingClient) -> None:
    await send(shop, basket("c1", "SKU-1"), vt.Cart.checked_out("c1", CONTACT, time=T0))
    assert fake.engage.mails(now=T0 + 2 * HOUR) == []


async def test_any_contact_counts_until_contacts_are_registered(
    fake: FakeVoyado, shop: vt.TrackingClient
) -> None:
    await send(shop, basket("c1", "SKU-1", who=OTHER))
    assert carts_of(fake, T0 + HOUR) == [("c1", ("SKU-1",))]
    fake.add_contact(CONTACT)
    assert carts_of(fake, T0 + HOUR) == []


async def test_a_registered_contact_counts_by_its_id_or_its_short_guid(
    fake: FakeVoyado, shop: vt.TrackingClient
) -> None:
    fake.add_contact(CONTACT.upper())
    await send(shop, basket("long", "SKU-1"), basket("short", "SKU-1", who=short_guid(CONTACT)))
    assert sorted(ref for ref, _ in carts_of(fake, T0 + HOUR)) == ["long", "short"]


async def test_a_cart_mails_only_with_a_feed_for_its_language_holding_one_of_its_skus(
    shop: vt.TrackingClient,
) -> None:
    feeds = {"sv-SE": {"SKU-1", "SKU-2"}, "fi-FI": {"SKU-7"}}
    async with FakeVoyado(product_feeds=feeds) as fake, vt.TrackingClient(
        fake.url, fake.api_key
    ) as client:
        await send(client, basket("in", "SKU-1", "SKU-5", "SKU-2"),
                   basket("out", "SKU-5", language="fi-FI"),
                   basket("nofeed", "SKU-1", language="de-DE"),
                   basket("lower", "SKU-7", language="fi-fi"))
        assert sorted(carts_of(fake, T0 + HOUR)) == [("in", ("SKU-1", "SKU-2")),
                                                      ("lower", ("SKU-7",))]


async def test_mails_are_due_by_the_fakes_clock_when_no_now_is_given() -> None:
    now = [T0]
    async with FakeVoyado(clock=lambda: now[0]) as fake, vt.TrackingClient(
        fake.url, fake.api_key
    ) as client:
        await send(client, basket("c1", "SKU-1"))
        assert fake.engage.mails() == []
        now[0] = T0 + HOUR
        assert [m.cart_reference for m in fake.engage.mails()] == ["c1"]


def test_now_must_be_an_aware_datetime() -> None:
    with pytest.raises(ValueError, match="now must be an aware datetime"):
        FakeVoyado().engage.mails(now=datetime(2026, 11, 27, 10, 0))


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), True, "1800"])
def test_abandon_after_must_be_a_finite_number_of_seconds(value: Any) -> None:
    with pytest.raises(ValueError, match="abandon_after"):
        FakeVoyado(abandon_after=value)


def test_product_feeds_must_map_locales_to_skus() -> None:
    with pytest.raises(TypeError, match="product_feeds"):
        FakeVoyado(product_feeds={"sv-SE": "SKU-1"})


# -- explain ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "reason"),
    [
        ([], "never received"),
        ([basket("c1", "SKU-1"), basket("c1", at=T0 + minutes(1))], "emptied"),
        ([basket("c1", "SKU-1", who=OTHER)], "unknown contact"),
        ([basket("c1", "SKU-1", language=None)], "no language"),
        ([basket("c1", "SKU-1", language="de-DE")], "language de-DE has no product feed"),
        ([basket("c1", "SKU-9")], "no SKU in the sv-SE feed"),
        ([basket("c1", "SKU-1", at=T0 - minutes(29) - timedelta(seconds=59))],
         "idle only 29 minutes"),
        ([basket("c1", "SKU-1", at=T0 - HOUR)], "mails at 2026-11-27T09:30:00+00:00"),
    ],
)
async def test_explain_names_the_reason(events: list[vt.Cart], reason: str) -> None:
    async with FakeVoyado(product_feeds={"sv-SE": {"SKU-1"}}) as fake, vt.TrackingClient(
        fake.url, fake.api_key
    ) as client:
        fake.add_contact(CONTACT)
        await send(client, *events)
        assert fake.engage.explain("c1", now=T0) == reason


async def test_explain_gives_the_first_reason_that_applies() -> None:
    """An emptied cart of an unknown contact without language: "emptied" comes first."""
    async with FakeVoyado(product_feeds={"sv-SE": {"SKU-1"}}) as fake, vt.TrackingClient(
        fake.url, fake.api_key
    ) as client:
        fake.add_contact(CONTACT)
        await send(client, basket("a", who=OTHER, language=None),
                   basket("b", "SKU-9", who=OTHER, language="de-DE"),
                   basket("c", "SKU-9", language="de-DE"))
        reasons = [fake.engage.explain(ref, now=T0) for ref in "abc"]
    assert reasons == ["emptied", "unknown contact", "language de-DE has no product feed"]


async def test_explain_shows_the_due_time_in_the_carts_own_offset(
    fake: FakeVoyado, shop: vt.TrackingClient
) -> None:
    await send(shop, basket("c1", "SKU-1", at=datetime(2026, 11, 27, 11, 0,
                                                      tzinfo=timezone(timedelta(hours=1)))))
    assert fake.engage.explain("c1", now=T0 + HOUR) == "mails at 2026-11-27T11:30:00+01:00"


# -- abandoned browse ------------------------------------------------------------------------


async def test_a_browse_session_mails_once_with_its_items_latest_first(
    fake: FakeVoyado, shop: vt.TrackingClient
) -> None:
    await send(shop, look("A", T0), look("B", T0 + minutes(1)), look("A", T0 + minutes(2)),
               look("C", T0 + minutes(3)))
    (mail,) = fake.engage.mails(now=T0 + HOUR)
    assert mail == EngageMail("abandoned_browse", CONTACT, None, "s1", ("C", "A", "B"),
                              T0 + minutes(33))
    assert fake.engage.mails(now=T0 + minutes(33) - timedelta(microseconds=1)) == []


async def test_a_new_session_id_starts_a_new_session(
    fake: FakeVoyado, shop: vt.TrackingClient
) -> None:
    await send(shop, look("A", T0), look("B", T0 + minutes(1), session="s2"))
    assert browse_of(fake, T0 + HOUR) == [("s1", ("A",)), ("s2", ("B",))]


async def test_new_session_true_starts_a_new_session(
    fake: FakeVoyado, shop: vt.TrackingClient
) -> None:
    await send(shop, look("A", T0), look("B", T0 + minutes(1), new_session=True))
    assert browse_of(fake, T0 + HOUR) == [("s1", ("A",)), ("s1", ("B",))]


async def test_a_gap_over_30_minutes_starts_a_new_session(
    fake: FakeVoyado, shop: vt.TrackingClient
) -> None:
    await send(shop, look("A", T0), look("B", T0 + minutes(30)),
               look("C", T0 + minutes(60) + timedelta(seconds=1)))
    assert browse_of(fake, T0 + 3 * HOUR) == [("s1", ("B", "A")), ("s1", ("C",))]


async def test_views_are_sessions_in_time_order_not_arrival_order(
    fake: FakeVoyado, shop: vt.TrackingClient
) -> None:
    await send(shop, look("B", T0 + minutes(20)), look("A", T0))
    assert browse_of(fake, T0 + HOUR) == [("s1", ("B", "A"))]


@pytest.mark.parametrize(
    ("offset", "mails"),
    [(minutes(-1), True), (minutes(0), False), (minutes(31), False), (minutes(36), True)],
    ids=["before-the-session", "at-the-first-view", "before-due", "after-due"],
)
async def test_a_cart_update_between_the_first_view_and_due_cancels_the_browse_mail(
    fake: FakeVoyado, shop: vt.TrackingClient, offset: timedelta, mails: bool
) -> None:
    """The session runs from T0 to T0+5 min, so its mail is due at T0+35 min."""
    await send(shop, look("A", T0), look("B", T0 + minutes(5)), basket("c", at=T0 + offset))
    assert bool(browse_of(fake, T0 + 2 * HOUR)) is mails


async def test_another_contacts_cart_does_not_cancel_a_browse_mail(
    fake: FakeVoyado, shop: vt.TrackingClient
) -> None:
    await send(shop, look("A", T0), basket("c", "SKU-1", at=T0 + minutes(1), who=OTHER))
    assert browse_of(fake, T0 + HOUR) == [("s1", ("A",))]


async def test_a_browse_mail_shows_at_most_25_distinct_items(
    fake: FakeVoyado, shop: vt.TrackingClient
) -> None:
    await send(shop, *(look(f"SKU-{n:02d}", T0 + timedelta(seconds=n)) for n in range(40)))
    ((_, skus),) = browse_of(fake, T0 + HOUR)
    assert skus == tuple(f"SKU-{n:02d}" for n in range(39, 14, -1))


async def test_a_browse_mail_shows_only_items_in_the_feed_and_needs_one(
    shop: vt.TrackingClient,
) -> None:
    async with FakeVoyado(product_feeds={"sv-SE": {"A"}}) as fake, vt.TrackingClient(
        fake.url, fake.api_key
    ) as client:
        await send(client, look("A", T0), look("X", T0 + minutes(1)),
                   look("A", T0, session="s2", language="de-DE"),
                   look("Y", T0, session="s3"), look("A", T0, session="s4", language=None))
        assert browse_of(fake, T0 + HOUR) == [("s1", ("A",))]


async def test_an_unknown_contact_gets_no_browse_mail(
    fake: FakeVoyado, shop: vt.TrackingClient
) -> None:
    fake.add_contact(CONTACT)
    await send(shop, look("A", T0, who=OTHER), look("B", T0, session="s9"))
    assert browse_of(fake, T0 + HOUR) == [("s9", ("B",))]


# -- where the mails show --------------------------------------------------------------------


async def test_the_state_endpoint_carries_the_mails_due_now() -> None:
    async with FakeVoyado(clock=lambda: T0 + HOUR) as fake, vt.TrackingClient(
        fake.url, fake.api_key
    ) as client:
        await send(client, basket("c1", "SKU-1"), basket("c2", "SKU-2", at=T0 + minutes(45)))
        async with aiohttp.ClientSession() as http, http.get(fake.url + STATE_PATH) as answer:
            state = await answer.json()
    assert state["engageMails"] == [{
        "kind": "abandoned_cart", "contactId": CONTACT, "cartReference": "c1",
        "sessionId": None, "skus": ["SKU-1"], "due": "2026-11-27T10:30:00+00:00",
    }]


async def test_fake_server_dump_holds_the_mails_due_when_it_stopped(tmp_path: Path) -> None:
    dump = tmp_path / "state.json"
    async with fake_server_process("--abandon-after", "0", "--dump", str(dump)) as server:
        async with vt.TrackingClient(server.base_url, server.api_key) as client:
            await send(client, basket("c1", "SKU-1"), look("A", T0, who=OTHER))
        await server.stop()
    mails = orjson.loads(dump.read_bytes())["engageMails"]
    assert [(m["kind"], m["due"]) for m in mails] == [
        ("abandoned_browse", "2026-11-27T10:00:00+00:00"),
        ("abandoned_cart", "2026-11-27T10:00:00+00:00"),
    ]


async def test_the_plugins_fake_has_engage(voyado_fake: FakeVoyado) -> None:
    assert voyado_fake.engage.mails(now=T0) == []


class TestVoyadoFakeOptions:
    @pytest.fixture
    def voyado_fake_options(self) -> dict[str, Any]:
        return {"abandon_after": 60.0, "product_feeds": {"sv-SE": {"SKU-1"}}}

    async def test_overriding_voyado_fake_options_configures_the_plugins_fake(
        self, voyado_fake: FakeVoyado
    ) -> None:
        assert voyado_fake.engage.abandon_after == timedelta(minutes=1)
        assert voyado_fake.engage.product_feeds == {"sv-se": frozenset({"SKU-1"})}


def test_the_readme_mails_example_passes_under_pytest(tmp_path: Path) -> None:
    """The README's "one abandoned-cart mail, none after checkout" test runs as a user's."""
    from test_plugin import README, run_pytest

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    (example,) = [b for b in blocks if "engage.mails" in b and "def test_" in b]
    result = run_pytest(tmp_path, example, "-o", "asyncio_mode=strict")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
