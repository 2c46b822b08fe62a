"""The demo identifies its shoppers as a shop backend would, and reports the sources."""

from __future__ import annotations

import pytest
from test_cli import run_demo_in_process

from voyado_tracking import TrackingClient
from voyado_tracking.cli._demo_identify import DemoVisitors
from voyado_tracking.testing import FakeVoyado, shop_traffic


async def test_the_demo_reports_events_by_identification_source(
    capsys: pytest.CaptureFixture[str],
) -> None:
    await run_demo_in_process("--shoppers", "60", "--events", "1500", "--duration", "0.5")
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "identified by" in x)
    for source in ("cookie", "vtid", "eclub", "email lookup", "site"):
        assert f"{source} " in line
    assert "CHECK OK   every identified request of 1500 named its own shopper" in out


async def test_a_shopper_identified_as_someone_else_fails_the_check() -> None:
    """The check can fail: a fake that answers lookups with the wrong contact."""
    events = shop_traffic(2, events=400, shoppers=20)
    async with FakeVoyado() as fake, TrackingClient(fake.url, fake.api_key) as client:
        visitors = DemoVisitors(events, 2, fake, client)
        shoppers = list(fake.contacts)
        for contact in shoppers:  # each email now belongs to a stranger
            fake.add_contact(email=contact.email)
        del fake.contacts[:len(shoppers)]
        for event in events:
            await visitors.identify(event)
    holds, text = visitors.check()
    assert not holds
    assert "named someone else" in text
