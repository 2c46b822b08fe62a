"""The tuning simulation against reality: the same traffic, once simulated in virtual time and
once played in real time through a TrackingBuffer to the loopback FakeVoyado.

Scaled down (about three seconds of 600 events/s) and compared within stated tolerances:
requests per stream within 20%, mean batch sizes within 20%, collapsed cart updates within
25%. Real time on a shared machine jitters the time trigger a little; the size trigger and
the collapse rule are the store's own, so the numbers must agree closely.
"""

from __future__ import annotations

import asyncio

import pytest

import voyado_tracking as vt
from voyado_tracking._tune import Traffic, simulate, stream
from voyado_tracking._wire import CARTS_BATCH, PRODUCT_VIEWS, Event
from voyado_tracking.testing import FakeVoyado

LATENCY = 0.02  # the fake's answer time, and the simulation's request time
SECONDS = 3.0
SETTINGS = vt.FlushSettings(max_batch_size=100, flush_interval=0.5)


async def play(buffer: vt.TrackingBuffer, times: list[float], events: list[Event]) -> None:
    """Enqueue each event at its time from now (real time), a few milliseconds at a time."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for at, event in zip(times, events, strict=True):
        ahead = start + at - loop.time()
        if ahead > 0.002:
            await asyncio.sleep(ahead)
        buffer.enqueue(event)


async def test_simulated_requests_batches_and_collapse_match_a_real_run(
    fake: FakeVoyado,
) -> None:
    traffic = Traffic(events_per_second=600, cart_share=0.3, carts=60, seed=7)
    events = stream(traffic, SECONDS)
    simulated = simulate(SETTINGS, events, duration=SECONDS + 2, service_time=LATENCY)

    fake.latency = LATENCY
    async with vt.TrackingClient(fake.url, fake.api_key, max_requests_per_second=None) as c:
        buffer = vt.TrackingBuffer(c, SETTINGS)
        async with buffer:
            await play(buffer, events.times, events.events)
            # Let the time trigger send the rest, as the simulation does, then close.
            await asyncio.sleep(SETTINGS.flush_interval + 0.3)
        stats = buffer.stats

    real = {
        "product_views": [r.events for r in fake.requests if r.path == PRODUCT_VIEWS],
        "carts": [r.events for r in fake.requests if r.path == CARTS_BATCH],
    }
    assert stats.sent + stats.collapsed == len(events.events)  # all delivered in both
    assert sum(simulated.sent.values()) + simulated.collapsed == len(events.events)
    for kind, sizes in real.items():
        assert len(sizes) == pytest.approx(simulated.requests[kind], rel=0.2), kind
        mean = sum(sizes) / len(sizes)
        assert mean == pytest.approx(simulated.batch_size(kind), rel=0.2), kind  # type: ignore[arg-type]
    assert stats.collapsed == pytest.approx(simulated.collapsed, rel=0.25)
