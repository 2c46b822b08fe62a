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
``forward --redis URL``
    Fleet mode: delivers the Redis stream that RedisOutbox instances write.
``tune --events-per-second R``
    Simulates a shop's traffic through the buffer's store in virtual time and recommends
    flush settings that meet a delay and a requests/s budget.

``demo`` and ``fake-server`` import :mod:`voyado_tracking.testing` (and aiohttp's server)
when they run, so the other commands never load them. Each command's module adds its own
parser (``add_demo``, ``add_fake_server``, ...); this module assembles them and dispatches.

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

from .._version import __version__
from ._common import (
    EXIT_FAILED,
    EXIT_USAGE,
    PROG,
    Commands,
    UsageError,
    non_negative,
    positive_int,
    seconds,
)
from ._demoargs import add_demo, run_demo_command
from ._fakeserver import add_fake_server
from ._forward import add_forward, run_forward
from ._progress import configure_logging, progress_mode, progress_options
from ._send import run_send
from ._sendargs import add_send_limits
from ._tune import add_tune

__all__ = ["main"]


# -- argument parsing: each command adds its own parser ------------------------------------


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

    progress = progress_options()
    add_demo(commands, progress)
    _add_send(commands, progress)
    add_fake_server(commands)
    add_forward(commands)
    add_tune(commands)
    return parser


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
        "undelivered, 2 usage error, 130 after SIGINT, 143 after SIGTERM.",
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
    add_send_limits(send)


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
            return run_demo_command(args, mode)
        return asyncio.run(run_send(args, mode))
    except UsageError as error:
        parser.exit(EXIT_USAGE, f"{PROG}: error: {error}\n")
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_FAILED

