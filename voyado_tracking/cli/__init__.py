"""The ``voyado-tracking`` command line (also ``python -m voyado_tracking``).

``demo``
    Starts a FakeVoyado in-process, drives simulated shop traffic through a TrackingBuffer
    while the fake injects faults, and checks that Voyado ends up with every product view and
    the latest update of every cart.
``send FILE.jsonl``
    Sends an event file (or replays a buffer's spool) through a TrackingBuffer, with
    backpressure. Bad lines are reported on stderr by line number and skipped.
``send --journal DIR``
    Delivers what a journal directory holds (the journals of processes that are gone).
``fake-server``
    Runs FakeVoyado standalone, for trying an app against it by hand.
``tune --events-per-second R``
    Simulates a shop's traffic through the buffer's store in virtual time and recommends
    flush settings that meet a delay and a requests/s budget.

``demo`` and ``fake-server`` import :mod:`voyado_tracking.testing` (and aiohttp's server)
when they run, so the other commands never load them.

Output: live progress on stderr (rich when stderr is a terminal and rich is installed, plain
periodic lines otherwise), results on stdout. Exit status: 0 everything delivered (or valid),
1 some lines invalid or events undelivered, 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import TypeAlias

from .._version import __version__
from ._common import (
    EXIT_FAILED,
    EXIT_USAGE,
    PROG,
    UsageError,
    bounded_float,
    non_negative,
    per_second,
    positive_int,
    probability,
    seconds,
)
from ._forward import add_forward, run_forward
from ._progress import configure_logging, progress_mode
from ._send import run_send

__all__ = ["main"]

Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
MAX_TUNE_RATE = 100_000


# -- argument parsing --------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Send cart updates and product views to Voyado Engage; demo and test tools.",
        epilog="Exit status: 0 all delivered, 1 some lines invalid or events undelivered, "
        "2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    progress = argparse.ArgumentParser(add_help=False)
    progress.add_argument(
        "--progress", choices=("auto", "rich", "plain", "none"), default="auto",
        help="live progress on stderr: rich bar on a terminal, plain lines otherwise (auto)",
    )
    progress.add_argument("-v", "--verbose", action="store_true",
                          help="log every retry and failure of the library")

    _add_demo(commands, progress)
    _add_send(commands, progress)
    _add_fake_server(commands)
    add_forward(commands)
    _add_tune(commands)
    return parser


def _add_demo(commands: Commands, progress: argparse.ArgumentParser) -> None:
    demo = commands.add_parser(
        "demo", parents=[progress],
        help="simulate shop traffic against an in-process fake Voyado and check the result",
        description="Start FakeVoyado in-process, drive simulated shoppers (browsing, adding "
        "and removing items, checking out) through a TrackingBuffer while the fake injects "
        "faults, then report and CHECK that Voyado holds the latest update of every cart and "
        "every product view. Exit 0 only if the checks hold.",
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
    _add_fleet_demo_options(demo)


def _add_fleet_demo_options(demo: argparse.ArgumentParser) -> None:
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


def _add_send(commands: Commands, progress: argparse.ArgumentParser) -> None:
    send = commands.add_parser(
        "send", parents=[progress],
        help="send a JSON Lines event file (or replay a spool) to Voyado",
        description="Send a JSON Lines event file through a TrackingBuffer: one "
        '{"type": "cart"|"product_view", "event": {...}} object per line, as written by the '
        "buffer's spool. Invalid lines are reported on stderr with their line number and "
        "skipped; the others are sent.",
        epilog="The API key is best passed in VOYADO_API_KEY (a flag is visible to other "
        "users of the machine). Exit status: 0 all delivered, 1 some lines invalid or events "
        "undelivered, 2 usage error.",
    )
    send.add_argument("file", metavar="FILE.jsonl", nargs="?",
                      help="event file, or - for stdin")
    send.add_argument("--journal", metavar="DIR",
                      help="instead of a file: deliver what the journal directory DIR holds "
                      "(files of processes that are gone), e.g. on a host that will not run "
                      "the app again")
    send.add_argument("--max-age", type=seconds, default=86_400.0,
                      help="with --journal: drop events journaled more than this many "
                      "seconds ago (default 86400)")
    send.add_argument("--base-url", help="e.g. https://<tenant>.voyado.com "
                      "(default: $VOYADO_BASE_URL)")
    send.add_argument("--api-key", help="Voyado API key (default: $VOYADO_API_KEY)")
    send.add_argument("--user-agent", default=f"VoyadoTrackingCli/{__version__}",
                      help="User-Agent sent to Voyado, as System/Version")
    send.add_argument("--batch-size", type=positive_int, default=500,
                      help="events per request (default 500)")
    send.add_argument("--timeout", type=seconds, default=10.0,
                      help="seconds per request (default 10)")
    send.add_argument("--retry-for", type=seconds, default=120.0,
                      help="give up on a batch after retrying this many seconds (default 120)")
    send.add_argument("--max-rps", type=non_negative, default=40.0,
                      help="client-side request rate limit, 0 for none (default 40)")
    send.add_argument("--spool", metavar="FILE",
                      help="append undelivered events to FILE (JSON Lines, replayable "
                      "with send)")
    send.add_argument("--dry-run", action="store_true",
                      help="validate the file only: send nothing, no URL or key needed")


def _add_fake_server(commands: Commands) -> None:
    fake = commands.add_parser(
        "fake-server",
        help="run a fake Voyado tracking API on loopback",
        description="Run FakeVoyado standalone. Prints 'VOYADO_BASE_URL=... "
        "VOYADO_API_KEY=...' on one line of stdout, then serves until Ctrl-C or SIGTERM. "
        "GET <url>/_fake/state shows what it received: carts by latest time, product views "
        "and request counts, as JSON.",
    )
    fake.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    fake.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    fake.add_argument("--api-key", default="test-api-key",
                      help="the key the fake accepts (default test-api-key)")
    fake.add_argument("--public", action="store_true",
                      help="allow a --host that is not a loopback address")
    fake.add_argument("--latency", type=non_negative, default=0.0,
                      help="seconds added to every answer (default 0)")
    fake.add_argument("--error-rate", type=probability, default=0.0,
                      help="share of requests answered 5xx")
    fake.add_argument("--rate-limit-rate", type=probability, default=0.0,
                      help="share of requests answered 429")
    fake.add_argument("--retry-after", type=non_negative, default=1.0,
                      help="Retry-After of the injected 429s, in seconds (default 1)")
    fake.add_argument("--drop-rate", type=probability, default=0.0,
                      help="share of connections dropped without an answer")
    fake.add_argument("--seed", type=int, default=0, help="random seed of the faults")
    fake.add_argument("--rate-limit", type=positive_int, default=None, metavar="N",
                      help="answer 429 + Retry-After to requests beyond N in any one-second "
                      "window, like Voyado's per-key limit (default: no limit)")
    fake.add_argument("--contacts", metavar="FILE",
                      help="contacts for the lookup endpoint GET /api/v3/contacts/id: JSON "
                      "Lines, one object a line with any of contactId, email, mobilePhone, "
                      "socialSecurityNumber, customKey, contactType")
    fake.add_argument("--dump", metavar="FILE",
                      help="on exit (Ctrl-C or SIGTERM), write what the fake received to FILE "
                      "as JSON: the same data as GET /_fake/state while it runs")


_events_per_second = bounded_float(
    "a number of events per second", lambda v: 0 < v <= MAX_TUNE_RATE,
    f"> 0 and at most {MAX_TUNE_RATE:,} (more never fits one API key's budget)",
)
_requests_per_second = bounded_float(
    "a number of requests per second", lambda v: 0 < v < float("inf"), "> 0"
)


def _add_tune(commands: Commands) -> None:
    tune = commands.add_parser(
        "tune",
        help="recommend flush settings for your traffic (simulated, in virtual time)",
        description="Simulate your traffic through the buffer's own pending store in "
        "virtual time (seconds of wall time), sweep max_batch_size and flush_interval, and "
        "print requests/s for the whole fleet, delivery delay (p50/p99/max), collapsed cart "
        "updates, peak pending events and memory, and the recommended FlushSettings.",
        epilog="Exit status: 0 a setting meets the limits (recommended), 1 none does (the "
        "output says which limit and what would meet it), 2 usage error.",
    )
    tune.add_argument("--events-per-second", type=_events_per_second, required=True,
                      metavar="R", help="events/s of the whole shop (all workers together)")
    tune.add_argument("--cart-share", type=probability, default=0.3, metavar="F",
                      help="share of the events that are cart updates (default 0.3)")
    tune.add_argument("--carts", type=positive_int, default=None, metavar="N",
                      help="active carts the updates spread over (default: each cart "
                      "updated about every 30 s)")
    tune.add_argument("--workers", type=positive_int, default=1, metavar="W",
                      help="processes, each with its own buffer, sharing the traffic "
                      "(default 1)")
    tune.add_argument("--max-delay", type=seconds, default=10.0, metavar="S",
                      help="p99 delivery delay allowed, in seconds (default 10)")
    tune.add_argument("--max-requests-per-second", type=_requests_per_second, default=40.0,
                      metavar="Q", help="the whole fleet's budget for the API key "
                      "(default 40; Voyado asks for under 50)")
    tune.add_argument("--request-time", type=seconds, default=0.05, metavar="SECONDS",
                      help="how long one request takes, Voyado's answer included "
                      "(default 0.05)")
    tune.add_argument("--seed", type=int, default=0, help="random seed of the traffic")


def _run_demo(args: argparse.Namespace, mode: str) -> int:
    if args.fleet:
        from ._fleetdemo import run_fleet_demo

        return asyncio.run(run_fleet_demo(args, mode))
    if args.redis is not None:
        raise UsageError("--redis only applies to demo --fleet")
    from ._demo import run_demo

    return asyncio.run(run_demo(args, mode))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "tune":
            from ._tune import run_tune

            return run_tune(args)
        if args.command == "fake-server":
            from ._fakeserver import run_fake_server

            return asyncio.run(run_fake_server(args))
        if args.command == "forward":
            configure_logging("plain", logging.WARNING)
            return asyncio.run(run_forward(args))
        mode = progress_mode(args.progress, sys.stderr)
        default_level = logging.ERROR if args.command == "demo" else logging.WARNING
        configure_logging(mode, logging.INFO if args.verbose else default_level)
        if args.command == "demo":
            return _run_demo(args, mode)
        return asyncio.run(run_send(args, mode))
    except UsageError as error:
        parser.exit(EXIT_USAGE, f"{PROG}: error: {error}\n")
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_FAILED

