"""FakeVoyado's state carries its request log, busiest second and cart-update count (also in
``fake-server --dump``), and its success body is one the generated Voyado SDK parses."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from conftest import CONTACT, cart, fake_server_process, view

import voyado_tracking as vt
from voyado_tracking._wire import CARTS, PRODUCT_VIEWS
from voyado_tracking.testing import FakeVoyado
from voyado_tracking.testing._faults import RecordedRequest
from voyado_tracking.testing._requestlog import REQUEST_LOG_SIZE, request_log_state


async def test_state_logs_each_request_with_time_path_status_and_events(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    await client.register_product_views([view("a"), view("b"), view("c")])
    fake.script(400)
    with pytest.raises(vt.VoyadoError):
        await client.register_cart(cart("c-1", 0, "SKU-1"))
    log = fake.state()["requestLog"]
    assert [(r["path"], r["status"], r["events"]) for r in log] == [
        (PRODUCT_VIEWS, 200, 3), (CARTS, 400, 0)]
    assert all(datetime.fromisoformat(r["time"]).tzinfo is not None for r in log)


async def test_state_counts_cart_updates_received(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    """Every update counts, also those an update with a later time superseded."""
    await client.register_carts([cart("c-1", 5, "A"), cart("c-1", 1), cart("c-2", 0, "B")])
    state = fake.state()
    assert state["cartUpdates"] == 3
    assert len(state["carts"]) == 2


async def test_state_names_the_busiest_one_second_window(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    for n in range(4):
        await client.register_product_view(view(f"sku-{n}"))
    busiest = fake.state()["busiestSecond"]
    assert (busiest["requests"], busiest["events"]) == (4, 4)
    assert datetime.fromisoformat(busiest["start"]).tzinfo is not None


def test_request_log_keeps_the_last_10000_requests() -> None:
    requests = [RecordedRequest(path=f"/p{n}", status=200, events=1, key_ok=True,
                                user_agent=None, content_type=None, body=b"", at=n * 2.0)
                for n in range(REQUEST_LOG_SIZE + 5)]
    state = request_log_state(requests, 0)
    assert len(state["requestLog"]) == REQUEST_LOG_SIZE == 10_000
    assert state["requestLog"][0]["path"] == "/p5"
    assert state["busiestSecond"]["requests"] == 1  # two seconds apart


async def test_fake_server_dump_carries_the_request_log(tmp_path: Path) -> None:
    dump = tmp_path / "state.json"
    async with fake_server_process("--dump", str(dump)) as server:
        async with vt.TrackingClient(server.base_url, server.api_key) as client:
            await client.register_carts([cart("c-1", 0, "SKU-1"), cart("c-2", 0, "SKU-2")])
        await server.stop()
    state = orjson.loads(dump.read_bytes())
    assert [(r["status"], r["events"]) for r in state["requestLog"]] == [(200, 2)]
    assert state["busiestSecond"]["requests"] == 1
    assert state["cartUpdates"] == 2


async def test_the_generated_voyado_sdk_parses_the_fake_success_body(fake: FakeVoyado) -> None:
    """Its OkResult has no fields: ``{"success": true}`` made ``_unmap`` raise TypeError."""
    from voyado_engage_sdk import VoyadoEngageSdk  # the test extra's voyado-engage-client
    from voyado_engage_sdk.models import CartApiModel, CartItemApiModel, ProductViewApiModel

    engage = VoyadoEngageSdk(api_key=fake.api_key, api_key_header="apikey",
                                 base_url=fake.url)
    await asyncio.to_thread(
        engage.tracking.product_view_v_register_product_view,
        ProductViewApiModel(item_id="SKU-1", contact_id=CONTACT, time="2024-05-01T10:00:00Z"),
    )
    await asyncio.to_thread(
        engage.tracking.cart_register_cart,
        CartApiModel(cart_reference="c-1", contact_id=CONTACT, time="2024-05-01T10:00:00Z",
                     items=[CartItemApiModel(sku="SKU-1", quantity=1)]),
    )
    assert [v.item_id for v in fake.product_views] == ["SKU-1"]
    assert fake.carts["c-1"].items == (vt.CartItem("SKU-1", 1),)
