"""``voyado-tracking demo --fleet --redis URL``: the demo's shop traffic through a fleet.

Worker processes (``--workers``) each take every N-th event of the seeded traffic (worker
``i`` the events ``i, i + N, ...``, so the updates of one cart come from several workers, out
of order) and enqueue them into a :class:`RedisOutbox`, paced as the plain demo paces them.
Forwarders (``--forwarders``, tasks of this process, each with its own client) deliver the
stream to an in-process FakeVoyado through one :class:`RedisRateLimiter` of ``--rate``
requests/s, while the fake injects faults and, like Voyado's per-key limit, refuses requests
a little above that rate. Then the plain demo's report and checks, plus one: the busiest
second at the fake stayed within the shared rate + 1.

The run writes a stream of its own (removed at the end), never a fleet's. The worker
processes are those of :mod:`voyado_tracking.testing._fleet`, which get their settings, the
Redis URL included, on stdin (never on their command line).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import secrets
import sys
import time
from collections.abc import Sequence
from typing import Any

import attrs

from .. import BufferStats, TrackingClient
from .. import __version__ as version
from .._wire import Event
from ..testing import Chaos, FakeVoyado, shop_traffic
from ..testing._fleet import FleetWorkers, WorkerPlan
from ._common import PROG, UsageError
from ._demo import Timing, check_delivery, flush_settings, report, schedule, verdict
from ._demo_engage import DemoMails
from ._progress import progress, stats_text

__all__ = ["run_fleet_demo"]


# -- the parent: workers, forwarders, checks ---------------------------------------------------


async def run_fleet_demo(args: argparse.Namespace, mode: str) -> int:
    """The ``demo --fleet`` command; returns the exit status."""
    if args.redis is None:
        raise UsageError("demo --fleet needs --redis URL: the Redis the fleet shares, "
                         "e.g. --redis redis://localhost:6379/0")
    try:
        from ..redis._stream import connect
    except ImportError as error:  # it names the extra: pip install 'voyado-tracking[redis]'
        raise UsageError(str(error)) from None
    try:
        redis, _ = connect(args.redis)
    except ValueError as error:
        raise UsageError(f"--redis: {error}") from None
    stream = f"{PROG}-demo-{secrets.token_hex(4)}"
    try:
        await _ping(redis)
        return await _demo(args, mode, stream)
    finally:
        with contextlib.suppress(Exception):
            await redis.delete(stream, f"{stream}:dead")
        await redis.aclose()


async def _ping(redis: Any) -> None:
    try:
        await asyncio.wait_for(redis.ping(), 5.0)
    except Exception as error:  # the URL may hold a password: never echo it
        raise UsageError(f"cannot reach Redis (--redis): {type(error).__name__}: {error}"
                         ) from None


async def _demo(args: argparse.Namespace, mode: str, stream: str) -> int:
    events = shop_traffic(args.seed, events=args.events, shoppers=args.shoppers)
    async with FakeVoyado(rate_limit=math.ceil(args.rate) + 2) as fake:
        if args.chaos:
            fake.chaos(Chaos(seed=args.seed, error_rate=args.error_rate,
                             rate_limit_rate=args.rate_limit_rate, retry_after=0.05,
                             drop_rate=args.drop_rate))
        print(
            f"{PROG} demo --fleet: {args.workers} workers and {args.forwarders} forwarders "
            f"sharing {args.rate:g} requests/s, {args.shoppers} shoppers, {args.events} "
            f"events (seed {args.seed}) over ~{args.duration:g} s, through stream {stream} "
            f"to FakeVoyado at {fake.url} (its limit: {fake.rate_limit} requests/s)"
            + (" with injected faults" if args.chaos else ""),
            flush=True,
        )
        stats, timing, claimed = await _run_fleet(args, mode, stream, fake, events)
        busiest = fake.max_requests_in_any_window()
        mails = DemoMails(fake, events)
        checks = [
            *check_delivery(fake, events, stats),
            mails.check(),
            (busiest <= args.rate + 1,
             f"busiest one-second window at Voyado: {busiest} requests, within the shared "
             f"rate {args.rate:g} + 1"),
        ]
        print(report(events, stats, fake, timing, sink="fleet").rstrip("\n"))
        print("\n".join(mails.report_lines()))
        print(f"  workers / forwarders     {args.workers:>4} / {args.forwarders}  "
              f"({claimed} entries claimed from a stopped forwarder)\n")
    return verdict(checks)


async def _run_fleet(
    args: argparse.Namespace, mode: str, stream: str, fake: FakeVoyado, events: Sequence[Event]
) -> tuple[BufferStats, Timing, int]:
    """Start the forwarders and workers, play the traffic, drain; the fleet's counters."""
    from ..redis import Forwarder, RedisRateLimiter

    settings = flush_settings(args)
    limiter = RedisRateLimiter(args.redis, rate=args.rate)
    workers = FleetWorkers(_plans(args, stream, events))
    total = len(events)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(limiter.aclose)
        forwarders = []
        for _ in range(args.forwarders):
            client = await stack.enter_async_context(TrackingClient(
                fake.url, fake.api_key, user_agent=f"VoyadoTrackingDemo/{version}",
                timeout=5.0, rate_limiter=limiter,
            ))
            forwarders.append(await stack.enter_async_context(
                Forwarder(client, args.redis, settings, stream=stream)))
        stack.push_async_callback(workers.stop)
        try:
            await workers.start()
        except RuntimeError:
            raise UsageError("a worker process of the fleet demo did not start "
                             "(its error is above)") from None

        def poll() -> tuple[int, int | None, str]:
            done = workers.enqueued()
            return done, total, f"enqueued {done}  {stats_text(_sum(f.stats for f in forwarders))}"

        async with progress(mode, "fleet traffic", poll, 1.0):
            started = time.monotonic()
            outboxes = _counters(workers, await workers.play(), args.workers, total)
            traffic_done = time.monotonic()
            with contextlib.suppress(TimeoutError):  # the checks tell what is left
                await forwarders[0].flush(timeout=settings.shutdown_timeout)
            for forwarder in forwarders:
                await forwarder.aclose()
        drained = time.monotonic()
    left = await _left_in_stream(args.redis, stream)
    stats = _fleet_stats([f.stats for f in forwarders], outboxes, left)
    timing = Timing(traffic_done - started, drained - traffic_done)
    return stats, timing, sum(f.stats.claimed for f in forwarders)


async def _left_in_stream(redis_url: str, stream: str) -> int:
    from ..redis._stream import connect

    redis, _ = connect(redis_url)
    try:
        return int(await redis.xlen(stream))
    finally:
        await redis.aclose()


def _sum(stats: Any) -> BufferStats:
    """The counters of several forwarders, added up (the delay figures, which do not add
    up, are left at their defaults)."""
    snapshots = list(stats)
    return BufferStats(**{
        field.name: sum(getattr(s, field.name) for s in snapshots)
        for field in attrs.fields(BufferStats)
        if field.type in (int, "int")
    })


def _fleet_stats(
    forwarders: Sequence[BufferStats], outboxes: Sequence[dict[str, int]], left: int
) -> BufferStats:
    """The fleet as one buffer: events enqueued by the workers, collapsed or dropped in
    outboxes or forwarders, sent by the forwarders; "spooled" counts all left behind:
    spooled or unwritten by a worker, released by a forwarder, or left in the stream."""
    total = _sum(forwarders)

    def outbox(name: str) -> int:
        return sum(o.get(name, 0) for o in outboxes)

    return attrs.evolve(
        total,
        enqueued=outbox("enqueued"),
        collapsed=total.collapsed + outbox("collapsed"),
        dropped=total.dropped + outbox("dropped"),
        spooled=total.spooled + outbox("spooled") + outbox("pending") + left,
    )


def _plans(args: argparse.Namespace, stream: str, events: Sequence[Event]) -> list[WorkerPlan]:
    """Worker ``i`` takes the events ``i, i + N, ...``, each at its time in the schedule."""
    due = schedule(events, args.duration)
    plans = []
    for worker in range(args.workers):
        share = events[worker::args.workers]
        plans.append(WorkerPlan(events=share, due=[due(event) for event in share],
                                redis=args.redis, stream=stream,
                                max_pending=max(50_000, len(share))))
    return plans


def _counters(
    workers: FleetWorkers, statuses: Sequence[int], count: int, total: int
) -> list[dict[str, int]]:
    """Each worker's final counters; a worker that failed counts what it did not report as
    written to Redis as left behind."""
    counters = []
    for n, status in enumerate(statuses):
        latest = workers.latest[n]
        if status != 0 or not latest.get("final"):
            print(f"{PROG}: worker {n} exited with status {status}", file=sys.stderr)
            unwritten = len(range(n, total, count))
            latest = {"enqueued": unwritten, "pending": unwritten}
        counters.append(latest)
    return counters
