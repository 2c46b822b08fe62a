"""Consumers do not pile up in the group: a clean stop leaves it, a stale one is removed, and
one with pending entries is never removed (real Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from conftest import eventually, view

import voyado_tracking as vt
from voyado_tracking.redis._stream import encode_entry
from voyado_tracking.testing import FakeVoyado

pytestmark = pytest.mark.fleet

STREAM = GROUP = "voyado-tracking"
FAST = vt.FlushSettings(flush_interval=0.05, shutdown_timeout=5.0)


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


async def consumers(r: aioredis.Redis) -> dict[str, int]:
    """The group's consumers and their pending counts."""
    return {c["name"].decode(): int(c["pending"]) for c in await r.xinfo_consumers(STREAM, GROUP)}


async def write(redis_url: str, count: int, prefix: str = "sku") -> None:
    async with vt.RedisOutbox(redis_url) as outbox:
        for n in range(count):
            outbox.enqueue(view(f"{prefix}-{n}"))
        await outbox.flush()


async def test_clean_starts_and_stops_leave_no_consumer(
    client: vt.TrackingClient, redis_url: str, r: aioredis.Redis
) -> None:
    for round_ in range(5):
        await write(redis_url, 3, f"r{round_}")
        async with vt.Forwarder(client, redis_url, FAST) as forwarder:
            await forwarder.flush(timeout=10)
    assert await consumers(r) == {}


async def test_a_stop_that_releases_entries_leaves_its_own_pending_list_empty(
    fake: FakeVoyado, client: vt.TrackingClient, redis_url: str, r: aioredis.Redis
) -> None:
    """Released entries go to the group (claimable at once), not this consumer's list."""
    await write(redis_url, 10)
    fake.hold()
    first = vt.Forwarder(client, redis_url, FAST, claim_idle=30.0)
    await first.start()
    await eventually(lambda: first.stats.in_flight > 0)
    await first.aclose(timeout=0.3)
    fake.release()
    assert await r.xpending_range(STREAM, GROUP, "-", "+", 1, first.consumer) == []
    assert first.consumer not in await consumers(r)
    async with vt.Forwarder(client, redis_url, FAST, claim_idle=30.0) as second:
        await second.flush(timeout=10)
    assert {v.item_id for v in fake.product_views} == {f"sku-{n}" for n in range(10)}
    assert await consumers(r) == {}


async def test_a_live_forwarder_removes_a_stale_idle_consumer(
    client: vt.TrackingClient, redis_url: str, r: aioredis.Redis
) -> None:
    await r.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    await r.xgroup_createconsumer(STREAM, GROUP, "killed-long-ago")
    await eventually(lambda: _idle_at_least(r, "killed-long-ago", 300))
    async with vt.Forwarder(client, redis_url, FAST, claim_idle=0.2,
                            stale_consumer_after=0.2) as forwarder:
        await eventually(lambda: _absent(r, "killed-long-ago"))
        assert forwarder.consumer in await consumers(r)


async def test_a_consumer_with_pending_entries_is_never_removed(
    client: vt.TrackingClient, redis_url: str, r: aioredis.Redis
) -> None:
    """However idle: removing it would discard its entries. They survive."""
    await r.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    await r.xadd(STREAM, encode_entry(view("sku-held")))
    await r.xreadgroup(GROUP, "holder", {STREAM: ">"}, count=1)
    await r.xgroup_createconsumer(STREAM, GROUP, "empty")
    await eventually(lambda: _idle_at_least(r, "empty", 300))
    async with vt.Forwarder(client, redis_url, FAST, claim_idle=3600.0,
                            stale_consumer_after=0.2):
        await eventually(lambda: _absent(r, "empty"))  # a sweep ran: "holder" was seen
        assert (await consumers(r)).get("holder") == 1
    assert (await consumers(r)).get("holder") == 1
    assert len(await r.xrange(STREAM)) == 1


async def _idle_at_least(r: aioredis.Redis, name: str, ms: int) -> bool:
    return any(c["name"].decode() == name and int(c["idle"]) >= ms
               for c in await r.xinfo_consumers(STREAM, GROUP))


async def _absent(r: aioredis.Redis, name: str) -> bool:
    return name not in await consumers(r)
