"""The checkout rule in fleet mode, on a real redis-server: two forwarders that each deliver part
of a cart's entries, and shop traffic from worker processes whose clocks disagree."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

import attrs
import pytest
from conftest import CONTACT

import voyado_tracking as vt
from voyado_tracking._wire import Event
from voyado_tracking.testing import FakeVoyado, shop_traffic
from voyado_tracking.testing._fleet import FleetWorkers, WorkerPlan
from voyado_tracking.testing._shop import DEFAULT_START

pytestmark = pytest.mark.fleet

T0 = DEFAULT_START
SETTINGS = vt.FlushSettings(
    max_batch_size=4, flush_interval=0.05, shutdown_timeout=5.0,
    retry=vt.RetryPolicy(max_attempts=None, initial_backoff=0.02, max_backoff=0.2,
                         max_elapsed=60.0),
)
# The scenario's traffic: quick shoppers (5 s between steps), so that an update often lands
# within a few seconds of the checkout that follows it.
TRAFFIC = {"seed": 3, "events": 1_500, "shoppers": 40, "think": 5.0}
WORKER_AHEAD = timedelta(seconds=4)  # worker 0's clock runs this far ahead: within the skew


@pytest.fixture
async def clients(fake: FakeVoyado) -> AsyncIterator[list[vt.TrackingClient]]:
    pair = [vt.TrackingClient(fake.url, fake.api_key, max_requests_per_second=None)
            for _ in range(2)]
    yield pair
    for client in pair:
        await client.aclose()


def update(ref: str, seconds: float) -> vt.Cart:
    return vt.Cart(ref, CONTACT, [vt.CartItem("SKU-LATE", 1)], time=T0 + timedelta(seconds=seconds))


async def test_two_forwarders_keep_the_checkout_window_in_both_directions(
    fake: FakeVoyado, clients: list[vt.TrackingClient], redis_url: str
) -> None:
    """Each cart's entries (its items, its checkout, an update 4 s or 6 s after the
    checkout's base time) go through two outboxes, half of them late update first, and two
    forwarders share them out in small batches."""
    first: list[Event] = []
    second: list[Event] = []
    for n in range(24):
        ref, seconds = (f"lost-4-{n}", 4) if n % 2 else (f"new-6-{n}", 6)
        first.append(update(ref, -60))
        pair = [vt.Cart.checked_out(ref, CONTACT, time=T0), update(ref, seconds)]
        if n % 4 < 2:
            pair.reverse()
        first.append(pair[0])
        second.append(pair[1])
    async with (
        vt.Forwarder(clients[0], redis_url, SETTINGS) as one,
        vt.Forwarder(clients[1], redis_url, SETTINGS) as other,
    ):
        for events in (first, second):
            async with vt.RedisOutbox(redis_url) as outbox:
                for event in events:
                    outbox.enqueue(event)
                await outbox.flush(timeout=10)
        await one.flush(timeout=30)
        await other.flush(timeout=30)
    assert one.stats.sent > 0
    assert other.stats.sent > 0
    for ref, cart in fake.carts.items():
        if ref.startswith("lost-4"):
            assert (cart.items, cart.time) == ((), T0 + timedelta(seconds=5)), ref
        else:
            assert cart.items == (vt.CartItem("SKU-LATE", 1),), ref
    assert len(fake.carts) == 24


def checked_out(events: Sequence[Event]) -> set[str]:
    """The carts the shoppers of TRAFFIC checked out (the same carts in both runs)."""
    flagged = shop_traffic(**TRAFFIC)  # type: ignore[arg-type]
    checked = {e.cart_reference for e in flagged if isinstance(e, vt.Cart) and e.checkout}
    last = {e.cart_reference: e for e in events if isinstance(e, vt.Cart)}
    return {ref for ref in checked if ref in last and not last[ref].items}


async def mails_for_checked_out_carts(
    fake: FakeVoyado, clients: list[vt.TrackingClient], redis_url: str, events: list[Event]
) -> list[str]:
    """Play *events* through two worker processes (worker 0's clock ahead) and two
    forwarders; the checked-out carts Engage would mail about 30 minutes later."""
    plans = []
    for worker in range(2):
        share = events[worker::2]
        if worker == 0:
            share = [attrs.evolve(e, time=e.time + WORKER_AHEAD) for e in share]
        plans.append(WorkerPlan(events=share, redis=redis_url))
    async with (
        vt.Forwarder(clients[0], redis_url, SETTINGS) as one,
        vt.Forwarder(clients[1], redis_url, SETTINGS) as other,
    ):
        async with FleetWorkers(plans) as workers:
            assert await workers.play() == [0, 0]
        await one.flush(timeout=60)
        await other.flush(timeout=60)
    assert one.stats.sent > 0
    assert other.stats.sent > 0
    assert len(fake.carts) == len({e.cart_reference for e in events if isinstance(e, vt.Cart)})
    later = events[-1].time + WORKER_AHEAD + timedelta(minutes=31)
    checked = checked_out(events)
    assert checked
    return sorted(m.cart_reference for m in fake.engage.mails(now=later)
                  if m.cart_reference in checked)


async def test_with_cart_checked_out_no_checked_out_cart_mails_despite_skewed_workers(
    fake: FakeVoyado, clients: list[vt.TrackingClient], redis_url: str
) -> None:
    events = shop_traffic(**TRAFFIC)  # type: ignore[arg-type]
    assert await mails_for_checked_out_carts(fake, clients, redis_url, events) == []
    assert fake.engage.mails(now=events[-1].time + timedelta(hours=1))  # abandoned ones do


async def test_plain_emptied_carts_from_skewed_workers_mail_about_carts_that_were_bought(
    fake: FakeVoyado, clients: list[vt.TrackingClient], redis_url: str
) -> None:
    """The failure the rule prevents: a checkout loses to an update a worker stamped ahead."""
    events = shop_traffic(**TRAFFIC, checkout_skew=None)  # type: ignore[arg-type]
    mailed = await mails_for_checked_out_carts(fake, clients, redis_url, events)
    assert mailed, "expected checked-out carts to mail without Cart.checked_out"
