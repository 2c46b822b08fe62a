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

import pytest

import voyado_tracking as vt
from voyado_tracking.testing import Chaos, FakeVoyado, latest_carts, shop_traffic

pytestmark = pytest.mark.soak

SECRET = "soak-secret-api-key-0123456789"


@pytest.mark.parametrize("seed", [20261127, 7])
async def test_fault_soak_loses_nothing_and_ends_with_latest_carts(
    seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    events = shop_traffic(seed, events=40_000, shoppers=1_000)
    # Out of order: a cart's updates arrive in random time order, from mixed UTC offsets.
    random.Random(seed).shuffle(events)
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
    assert fake.carts == latest_carts(events)
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
