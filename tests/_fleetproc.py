"""Processes of a simulated fleet, for the fleet tests and benchmarks.

``python _fleetproc.py worker REDIS_URL STREAM WORKER COUNT``: enqueue the worker's events
through a RedisOutbox and close it. ``python _fleetproc.py forwarder REDIS_URL BASE_URL
API_KEY CLAIM_IDLE RATE``: run a Forwarder (with a shared RedisRateLimiter) until SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import datetime, timedelta, timezone

import voyado_tracking as vt

CONTACT = "7f1e2d3c-4b5a-4968-8776-5a4b3c2d1e0f"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
CARTS = 25  # cart references shared by every worker


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


async def run_worker(redis_url: str, stream: str, worker: int, count: int) -> None:
    async with vt.RedisOutbox(redis_url, stream=stream) as outbox:
        for n, event in enumerate(worker_events(worker, count)):
            outbox.enqueue(event)
            if n % 50 == 49:
                await asyncio.sleep(0.01)  # a worker serving requests, not a bulk load


async def run_forwarder(
    redis_url: str, base_url: str, api_key: str, claim_idle: float, rate: float
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    limiter = vt.RedisRateLimiter(redis_url, rate=rate)
    settings = vt.FlushSettings(max_batch_size=100, flush_interval=0.05)
    async with (
        vt.TrackingClient(base_url, api_key, rate_limiter=limiter) as client,
        vt.Forwarder(client, redis_url, settings, claim_idle=claim_idle) as forwarder,
    ):
        print("started", flush=True)
        await stop.wait()
        print(forwarder.stats, flush=True)
    await limiter.aclose()


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "worker":
        asyncio.run(run_worker(args[0], args[1], int(args[2]), int(args[3])))
    else:
        asyncio.run(run_forwarder(args[0], args[1], args[2], float(args[3]), float(args[4])))
