"""Delivery delay in ``stats``: ``oldest_pending_age`` and ``delivery_delay_p50``/``_p99``.

Timing runs on a FakeClock against the loopback FakeVoyado: the clock stands still while a
request crosses the wire, so every delay is exact.
"""

from __future__ import annotations

import asyncio
import functools

import pytest
from conftest import cart, eventually, fast_settings, view

import voyado_tracking as vt
from voyado_tracking._delays import DeliveryDelays
from voyado_tracking._store import PendingStore
from voyado_tracking.testing import FakeClock, FakeVoyado, Fault

SLOW_RETRY = vt.RetryPolicy(max_attempts=None, initial_backoff=100.0, max_backoff=100.0,
                            max_elapsed=3600.0)


# The suite's fast settings, but retries too slow to happen within a test.
settings = functools.partial(fast_settings, flush_interval=5.0, retry=SLOW_RETRY,
                             shutdown_timeout=2.0)


async def test_oldest_pending_age_is_zero_when_nothing_is_pending(
    client: vt.TrackingClient,
) -> None:
    clock = FakeClock()
    async with vt.TrackingBuffer(client, settings(), clock=clock) as buffer:
        await clock.advance(3)
        assert buffer.stats.oldest_pending_age == 0.0


async def test_oldest_pending_age_is_the_wait_of_the_oldest_pending_event(
    client: vt.TrackingClient,
) -> None:
    clock = FakeClock()
    async with vt.TrackingBuffer(client, settings(flush_interval=60), clock=clock) as buffer:
        buffer.enqueue(view("p1"))
        await clock.advance(10)
        buffer.enqueue(cart("c1", 1))
        await clock.advance(5)
        assert buffer.stats.oldest_pending_age == 15.0


async def test_oldest_pending_age_ignores_events_in_flight(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    clock = FakeClock()
    fake.hold()
    async with vt.TrackingBuffer(client, settings(flush_interval=1), clock=clock) as buffer:
        buffer.enqueue(view("p1"))
        await clock.advance(1)  # taken and sent; the fake holds the answer
        try:
            await eventually(lambda: buffer.stats.in_flight == 1)
            await clock.advance(30)
            assert buffer.stats.oldest_pending_age == 0.0
        finally:
            fake.release()


async def test_oldest_pending_age_counts_events_waiting_to_retry(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    clock = FakeClock()
    fake.script(Fault(status=503, retry_after=50))
    async with vt.TrackingBuffer(client, settings(flush_interval=1), clock=clock) as buffer:
        buffer.enqueue(view("p1"))
        await clock.advance(1)
        await eventually(lambda: buffer.stats.retries == 1)
        await clock.advance(20)  # Retry-After: 50 s, so still waiting to retry
        assert buffer.stats.pending_product_views == 1
        assert buffer.stats.oldest_pending_age == 21.0
        await clock.advance(100)  # retried and delivered: nothing left for close to wait on
        await eventually(lambda: buffer.stats.sent == 1)


async def test_delivery_delays_are_none_before_the_first_delivery(
    client: vt.TrackingClient,
) -> None:
    clock = FakeClock()
    async with vt.TrackingBuffer(client, settings(), clock=clock) as buffer:
        buffer.enqueue(view("p1"))
        stats = buffer.stats
        assert (stats.delivery_delay_p50, stats.delivery_delay_p99) == (None, None)


async def test_delivery_delay_runs_from_enqueue_to_the_2xx(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    clock = FakeClock()
    async with vt.TrackingBuffer(client, settings(flush_interval=5), clock=clock) as buffer:
        buffer.enqueue(view("p1"))
        await clock.advance(4)
        for i in range(3):
            buffer.enqueue(view(f"q{i}"))
        await clock.advance(1)  # the first view is due: all four go, 2xx at t=5
        await eventually(lambda: buffer.stats.sent == 4)
        stats = buffer.stats
        assert (stats.delivery_delay_p50, stats.delivery_delay_p99) == (1.0, 5.0)


async def test_collapsed_cart_delay_counts_from_the_first_pending_update(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    clock = FakeClock()
    async with vt.TrackingBuffer(client, settings(flush_interval=5), clock=clock) as buffer:
        buffer.enqueue(cart("c1", 1, "a"))
        await clock.advance(4)
        buffer.enqueue(cart("c1", 2, "a", "b"))  # replaces the pending update
        await clock.advance(1)
        await eventually(lambda: buffer.stats.sent == 1)
        assert buffer.stats.delivery_delay_p99 == 5.0


async def test_delivery_delay_of_a_retried_event_includes_its_wait_to_retry(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    clock = FakeClock()
    fake.script(Fault(status=503, retry_after=10))
    retry = vt.RetryPolicy(max_attempts=None, initial_backoff=0.01, max_backoff=60.0,
                           max_elapsed=600.0)
    async with vt.TrackingBuffer(
        client, vt.FlushSettings(flush_interval=1, retry=retry, shutdown_timeout=2.0),
        clock=clock,
    ) as buffer:
        buffer.enqueue(cart("c1", 1, "a"))
        await clock.advance(1)
        await eventually(lambda: buffer.stats.retries == 1)
        await asyncio.sleep(0.05)
        await clock.advance(10)  # Retry-After: 10 s after the failure at t=1
        await eventually(lambda: buffer.stats.sent == 1)
        assert buffer.stats.delivery_delay_p99 == 11.0


def test_delay_window_keeps_only_the_latest_deliveries() -> None:
    delays = DeliveryDelays(size=4)
    delays.record([0.0] * 4, now=100.0)  # four events that waited 100 s
    delays.record([9.0] * 4, now=10.0)  # then four that waited 1 s
    assert delays.percentiles() == (1.0, 1.0)


def test_delay_percentiles_are_nearest_rank() -> None:
    delays = DeliveryDelays()
    delays.record([float(100 - n) for n in range(1, 101)], now=100.0)  # waits 1..100 s
    assert delays.percentiles() == (50.0, 99.0)


def test_a_failed_cart_keeps_its_own_arrival_not_its_batch_s() -> None:
    store = PendingStore(vt.FlushSettings(flush_interval=1))
    store.add(cart("old", 1), now=0.0)
    store.add(cart("new", 1), now=7.0)
    batch = store.take("carts", now=8.0)
    assert batch is not None
    store.failed(batch, batch.events, attempts=1, first_failure=8.0, not_before=9.0)
    assert sorted(e.first_at for e in store.retry_carts.values()) == [0.0, 7.0]


@pytest.mark.parametrize("kind", ["carts", "product_views"])
def test_take_records_each_event_s_arrival(kind: str) -> None:
    store = PendingStore(vt.FlushSettings(flush_interval=1))
    for n in range(3):
        store.add(cart(f"c{n}", 1) if kind == "carts" else view(f"p{n}"), now=float(n))
    batch = store.take(kind, now=5.0)  # type: ignore[arg-type]
    assert batch is not None
    assert batch.times == [0.0, 1.0, 2.0]
