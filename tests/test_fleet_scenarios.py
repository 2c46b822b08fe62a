"""Fleet scenarios: worker processes, two forwarders, faults, a killed forwarder, a Redis
restart and the shared rate limit, against a real redis-server and the loopback fake."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from conftest import CONTACT, eventually

import voyado_tracking as vt
from voyado_tracking.testing import Chaos, FakeVoyado
from voyado_tracking.testing._fleet import FleetWorkers, WorkerPlan, start_forwarder_process
from voyado_tracking.testing._redis import RedisServer

pytestmark = pytest.mark.fleet

STREAM = "voyado-tracking"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
CARTS = 25  # cart references shared by every worker
SETTINGS = vt.FlushSettings(
    max_batch_size=100, flush_interval=0.05, shutdown_timeout=5.0,
    retry=vt.RetryPolicy(max_attempts=None, initial_backoff=0.02, max_backoff=0.2,
                         max_elapsed=120.0),
)


def worker_events(worker: int, count: int) -> list[vt.Cart | vt.ProductView]:
    """Worker *worker*'s events: one cart update in four, times unique across workers."""
    events: list[vt.Cart | vt.ProductView] = []
    for n in range(count):
        if n % 4 == 0:
            items = (vt.CartItem(f"sku-{worker}-{n}", 1),)
            when = T0 + timedelta(seconds=n * 100 + worker)
            events.append(vt.Cart(f"cart-{n % CARTS}", CONTACT, items=items, time=when))
        else:
            events.append(vt.ProductView(f"w{worker}-v{n}", CONTACT, time=T0))
    return events


def expected(workers: int, count: int) -> tuple[set[str], dict[str, datetime]]:
    """Every view's item id, and each cart's latest time, over the whole fleet."""
    views: set[str] = set()
    latest: dict[str, datetime] = {}
    for worker in range(workers):
        for event in worker_events(worker, count):
            if isinstance(event, vt.ProductView):
                views.add(event.item_id)
            elif event.time > latest.get(event.cart_reference, T0 - timedelta(days=1)):
                latest[event.cart_reference] = event.time
    return views, latest


async def run_workers(redis_url: str, workers: int, count: int) -> None:
    """Worker processes, each enqueuing its events 50 every 10 ms (a worker serving
    requests, not a bulk load)."""
    due = [n // 50 * 0.01 for n in range(count)]
    plans = [WorkerPlan(events=worker_events(w, count), due=due, redis=redis_url, stream=STREAM)
             for w in range(workers)]
    async with FleetWorkers(plans) as fleet:
        assert await fleet.play() == [0] * workers


def assert_all_delivered(fake: FakeVoyado, workers: int, count: int) -> None:
    views, latest = expected(workers, count)
    assert views <= {v.item_id for v in fake.product_views}  # at least once
    assert {ref: c.time for ref, c in fake.carts.items()} == latest


@pytest.fixture
async def clients(fake: FakeVoyado, redis_url: str) -> AsyncIterator[list[vt.TrackingClient]]:
    limiter = vt.RedisRateLimiter(redis_url, rate=200.0)
    pair = [vt.TrackingClient(fake.url, fake.api_key, rate_limiter=limiter) for _ in range(2)]
    yield pair
    for client in pair:
        await client.aclose()
    await limiter.aclose()


async def test_worker_processes_and_two_forwarders_deliver_everything_under_faults(
    fake: FakeVoyado, clients: list[vt.TrackingClient], redis_url: str
) -> None:
    fake.chaos(Chaos(seed=7, error_rate=0.15, rate_limit_rate=0.05, retry_after=0.05,
                     drop_rate=0.05))
    async with (
        vt.Forwarder(clients[0], redis_url, SETTINGS) as first,
        vt.Forwarder(clients[1], redis_url, SETTINGS) as second,
    ):
        await run_workers(redis_url, workers=4, count=400)
        await first.flush(timeout=60)
    assert_all_delivered(fake, 4, 400)
    assert first.stats.sent > 0  # both took part
    assert second.stats.sent > 0
    assert sum(fake.faults_injected.values()) > 0


async def test_forwarder_killed_mid_run_loses_nothing(
    fake: FakeVoyado, clients: list[vt.TrackingClient], redis_url: str
) -> None:
    fake.latency = 0.2
    killed = await start_forwarder_process(redis_url, fake.url, fake.api_key, rate=200.0,
                                           claim_idle=0.5, max_batch_size=100,
                                           flush_interval=0.05)
    assert killed.stdout is not None
    assert await killed.stdout.readline() == b"started\n"
    await run_workers(redis_url, workers=2, count=600)
    async with aioredis.from_url(redis_url) as r:
        # Mid-run: some batches delivered, and entries held by the forwarder we kill.
        async def mid_run() -> bool:
            return len(fake.requests) >= 2 and (await r.xpending(STREAM, STREAM))["pending"] > 0

        await eventually(mid_run)
    killed.send_signal(signal.SIGKILL)
    await killed.wait()
    async with vt.Forwarder(clients[0], redis_url, SETTINGS, claim_idle=0.5) as survivor:
        await survivor.flush(timeout=60)
    assert survivor.stats.claimed > 0
    assert_all_delivered(fake, 2, 600)


async def test_outbox_rides_out_a_redis_restart_and_catches_up(
    fake: FakeVoyado, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path, persistent=True)
    server.start()
    events = worker_events(0, 600)
    try:
        async with (
            vt.TrackingClient(fake.url, fake.api_key) as client,
            vt.RedisOutbox(server.url) as outbox,
            vt.Forwarder(client, server.url, SETTINGS, claim_idle=1.0) as forwarder,
        ):
            for event in events[:300]:
                outbox.enqueue(event)
            await outbox.flush(timeout=10)
            server.stop()
            for event in events[300:]:
                outbox.enqueue(event)
            await asyncio.sleep(0.3)
            assert outbox.stats.pending == outbox.stats.enqueued - outbox.stats.sent - (
                outbox.stats.collapsed)
            assert outbox.stats.pending > 0  # buffered in memory while Redis is down
            server.start()
            await outbox.flush(timeout=30)
            await forwarder.flush(timeout=30)
    finally:
        server.stop()
    assert outbox.stats.dropped == 0
    assert_all_delivered(fake, 1, 600)


async def test_forwarders_sharing_the_limiter_never_exceed_the_rate(redis_url: str) -> None:
    rate = 10.0
    settings = vt.FlushSettings(max_batch_size=5, flush_interval=0.01, shutdown_timeout=5.0)
    async with FakeVoyado(rate_limit=int(rate) + 2) as fake:
        limiters = [vt.RedisRateLimiter(redis_url, rate=rate) for _ in range(2)]
        clients = [vt.TrackingClient(fake.url, fake.api_key, rate_limiter=limiter)
                   for limiter in limiters]
        async with vt.RedisOutbox(redis_url) as outbox:
            for event in worker_events(0, 200):
                outbox.enqueue(event)
        async with (
            vt.Forwarder(clients[0], redis_url, settings) as first,
            vt.Forwarder(clients[1], redis_url, settings),
        ):
            await first.flush(timeout=60)
        for client, limiter in zip(clients, limiters, strict=True):
            await client.aclose()
            await limiter.aclose()
    assert not [r for r in fake.requests if r.status == 429]
    assert fake.max_requests_in_any_window(1.0) <= rate + 1
    assert len(fake.requests) >= 30
