"""Forwarder: consumer-group reads, full batches, acks, dead letters, claims (real Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import pytest
import redis.asyncio as aioredis
from conftest import cart, eventually, view

import voyado_tracking as vt
from voyado_tracking.redis import dead_stream
from voyado_tracking.testing import FakeVoyado

pytestmark = pytest.mark.fleet

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)  # the hour of conftest's cart()
FAST = vt.FlushSettings(
    flush_interval=0.05, shutdown_timeout=5.0,
    retry=vt.RetryPolicy(max_attempts=None, initial_backoff=0.01, max_backoff=0.05,
                         max_elapsed=60.0),
)


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


async def write(redis_url: str, events: list[vt.Cart | vt.ProductView]) -> None:
    async with vt.RedisOutbox(redis_url) as outbox:
        for event in events:
            outbox.enqueue(event)
        await outbox.flush()


async def test_forwarder_delivers_views_and_latest_cart_state(
    fake: FakeVoyado, client: vt.TrackingClient, redis_url: str
) -> None:
    updates = [cart("c1", 0, f"sku-{minute}", minute=minute) for minute in (1, 3, 2)]
    await write(redis_url, [view(f"sku-{n}") for n in range(50)] + updates)
    async with vt.Forwarder(client, redis_url, FAST) as forwarder:
        await forwarder.flush(timeout=10)
    assert sorted(v.item_id for v in fake.product_views) == sorted(f"sku-{n}" for n in range(50))
    assert fake.carts["c1"].time == T0 + timedelta(minutes=3)


async def test_delivered_entries_are_acked_and_deleted(
    client: vt.TrackingClient, redis_url: str, r: aioredis.Redis
) -> None:
    updates = [cart("c1", 0, f"sku-{minute}", minute=minute) for minute in (1, 2)]
    await write(redis_url, [view(f"sku-{n}") for n in range(20)] + updates)
    async with vt.Forwarder(client, redis_url, FAST) as forwarder:
        await forwarder.flush(timeout=10)
        await asyncio.sleep(0.1)  # the committer runs after the flush saw the stream empty
    assert await r.xlen("voyado-tracking") == 0
    assert (await r.xpending("voyado-tracking", "voyado-tracking"))["pending"] == 0


async def test_backlog_is_sent_in_full_batches(
    fake: FakeVoyado, client: vt.TrackingClient, redis_url: str
) -> None:
    await write(redis_url, [view(f"sku-{n}") for n in range(2000)])
    async with vt.Forwarder(client, redis_url, FAST) as forwarder:
        await forwarder.flush(timeout=20)
    sizes = [request.events for request in fake.requests]
    assert sizes == [500, 500, 500, 500]


async def test_rejected_event_lands_in_dead_stream_alone(
    fake: FakeVoyado, client: vt.TrackingClient, redis_url: str, r: aioredis.Redis
) -> None:
    fake.reject_item_ids = {"sku-7"}
    dead: list[vt.ProductView] = []
    await write(redis_url, [view(f"sku-{n}") for n in range(16)])
    async with vt.Forwarder(
        client, redis_url, FAST, on_dead_letter=lambda e, _: dead.append(e)  # type: ignore[arg-type]
    ) as forwarder:
        await forwarder.flush(timeout=10)
    entries = await r.xrange(dead_stream("voyado-tracking"))
    assert len(entries) == 1
    assert b"sku-7" in entries[0][1][b"e"]
    assert b"400" in entries[0][1][b"error"]
    assert len(fake.product_views) == 15
    assert [v.item_id for v in dead] == ["sku-7"]
    assert forwarder.stats.dead_lettered == 1


async def test_unreadable_entry_is_dead_lettered_not_retried(
    fake: FakeVoyado, client: vt.TrackingClient, redis_url: str, r: aioredis.Redis
) -> None:
    await r.xadd("voyado-tracking", {"v": "99", "e": "{}"})
    await write(redis_url, [view("sku-1")])
    async with vt.Forwarder(client, redis_url, FAST) as forwarder:
        await forwarder.flush(timeout=10)
    (entry,) = await r.xrange(dead_stream("voyado-tracking"))
    assert b"format version 99" in entry[1][b"error"]
    assert len(fake.product_views) == 1


async def test_retrying_entries_stay_owned_by_a_live_forwarder(
    fake: FakeVoyado, client: vt.TrackingClient, redis_url: str
) -> None:
    """Entries waiting on a slow or failing Voyado are refreshed: claim_idle takes none."""
    await write(redis_url, [view(f"sku-{n}") for n in range(10)])
    fake.hold()
    async with vt.Forwarder(client, redis_url, FAST, claim_idle=0.2) as first:
        await eventually(lambda: first.stats.in_flight > 0)
        async with vt.Forwarder(client, redis_url, FAST, claim_idle=0.2) as second:
            await asyncio.sleep(1.0)  # five times claim_idle
            fake.release()
            await first.flush(timeout=10)
        assert second.stats.claimed == 0
    assert len(fake.product_views) == 10


async def test_closed_forwarder_releases_what_it_holds_for_another(
    fake: FakeVoyado, client: vt.TrackingClient, redis_url: str
) -> None:
    await write(redis_url, [view(f"sku-{n}") for n in range(10)])
    fake.hold()
    first = vt.Forwarder(client, redis_url, FAST, claim_idle=30.0)
    await first.start()
    await eventually(lambda: first.stats.in_flight > 0)
    await first.aclose(timeout=0.3)
    fake.release()
    assert first.stats.spooled == 10
    async with vt.Forwarder(client, redis_url, FAST, claim_idle=30.0) as second:
        await second.flush(timeout=10)
    assert second.stats.claimed == 10
    assert {v.item_id for v in fake.product_views} == {f"sku-{n}" for n in range(10)}
