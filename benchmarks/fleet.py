"""Fleet mode benchmarks, in one run: RedisOutbox.enqueue next to TrackingBuffer.enqueue, and
a simulated fleet (16 worker processes at mixed rates, 2 forwarders, a 40 requests/s budget)
next to the same traffic through per-process buffers.

    .venv/bin/python benchmarks/fleet.py [--quick]

Needs redis-server on PATH (each run starts its own on a free loopback port).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import voyado_tracking as vt
from voyado_tracking.testing import FakeVoyado
from voyado_tracking.testing._fleet import FleetWorkers, WorkerPlan
from voyado_tracking.testing._redis import RedisServer

CONTACT = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
BUDGET = 40.0
RATES = [10, 20, 40, 80] * 4  # events/s of the 16 workers


def views(n: int, tag: str = "") -> list[vt.ProductView]:
    return [vt.ProductView(f"sku-{tag}{i}", CONTACT, category="shoes",
                           url=f"https://shop.example/p/{i}") for i in range(n)]


async def caller_cost(sink: vt.EventSink, events: list[vt.ProductView]) -> float:
    """µs per enqueue of pre-built events, yielding to the loop every 500 (untimed)."""
    spent = 0.0
    for start in range(0, len(events), 500):
        chunk = events[start:start + 500]
        began = time.perf_counter()
        for event in chunk:
            sink.enqueue(event)
        spent += time.perf_counter() - began
        await asyncio.sleep(0)
    return spent / len(events) * 1e6


async def enqueue_rounds(redis_url: str, n: int, rounds: int) -> tuple[list[float], list[float]]:
    buffer_us, outbox_us = [], []
    settings = vt.FlushSettings(flush_interval=3600, max_pending=n + 10, max_batch_size=n)
    for _ in range(rounds):
        client = vt.TrackingClient("http://127.0.0.1:9", "k", max_requests_per_second=None)
        buffer = vt.TrackingBuffer(client, settings)
        buffer_us.append(await caller_cost(buffer, views(n)))
        await buffer.aclose(timeout=0.01)
        await client.aclose()
        async with vt.RedisOutbox(redis_url, stream="bench-enqueue", max_pending=n + 10) as outbox:
            outbox_us.append(await caller_cost(outbox, views(n)))
    return buffer_us, outbox_us


ADMITTED: list[float] = []


class Recording:
    """The shared limiter, recording when it admits each request of this process."""

    def __init__(self, inner: vt.RedisRateLimiter) -> None:
        self.inner = inner

    def bind(self, identity: str) -> None:
        self.inner.bind(identity)

    async def acquire(self, max_pause: float | None) -> None:
        await self.inner.acquire(max_pause)
        ADMITTED.append(time.monotonic())

    async def pause(self, seconds: float) -> None:
        await self.inner.pause(seconds)


def busiest(times: list[float]) -> int:
    times = sorted(times)
    return max((sum(1 for t in times if s <= t < s + 1.0) for s in times), default=0)


async def backlog(redis_url: str, fake: FakeVoyado, n: int) -> tuple[float, int, int, float]:
    """Events per request and the busiest second while 2 forwarders drain a backlog of *n*."""
    async with vt.RedisOutbox(redis_url, max_pending=n + 10) as outbox:
        for event in views(n, "b"):
            await outbox.put(event)
    fake.reset()
    ADMITTED.clear()
    began = time.monotonic()
    await forwarders(redis_url, fake, drain=True)
    took = time.monotonic() - began
    accepted = [r for r in fake.requests if r.status == 200]
    return (sum(r.events for r in accepted) / len(accepted), busiest(ADMITTED),
            fake.max_requests_in_any_window(), took)


async def forwarders(redis_url: str, fake: FakeVoyado, drain: bool,
                     stop: asyncio.Event | None = None) -> None:
    limiter = vt.RedisRateLimiter(redis_url, rate=BUDGET)
    settings = vt.FlushSettings(flush_interval=1.0)
    clients = [vt.TrackingClient(fake.url, fake.api_key, rate_limiter=Recording(limiter))
               for _ in "ab"]
    async with (
        vt.Forwarder(clients[0], redis_url, settings) as first,
        vt.Forwarder(clients[1], redis_url, settings),
    ):
        if drain:
            await first.flush()
        else:
            assert stop is not None
            await stop.wait()
            await first.flush()
    for client in clients:
        await client.aclose()
    await limiter.aclose()


async def live(redis_url: str, fake: FakeVoyado, mode: str, seconds: float) -> tuple[float, int]:
    """Requests/s at Voyado and the busiest second for 16 workers at mixed rates."""
    fake.reset()
    stop = asyncio.Event()
    running = (asyncio.ensure_future(forwarders(redis_url, fake, drain=False, stop=stop))
               if mode == "fleet" else None)
    plans = [worker_plan(mode, fake, redis_url, rate, seconds, w) for w, rate in enumerate(RATES)]
    async with FleetWorkers(plans) as workers:
        began = time.monotonic()
        await workers.play()
    stop.set()
    if running is not None:
        await running
    took = time.monotonic() - began
    return len(fake.requests) / took, fake.max_requests_in_any_window()


def worker_plan(mode: str, fake: FakeVoyado, redis_url: str, rate: float, seconds: float,
                worker: int) -> WorkerPlan:
    """One worker's views at *rate* for *seconds*: into a RedisOutbox (fleet mode) or into a
    buffer of its own with the default client (per-process buffers: 40 requests/s each)."""
    count = int(rate * seconds)
    events, due = views(count, f"w{worker}-"), [i / rate for i in range(count)]
    if mode == "fleet":
        return WorkerPlan(events=events, due=due, redis=redis_url)
    return WorkerPlan(events=events, due=due, base_url=fake.url, api_key=fake.api_key,
                      flush_interval=1.0)


async def main(quick: bool) -> None:
    n, rounds, backlog_n, seconds = (20_000, 3, 20_000, 4.0) if quick else (100_000, 5, 60_000, 8.0)
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            buffer_us, outbox_us = await enqueue_rounds(server.url, n, rounds)
            async with FakeVoyado(rate_limit=200) as fake:
                per_request, admitted_max, backlog_max, took = await backlog(
                    server.url, fake, backlog_n)
                fleet_rps, fleet_max = await live(server.url, fake, "fleet", seconds)
                local_rps, local_max = await live(server.url, fake, "buffers", seconds)
        finally:
            server.stop()
    b, o = statistics.median(buffer_us), statistics.median(outbox_us)
    print("| measure | result | target | verdict |\n| --- | --- | --- | --- |")
    print(f"| enqueue µs/call: TrackingBuffer {b:.2f} (range {min(buffer_us):.2f} to "
          f"{max(buffer_us):.2f}), RedisOutbox {o:.2f} (range {min(outbox_us):.2f} to "
          f"{max(outbox_us):.2f}) | {o / b:.2f}x | ≤ 2x | {'met' if o / b <= 2 else 'missed'} |")
    print(f"| backlog of {backlog_n} views, 2 forwarders: events per request | "
          f"{per_request:.0f} ({took:.1f} s) | ≥ 450 | "
          f"{'met' if per_request >= 450 else 'missed'} |")
    print(f"| backlog: most requests admitted by the shared limiter in any 1 s window | "
          f"{admitted_max} | ≤ {BUDGET + 1:.0f} | "
          f"{'met' if admitted_max <= BUDGET + 1 else 'missed'} |")
    print(f"| backlog: most requests arriving at the fake in any 1 s window | {backlog_max} | "
          f"≤ {BUDGET + 1:.0f} | {'met' if backlog_max <= BUDGET + 1 else 'missed'} |")
    print(f"| 16 workers ({sum(RATES)} events/s), fleet mode: requests/s (busiest second) | "
          f"{fleet_rps:.1f} ({fleet_max}) | ≤ {BUDGET:.0f} | "
          f"{'met' if fleet_max <= BUDGET + 1 else 'missed'} |")
    print(f"| same traffic, per-process buffers: requests/s (busiest second) | "
          f"{local_rps:.1f} ({local_max}) | (comparison) | — |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    asyncio.run(main(parser.parse_args().quick))
