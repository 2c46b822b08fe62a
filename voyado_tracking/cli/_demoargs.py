"""The ``demo`` command's options, and which demo they ask for: the in-process one, or the
fleet on Redis Streams (``--fleet``). Both load :mod:`voyado_tracking.testing` only when they
run, so building the parser never does."""

from __future__ import annotations

import argparse
import asyncio

from ._common import Commands, UsageError, per_second, positive_int, probability, seconds

__all__ = ["add_demo", "run_demo_command"]


def add_demo(commands: Commands, progress: argparse.ArgumentParser) -> None:
    demo = commands.add_parser(
        "demo", parents=[progress],
        help="simulate shop traffic against an in-process fake Voyado and check the result",
        description="Start FakeVoyado in-process, drive simulated shoppers (browsing, adding "
        "and removing items, checking out) through a TrackingBuffer while the fake injects "
        "faults, then report and CHECK that Voyado holds the latest update of every cart and "
        "every product view, and that no checked-out cart would get Engage's abandoned-cart "
        "mail 30 minutes later (the report counts the mails it would send). Exit 0 only if "
        "the checks hold.",
    )
    demo.add_argument("--shoppers", type=positive_int, default=300,
                      help="concurrent shoppers (default 300)")
    demo.add_argument("--events", type=positive_int, default=15_000,
                      help="stop after this many events (default 15000)")
    demo.add_argument("--duration", type=seconds, default=8.0,
                      help="spread the traffic over about this many seconds, and stop "
                      "after them (default 8)")
    demo.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    demo.add_argument("--batch-size", type=positive_int, default=500,
                      help="FlushSettings.max_batch_size (default 500)")
    demo.add_argument("--flush-interval", type=seconds, default=0.5,
                      help="FlushSettings.flush_interval in seconds (default 0.5)")
    demo.add_argument("--no-chaos", dest="chaos", action="store_false",
                      help="no injected faults")
    demo.add_argument("--error-rate", type=probability, default=0.08,
                      help="share of requests answered 5xx (default 0.08)")
    demo.add_argument("--rate-limit-rate", type=probability, default=0.04,
                      help="share of requests answered 429 + Retry-After (default 0.04)")
    demo.add_argument("--drop-rate", type=probability, default=0.02,
                      help="share of connections dropped without an answer (default 0.02)")
    _add_fleet_options(demo)


def _add_fleet_options(demo: argparse.ArgumentParser) -> None:
    fleet = demo.add_argument_group(
        "fleet mode", "with --fleet, worker processes enqueue the traffic into RedisOutbox "
        "instances and forwarders deliver the stream through one shared RedisRateLimiter "
        "(needs the redis extra: pip install 'voyado-tracking[redis]')",
    )
    fleet.add_argument("--fleet", action="store_true",
                       help="run the traffic through a fleet on Redis Streams")
    fleet.add_argument("--redis", metavar="URL",
                       help="the Redis the fleet shares, e.g. redis://localhost:6379/0 "
                       "(the demo writes a stream of its own and removes it at the end)")
    fleet.add_argument("--workers", type=positive_int, default=4,
                       help="worker processes, each taking its share of the events "
                       "(default 4)")
    fleet.add_argument("--forwarders", type=positive_int, default=2,
                       help="forwarders delivering the stream (default 2)")
    fleet.add_argument("--rate", type=per_second, default=10.0,
                       help="requests/s the forwarders share; the fake refuses requests a "
                       "little above it (default 10)")


def run_demo_command(args: argparse.Namespace, mode: str) -> int:
    """The ``demo`` command, in-process or with ``--fleet``; returns the exit status."""
    if args.fleet:
        from ._fleetdemo import run_fleet_demo

        return asyncio.run(run_fleet_demo(args, mode))
    if args.redis is not None:
        raise UsageError("--redis only applies to demo --fleet")
    from ._demo import run_demo

    return asyncio.run(run_demo(args, mode))
