"""The demo reports the mails Engage would send 30 minutes after its traffic, and fails if a
checked-out cart would mail."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import attrs
import pytest
from conftest import CONTACT
from test_cli import run_cli, run_demo_in_process

import voyado_tracking as vt
from voyado_tracking.cli._demo_engage import DemoMails
from voyado_tracking.testing import FakeVoyado

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=timezone.utc)


async def test_the_demo_reports_the_mails_engage_would_send_30_minutes_later(
    capsys: pytest.CaptureFixture[str],
) -> None:
    await run_demo_in_process("--shoppers", "30", "--events", "1200", "--duration", "0.3")
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if "Engage mails in 30 min" in x]
    carts, browse = [int(w) for w in line.replace(",", " ").split() if w.isdigit()][-2:]
    assert carts > 0
    assert browse > 0
    assert "(carts that do not mail: emptied " in out
    assert "CHECK OK   no checked-out cart would mail: 0 of " in out


async def send(fake: FakeVoyado, *carts: vt.Cart) -> None:
    async with vt.TrackingClient(fake.url, fake.api_key) as client:
        await client.register_carts(list(carts))


async def test_a_checked_out_cart_that_would_mail_fails_the_check() -> None:
    """Voyado holds an update stamped after the checkout (a shop that reused the cart, or a
    worker whose clock ran more than the skew ahead): the cart mails, and the check says so."""
    checkout = vt.Cart.checked_out("c1", CONTACT, time=T0)
    later = vt.Cart("c1", CONTACT, [vt.CartItem("SKU-1", 1)], time=T0 + timedelta(seconds=6),
                    language="sv-SE")
    async with FakeVoyado() as fake:
        await send(fake, checkout, later)
        holds, text = DemoMails(fake, [checkout, later]).check()
    assert not holds
    assert text == "no checked-out cart would mail: 1 of 1 would (c1)"


async def test_a_checked_out_cart_that_stays_empty_passes_the_check() -> None:
    checkout = vt.Cart.checked_out("c1", CONTACT, time=T0)
    async with FakeVoyado() as fake:
        await send(fake, checkout, vt.Cart("c1", CONTACT, [vt.CartItem("SKU-1", 1)],
                                           time=T0 + timedelta(seconds=4), language="sv-SE"))
        mails = DemoMails(fake, [checkout])
    assert mails.check() == (True, "no checked-out cart would mail: 0 of 1")
    assert mails.reasons == {"emptied": 1}


async def test_a_checked_out_cart_that_would_mail_fails_the_demo_with_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """Checkouts stamped ten minutes early lose to the updates before them: the demo fails."""
    from voyado_tracking.cli import _parser
    from voyado_tracking.cli._demo import run_demo
    from voyado_tracking.testing._shop import _Shopper

    checkout = _Shopper.checkout

    def stamped_early(self: _Shopper, reference: str, skew: float | None) -> vt.Cart:
        cart = checkout(self, reference, skew)
        return attrs.evolve(cart, time=cart.time - timedelta(minutes=10))

    monkeypatch.setattr(_Shopper, "checkout", stamped_early)
    args = _parser().parse_args(["demo", "--shoppers", "10", "--events", "400",
                                 "--duration", "0.2", "--no-chaos"])
    assert await run_demo(args, "plain") == 1
    out = capsys.readouterr().out
    assert "CHECK FAIL no checked-out cart would mail: " in out
    assert "RESULT: FAILED" in out


async def test_demo_help_mentions_the_mails() -> None:
    result = await run_cli("demo", "--help")
    assert "checked-out cart" in result.stdout
