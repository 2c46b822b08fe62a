"""``Cart.checked_out``: an emptied cart stamped ``skew`` seconds ahead, so that plain
latest-by-time keeps a bought cart bought. The flag is a local note: never on the wire, an
optional top-level key in event files, kept by the journal."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import CONTACT, fast_settings
from test_cli import connection, run_cli, write_events

import voyado_tracking as vt
from voyado_tracking._eventfile import event_to_line, line_to_event
from voyado_tracking._journal._body import decode_cart
from voyado_tracking._models import supersedes
from voyado_tracking._wire import CONVERTER_TO_WIRE, event_to_wire, structure
from voyado_tracking.testing import Chaos, FakeVoyado

sys.path.insert(0, str(Path(__file__).parent))
from checkout_child import BASE, late

CHILD = Path(__file__).with_name("checkout_child.py")
T0 = datetime(2024, 5, 1, 10, 0, tzinfo=timezone(timedelta(hours=2)))


def filled(ref: str = "c1", at: datetime = T0 - timedelta(minutes=1)) -> vt.Cart:
    return vt.Cart(ref, CONTACT, [vt.CartItem("SKU-1", 1)], time=at)


def stamped(seconds: float, ref: str = "c1") -> vt.Cart:
    """An update with items stamped *seconds* after the checkout's base time T0."""
    return vt.Cart(ref, CONTACT, [vt.CartItem("SKU-2", 1)], time=T0 + timedelta(seconds=seconds))


# -- the model -------------------------------------------------------------------------------


def test_a_checked_out_cart_is_empty_flagged_and_stamped_skew_ahead() -> None:
    cart = vt.Cart.checked_out("c1", CONTACT, time=T0)
    assert (cart.items, cart.checkout, cart.time) == ((), True, T0 + timedelta(seconds=5))
    assert cart.time.utcoffset() == timedelta(hours=2)  # in the offset it was given


def test_checked_out_takes_an_iso_time_and_any_skew() -> None:
    cart = vt.Cart.checked_out("c1", CONTACT, time="2024-05-01T10:00:00Z", skew=0.25)
    assert cart.time == datetime(2024, 5, 1, 10, 0, 0, 250_000, tzinfo=timezone.utc)
    assert vt.Cart.checked_out("c1", CONTACT, time=T0, skew=0).time == T0


def test_checked_out_defaults_to_now_plus_skew() -> None:
    before = datetime.now(timezone.utc)
    cart = vt.Cart.checked_out("c1", CONTACT)
    after = datetime.now(timezone.utc)
    assert before + timedelta(seconds=5) <= cart.time <= after + timedelta(seconds=5)


@pytest.mark.parametrize("skew", [-0.001, float("nan"), float("inf"), True, "5", None])
def test_skew_must_be_a_finite_number_of_seconds_at_least_zero(skew: Any) -> None:
    with pytest.raises(vt.InvalidEventError) as raised:
        vt.Cart.checked_out("c1", CONTACT, time=T0, skew=skew)
    assert raised.value.field == "skew"


def test_checked_out_validates_like_any_cart() -> None:
    with pytest.raises(vt.InvalidEventError) as raised:
        vt.Cart.checked_out("c1", "not-a-contact", time=T0)
    assert raised.value.field == "contact_id"
    with pytest.raises(vt.InvalidEventError) as raised:
        vt.Cart.checked_out("c1", CONTACT, time="2024-05-01T10:00:00")
    assert raised.value.field == "time"


def test_a_checked_out_cart_has_no_items() -> None:
    with pytest.raises(vt.InvalidEventError, match="checkout: a checked-out cart has no items"):
        vt.Cart("c1", CONTACT, [vt.CartItem("SKU-1", 1)], checkout=True)


def test_checkout_must_be_a_bool() -> None:
    with pytest.raises(vt.InvalidEventError, match="checkout: must be a bool"):
        vt.Cart("c1", CONTACT, checkout=1)  # type: ignore[arg-type]


def test_a_checked_out_cart_equals_the_emptied_cart_voyado_receives() -> None:
    """The flag is not part of equality: Voyado's copy, parsed from the wire, compares equal."""
    cart = vt.Cart.checked_out("c1", CONTACT, time=T0)
    assert cart == vt.Cart("c1", CONTACT, (), time=T0 + timedelta(seconds=5))
    assert hash(cart) == hash(vt.Cart("c1", CONTACT, (), time=T0 + timedelta(seconds=5)))


def test_the_collapse_rule_stays_latest_by_time() -> None:
    checkout = vt.Cart.checked_out("c1", CONTACT, time=T0)
    assert not supersedes(stamped(4), checkout)
    assert supersedes(stamped(6), checkout)
    assert supersedes(stamped(5), checkout)  # an equal instant: the later arrival


# -- never on the wire; an optional key in event files -----------------------------------------


def test_checkout_is_never_sent_on_the_wire() -> None:
    cart = vt.Cart.checked_out("c1", CONTACT, time=T0)
    wire = {"cartReference": "c1", "contactId": CONTACT, "items": [],
            "time": T0 + timedelta(seconds=5)}
    assert event_to_wire(cart) == wire
    assert CONVERTER_TO_WIRE[vt.Cart](cart) == wire  # the reference converter agrees


def test_a_wire_cart_with_a_checkout_field_is_refused_naming_it() -> None:
    """Voyado knows no such field: the fake (and send) refuse it inside the event."""
    with pytest.raises(vt.InvalidEventError) as raised:
        structure(vt.Cart, {"cartReference": "c1", "contactId": CONTACT,
                            "time": "2024-05-01T10:00:00Z", "checkout": True})
    assert raised.value.field == "checkout"


def test_an_event_file_line_carries_checkout_at_the_top_level() -> None:
    line = event_to_line(vt.Cart.checked_out("c1", CONTACT, time=T0))
    record = orjson.loads(line)
    assert record["checkout"] is True
    assert "checkout" not in record["event"]
    assert line_to_event(line).checkout is True  # type: ignore[union-attr]


def test_an_ordinary_line_has_no_checkout_key() -> None:
    assert "checkout" not in orjson.loads(event_to_line(filled()))


def test_a_reader_that_ignores_the_key_still_gets_the_cart_stamped_ahead() -> None:
    record = orjson.loads(event_to_line(vt.Cart.checked_out("c1", CONTACT, time=T0)))
    del record["checkout"]
    cart = line_to_event(orjson.dumps(record))
    assert (cart.checkout, cart.time) == (False, T0 + timedelta(seconds=5))


@pytest.mark.parametrize(
    ("extra", "problem"),
    [({"checkout": "yes"}, "checkout: must be true or false"),
     ({"checkout": 1}, "checkout: must be true or false")],
)
def test_a_bad_checkout_key_is_an_error_naming_it(extra: dict[str, object], problem: str) -> None:
    record = {**orjson.loads(event_to_line(vt.Cart("c1", CONTACT, time=T0))), **extra}
    with pytest.raises(vt.InvalidEventError, match=problem):
        line_to_event(orjson.dumps(record))


def test_checkout_false_or_null_is_an_ordinary_cart() -> None:
    for value in (False, None):
        record = {**orjson.loads(event_to_line(vt.Cart("c1", CONTACT, time=T0))),
                  "checkout": value}
        assert line_to_event(orjson.dumps(record)).checkout is False  # type: ignore[union-attr]


def test_only_a_cart_can_be_checked_out_in_an_event_file() -> None:
    record = {**orjson.loads(event_to_line(vt.ProductView("SKU-1", CONTACT, time=T0))),
              "checkout": True}
    with pytest.raises(vt.InvalidEventError, match="only a cart can be checked out"):
        line_to_event(orjson.dumps(record))


def test_a_checkout_line_with_items_is_an_error_naming_checkout() -> None:
    record = {**orjson.loads(event_to_line(filled())), "checkout": True}
    with pytest.raises(vt.InvalidEventError, match="checkout: a checked-out cart has no items"):
        line_to_event(orjson.dumps(record))


def test_the_spool_keeps_the_flag(tmp_path: Path) -> None:
    from voyado_tracking._eventfile import append_events

    path = tmp_path / "spool.jsonl"
    append_events(path, [vt.Cart.checked_out("c1", CONTACT, time=T0)], reason="shutdown")
    assert line_to_event(path.read_bytes()).checkout is True  # type: ignore[union-attr]


def test_a_stream_entry_keeps_the_flag() -> None:
    pytest.importorskip("redis")
    from voyado_tracking.redis._stream import decode_entry, encode_entry

    cart = decode_entry(encode_entry(vt.Cart.checked_out("c1", CONTACT, time=T0)))
    assert cart.checkout is True  # type: ignore[union-attr]
    assert decode_entry(encode_entry(filled())).checkout is False  # type: ignore[union-attr]


async def test_send_reads_the_checkout_key_and_the_checkout_wins(
    fake: FakeVoyado, tmp_path: Path
) -> None:
    path = write_events(tmp_path / "e.jsonl", [filled(), vt.Cart.checked_out("c1", CONTACT,
                                                                            time=T0),
                                               stamped(4)])
    assert b'"checkout":true' in path.read_bytes()
    result = await run_cli("send", str(path), env=connection(fake))
    assert result.returncode == 0, result.stderr
    assert fake.carts["c1"].items == ()


# -- the window, through the buffer ----------------------------------------------------------


@pytest.mark.parametrize(("seconds", "items"), [(4, ()), (6, (vt.CartItem("SKU-2", 1),))],
                         ids=["4s-loses", "6s-new-cart"])
async def test_an_update_pending_with_the_checkout_loses_within_skew_and_wins_past_it(
    fake: FakeVoyado, client: vt.TrackingClient, seconds: int, items: tuple[vt.CartItem, ...]
) -> None:
    async with vt.TrackingBuffer(client, fast_settings(flush_interval=60.0)) as buffer:
        for event in (filled(), vt.Cart.checked_out("c1", CONTACT, time=T0), stamped(seconds)):
            buffer.enqueue(event)
        await buffer.flush(timeout=10)
    assert len(fake.cart_updates) == 1  # collapsed in the buffer
    assert fake.carts["c1"].items == items
    assert buffer.stats.collapsed == 2


@pytest.mark.parametrize(("seconds", "items"), [(4, ()), (6, (vt.CartItem("SKU-2", 1),))],
                         ids=["4s-loses", "6s-new-cart"])
async def test_an_update_arriving_after_the_delivered_checkout_loses_within_skew(
    fake: FakeVoyado, client: vt.TrackingClient, seconds: int, items: tuple[vt.CartItem, ...]
) -> None:
    async with vt.TrackingBuffer(client, fast_settings()) as buffer:
        buffer.enqueue(vt.Cart.checked_out("c1", CONTACT, time=T0))
        await buffer.flush(timeout=10)
        buffer.enqueue(stamped(seconds))
        await buffer.flush(timeout=10)
    assert len(fake.cart_updates) == 2  # both reached Voyado: its own rule decides
    assert fake.carts["c1"].items == items


async def test_a_spooled_checkout_replays_as_a_checkout(
    closed_port_url: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.jsonl"
    async with vt.TrackingClient(closed_port_url, "key") as client:
        buffer = vt.TrackingBuffer(client, fast_settings(shutdown_timeout=0.2),
                                   spool_path=spool)
        buffer.enqueue(vt.Cart.checked_out("c1", CONTACT, time=T0))
        await buffer.aclose()
    (line,) = spool.read_bytes().splitlines()
    assert line_to_event(line).checkout is True  # type: ignore[union-attr]


# -- the window, through a killed journaled process --------------------------------------------


def journaled_carts(directory: Path) -> dict[str, vt.Cart]:
    carts: dict[str, vt.Cart] = {}
    for path in directory.glob("journal-*.sqlite3"):
        with contextlib.closing(sqlite3.connect(path)) as db:
            for ref, body in db.execute("SELECT ref, body FROM carts"):
                carts[ref] = decode_cart(body)
    return carts


async def journal_then_kill(fake: FakeVoyado, directory: Path) -> None:
    """Run checkout_child.py against *fake* failing every request, SIGKILL it once synced."""
    fake.chaos(Chaos(error_rate=1.0))
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(CHILD), fake.url, fake.api_key, str(directory),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        assert (await asyncio.wait_for(process.stdout.readline(), 60)).strip() == b"SYNCED"
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
        await process.wait()
    fake.reset()


posix_only = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and flock are POSIX")


@posix_only
async def test_the_checkout_window_holds_through_a_killed_journaled_process(
    fake: FakeVoyado, tmp_path: Path
) -> None:
    """The child journals each cart's checkout and late updates (4 s and 6 s after the
    checkout's base time) while Voyado fails, and is killed; a new buffer recovers, gets one
    more late update (4 s), and delivers."""
    await journal_then_kill(fake, tmp_path)
    journaled = journaled_carts(tmp_path)
    assert {ref: c.checkout for ref, c in journaled.items()} == {
        "lost-4": True, "new-6": False, "later-4": True}  # the flag is on disk
    async with vt.TrackingClient(fake.url, fake.api_key, max_requests_per_second=None) as c:
        async with vt.TrackingBuffer(c, fast_settings(), journal=vt.Journal(tmp_path)) as buffer:
            buffer.enqueue(late("later-4", 4))
            await buffer.flush(timeout=20)
        assert buffer.stats.recovered == 3
    assert {ref: cart.items for ref, cart in fake.carts.items()} == {
        "lost-4": (), "new-6": (vt.CartItem("SKU-LATE", 1),), "later-4": ()}
    assert fake.carts["lost-4"].time == BASE + timedelta(seconds=5)


@posix_only
async def test_a_recovered_checkout_keeps_its_flag(fake: FakeVoyado, tmp_path: Path) -> None:
    """The carts the new buffer recovers from the killed process's journal are checkouts
    still (seen as Voyado rejects them and they are dead-lettered)."""
    await journal_then_kill(fake, tmp_path)
    fake.reject_cart_references = {"lost-4", "new-6", "later-4"}
    dead: list[vt.Cart] = []
    async with (
        vt.TrackingClient(fake.url, fake.api_key, max_requests_per_second=None) as c,
        vt.TrackingBuffer(
            c, fast_settings(), journal=vt.Journal(tmp_path),
            on_dead_letter=lambda event, _: dead.append(event),  # type: ignore[arg-type]
        ) as buffer,
    ):
        await buffer.flush(timeout=20)
    assert {cart.cart_reference: cart.checkout for cart in dead} == {
        "lost-4": True, "new-6": False, "later-4": True}
