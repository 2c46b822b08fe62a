"""Fault soak: tens of thousands of events through a buffer while the fake fails on purpose.

The fake answers about 20% of requests with 5xx, 5% with 429 + Retry-After, drops some
connections, and answers some requests only after the client has timed out (having processed
them, which is how duplicates arise). Nothing may be lost, every cart must end at its latest
update by instant, and the buffer must stay within max_pending the whole time.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import datetime, timedelta, timezone

import pytest

import voyado_tracking as vt
from voyado_tracking.testing import Chaos, FakeVoyado

pytestmark = pytest.mark.soak

SECRET = "soak-secret-api-key-0123456789"
CONTACTS = [f"{i:08x}-5717-4562-b3fc-2c963f66afa6" for i in range(50)]
OFFSETS = [timezone(timedelta(hours=h, minutes=m)) for h, m in ((0, 0), (2, 0), (-5, 0), (5, 30))]
BASE = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def shop_traffic(
    rng: random.Random, views: int, cart_updates: int, carts: int
) -> list[vt.Cart | vt.ProductView]:
    """Product views (each unique) and cart updates with random, shuffled, mixed-offset times."""
    events: list[vt.Cart | vt.ProductView] = []
    for i in range(views):
        events.append(
            vt.ProductView(
                f"sku-{rng.randrange(500)}",
                rng.choice(CONTACTS),
                time=BASE + timedelta(seconds=i),
                session_id=f"view-{i}",  # makes every view distinct, to find losses
                category="soak",
            )
        )
    for i in range(cart_updates):
        moment = BASE + timedelta(microseconds=rng.randrange(10**11))  # no ties in practice
        events.append(
            vt.Cart(
                f"cart-{rng.randrange(carts)}",
                rng.choice(CONTACTS),
                [vt.CartItem(f"sku-{i}", rng.randrange(1, 4))] if rng.random() < 0.8 else [],
                time=moment.astimezone(rng.choice(OFFSETS)),
            )
        )
    rng.shuffle(events)  # out of order: a cart's updates arrive in random time order
    return events


def latest_by_instant(events: list[vt.Cart | vt.ProductView]) -> dict[str, vt.Cart]:
    latest: dict[str, vt.Cart] = {}
    for event in events:
        if isinstance(event, vt.Cart):
            current = latest.get(event.cart_reference)
            if current is None or event.time >= current.time:
                latest[event.cart_reference] = event
    return latest


@pytest.mark.parametrize("seed", [20261127, 7])
async def test_fault_soak_loses_nothing_and_ends_with_latest_carts(
    seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(seed)
    events = shop_traffic(rng, views=24_000, cart_updates=16_000, carts=1_000)
    settings = vt.FlushSettings(
        max_batch_size=250,
        flush_interval=0.05,
        max_pending=3_000,
        max_concurrent_requests=3,
        retry=vt.RetryPolicy(
            max_attempts=None, initial_backoff=0.005, max_backoff=0.05, max_elapsed=120.0
        ),
        shutdown_timeout=60.0,
    )
    chaos = Chaos(
        seed=seed,
        error_rate=0.20,
        rate_limit_rate=0.05,
        retry_after=0.02,
        drop_rate=0.03,
        slow_rate=0.03,
        slow_delay=0.4,
    )
    peak_held = 0
    caplog.set_level(logging.DEBUG, logger="voyado_tracking")
    async with FakeVoyado(api_key=SECRET) as fake:
        fake.chaos(chaos)
        client = vt.TrackingClient(
            fake.url, SECRET, timeout=0.25, max_requests_per_second=None,
        )
        async with client, vt.TrackingBuffer(client, settings) as buffer:

            async def watch_memory() -> None:
                nonlocal peak_held
                while True:
                    s = buffer.stats
                    peak_held = max(peak_held, s.pending_carts + s.pending_product_views
                                    + s.in_flight)
                    await asyncio.sleep(0.005)

            watcher = asyncio.ensure_future(watch_memory())
            for event in events:
                await buffer.put(event)
            await buffer.flush(timeout=240)
            watcher.cancel()
            stats = buffer.stats
            report = repr(buffer) + repr(stats)

    views = [e for e in events if isinstance(e, vt.ProductView)]
    received = fake.product_view_counts()
    missing = [v for v in views if received[v] == 0]
    duplicates = sum(received.values()) - len(received)
    print(f"\nsoak: {stats}\nfaults injected: {fake.faults_injected}\n"
          f"duplicate product views: {duplicates}, peak held: {peak_held}")

    assert missing == []
    assert set(received) == set(views)
    assert fake.carts == latest_by_instant(events)
    assert (stats.dropped, stats.dead_lettered) == (0, 0)
    assert peak_held <= settings.max_pending
    # The run did meet every kind of fault, and the retries that duplicated views are visible.
    assert {"429", "drop", "slow"} <= set(fake.faults_injected)
    assert stats.retries > 0
    assert duplicates > 0
    assert stats.enqueued == stats.collapsed + stats.sent
    # ...and the API key appeared in none of the output.
    assert SECRET not in caplog.text
    assert SECRET not in report
