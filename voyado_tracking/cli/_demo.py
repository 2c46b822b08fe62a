"""``voyado-tracking demo``: simulated shop traffic through a buffer, against an in-process
FakeVoyado that injects faults, then a report and the checks of what the fake holds and of
the mails Engage would send 30 minutes later (``_demo_engage``).

The traffic comes from :func:`voyado_tracking.testing.shop_traffic`, so a seed fixes every
event; the demo only paces it over ``--duration`` seconds of wall clock. What depends on
timing (how many cart updates collapse in the buffer, requests, retries, faults met) can
vary between runs of one seed; the events and the end state at the fake cannot.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence

import attrs

from .. import BufferStats, Cart, FlushSettings, RetryPolicy, TrackingBuffer, TrackingClient
from .. import __version__ as version
from .._wire import Event
from ..testing import Chaos, FakeVoyado, latest_carts, shop_traffic
from ._common import EXIT_FAILED, EXIT_OK, PROG
from ._demo_engage import DemoMails
from ._demo_identify import DemoVisitors
from ._progress import progress, stats_text

__all__ = [
    "Timing",
    "check_delivery",
    "flush_settings",
    "paced",
    "report",
    "run_demo",
    "schedule",
    "verdict",
]

# The pacing loop gives the event loop a turn (and sleeps if ahead) every this many events.
_PACE_EVERY = 64


@attrs.frozen
class Timing:
    traffic: float  # seconds from the first event to the last one enqueued
    drain: float  # seconds the buffer took to deliver the rest after that


def flush_settings(args: argparse.Namespace) -> FlushSettings:
    return FlushSettings(
        max_batch_size=args.batch_size,
        flush_interval=args.flush_interval,
        max_pending=max(50_000, args.batch_size),
        retry=RetryPolicy(
            max_attempts=None, initial_backoff=0.05, max_backoff=0.5, max_elapsed=30.0
        ),
        shutdown_timeout=30.0,
    )


def schedule(events: Sequence[Event], duration: float) -> Callable[[Event], float]:
    """When to enqueue an event of *events*, in seconds from the start: the traffic's spread
    in event time, scaled to about *duration* seconds."""
    if not events:
        return lambda event: 0.0
    first = events[0].time
    span = (events[-1].time - first).total_seconds()
    scale = duration / span if span > 0 else 0.0
    return lambda event: (event.time - first).total_seconds() * scale


async def paced(
    events: Sequence[Event], due: Callable[[Event], float], started: float
) -> AsyncIterator[Event]:
    """*events*, each one once its ``due`` time after *started* (``time.monotonic``) came."""
    for n, event in enumerate(events):
        if n % _PACE_EVERY == 0:
            await asyncio.sleep(max(0.0, started + due(event) - time.monotonic()))
        yield event


async def _play(
    events: Sequence[Event], buffer: TrackingBuffer, args: argparse.Namespace, mode: str,
    visitors: DemoVisitors | None = None,
) -> Timing:
    """Enqueue *events* spread over about ``args.duration`` seconds as their times are spread, then
    close the buffer (which delivers the rest)."""
    enqueued = 0

    def poll() -> tuple[int, int | None, str]:
        return enqueued, len(events), f"enqueued {enqueued}  {stats_text(buffer.stats)}"

    started = time.monotonic()
    async with progress(mode, "shop traffic", poll, 1.0):
        async for event in paced(events, schedule(events, args.duration), started):
            if visitors is not None:
                await visitors.identify(event)
            buffer.enqueue(event)
            enqueued += 1
        traffic_done = time.monotonic()
        await buffer.aclose(timeout=flush_settings(args).shutdown_timeout)
    return Timing(traffic_done - started, time.monotonic() - traffic_done)


def check_delivery(
    fake: FakeVoyado, events: Sequence[Event], stats: BufferStats
) -> list[tuple[bool, str]]:
    """The demo's CHECK lines: (holds, description)."""
    expected_carts = latest_carts(events)
    wrong = [ref for ref, cart in expected_carts.items() if fake.carts.get(ref) != cart]
    extra = set(fake.carts) - set(expected_carts)
    expected_views = Counter(e for e in events if not isinstance(e, Cart))
    received = fake.product_view_counts()
    missing = sum((expected_views - received).values())
    duplicates = sum((received - expected_views).values())
    total = sum(expected_views.values())
    return [
        (not wrong and not extra,
         f"cart state at Voyado == latest-by-time update of each of {len(expected_carts)} "
         "carts"
         + (f" ({len(wrong)} wrong or missing, {len(extra)} unexpected)" if wrong or extra
            else "")),
        (missing == 0,
         f"every product view arrived: {total - missing} of {total}"
         + (f" ({duplicates} duplicates from retries)" if duplicates else "")),
        (stats.dropped == 0 and stats.dead_lettered == 0 and stats.spooled == 0,
         "nothing dropped, dead-lettered or left behind"),
    ]


def report(
    events: Sequence[Event], stats: BufferStats, fake: FakeVoyado, timing: Timing,
    *, sink: str = "buffer",
) -> str:
    carts = latest_carts(events)
    cart_updates = sum(1 for e in events if isinstance(e, Cart))
    open_carts = sum(1 for c in carts.values() if c.items)
    faults = ", ".join(f"{kind}: {n}" for kind, n in sorted(fake.faults_injected.items()))
    traffic_time = max(timing.traffic, 1e-9)
    pad = " " * 37
    return "\n".join([
        "",
        "Report",
        f"  events enqueued          {stats.enqueued:>8}  {len(events) - cart_updates} "
        f"product views, {cart_updates} cart updates",
        f"{pad}({len(carts)} carts: {open_carts} abandoned with items, "
        f"{len(carts) - open_carts} checked out or emptied)",
        f"  cart updates collapsed   {stats.collapsed:>8}  superseded in the {sink} "
        "before sending",
        f"  events sent              {stats.sent:>8}",
        f"  requests sent            {stats.requests:>8}  faults injected: {faults or 'none'}",
        f"  retries                  {stats.retries:>8}",
        f"  dropped / dead-lettered  {stats.dropped:>4} / {stats.dead_lettered}",
        f"  events/s                 {stats.enqueued / traffic_time:>8.0f}  enqueued "
        f"over {traffic_time:.1f} s of traffic",
        f"{pad}({sink} drained {timing.drain:.2f} s after the traffic ended)",
        "",
    ])


async def run_demo(args: argparse.Namespace, mode: str) -> int:
    """The ``demo`` command; returns the exit status."""
    events = shop_traffic(args.seed, events=args.events, shoppers=args.shoppers)
    async with FakeVoyado() as fake:
        if args.chaos:
            fake.chaos(Chaos(seed=args.seed, error_rate=args.error_rate,
                             rate_limit_rate=args.rate_limit_rate, retry_after=0.05,
                             drop_rate=args.drop_rate))
        client = TrackingClient(
            fake.url, fake.api_key, user_agent=f"VoyadoTrackingDemo/{version}", timeout=5.0
        )
        print(
            f"{PROG} demo: {args.shoppers} shoppers, {args.events} events (seed {args.seed}) "
            f"over ~{args.duration:g} s, against FakeVoyado at {fake.url}"
            + (" with injected faults" if args.chaos else ""),
            flush=True,
        )
        async with client:
            visitors = DemoVisitors(events, args.seed, fake, client)
            buffer = TrackingBuffer(client, flush_settings(args))
            timing = await _play(events, buffer, args, mode, visitors)
        stats = buffer.stats
        mails = DemoMails(fake, events)
        checks = [*check_delivery(fake, events, stats), visitors.check(), mails.check()]
        print(report(events, stats, fake, timing).rstrip("\n"))
        print("\n".join([*visitors.report_lines(), *mails.report_lines()]) + "\n")
    return verdict(checks)


def verdict(checks: Sequence[tuple[bool, str]]) -> int:
    """Print the CHECK lines and the RESULT; the exit status."""
    for holds, text in checks:
        print(f"CHECK {'OK  ' if holds else 'FAIL'} {text}")
    ok = all(holds for holds, _ in checks)
    print(f"RESULT: {'OK' if ok else 'FAILED'}")
    return EXIT_OK if ok else EXIT_FAILED
