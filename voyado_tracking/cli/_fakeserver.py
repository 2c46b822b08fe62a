"""``voyado-tracking fake-server``: FakeVoyado standalone, until SIGINT or SIGTERM.

What it received can be read while it runs (``GET /_fake/state``) and, with ``--dump FILE``,
is written to FILE as JSON when it stops. ``--contacts FILE`` registers contacts for the
lookup endpoint (JSON Lines, see :func:`voyado_tracking.testing._contacts.load_contacts`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from .._transport import is_loopback
from ._common import (
    EXIT_OK,
    PROG,
    Commands,
    UsageError,
    non_negative,
    positive_int,
    probability,
    stop_on_signals,
)

if TYPE_CHECKING:
    from ..testing import FakeVoyado

__all__ = ["add_fake_server", "run_fake_server"]


def add_fake_server(commands: Commands) -> None:
    fake = commands.add_parser(
        "fake-server",
        help="run a fake Voyado tracking API on loopback",
        description="Run FakeVoyado standalone. Prints 'VOYADO_BASE_URL=... "
        "VOYADO_API_KEY=...' on one line of stdout, then serves until Ctrl-C or SIGTERM. "
        "GET <url>/_fake/state shows what it received: carts by latest time, product views, "
        "request counts, the log of the last 10,000 requests (time, path, status, events), "
        "the busiest second, the cart updates received and the mails Engage would send by "
        "now, as JSON.",
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
    fake.add_argument("--abandon-after", type=non_negative, default=1800.0, metavar="SECONDS",
                      help="idle time before Engage's abandoned-cart and abandoned-browse "
                      "mails, as the fake emulates them in engageMails (default 1800)")
    fake.add_argument("--dump", metavar="FILE",
                      help="on exit (Ctrl-C or SIGTERM), write what the fake received to FILE "
                      "as JSON: the same data as GET /_fake/state while it runs")


def _fake(args: argparse.Namespace) -> FakeVoyado:
    # Imported here: the testing helpers (and aiohttp's server) load only for this command.
    from ..testing import Chaos, FakeVoyado

    if not is_loopback(args.host) and not args.public:
        raise UsageError(f"--host {args.host} is not a loopback address; add --public to "
                         "serve the fake on the network")
    if not 0 <= args.port <= 65535:
        raise UsageError("--port must be between 0 and 65535")
    if args.dump is not None and not os.access(Path(args.dump).parent, os.W_OK):
        raise UsageError(f"cannot write --dump {args.dump}: its directory is not writable")
    fake = FakeVoyado(api_key=args.api_key, host=args.host, port=args.port,
                      rate_limit=args.rate_limit, abandon_after=args.abandon_after)
    fake.latency = args.latency
    for contact in _contacts(args.contacts):
        fake.add_contact(**contact)
    if args.error_rate or args.rate_limit_rate or args.drop_rate:
        fake.chaos(Chaos(seed=args.seed, error_rate=args.error_rate,
                         rate_limit_rate=args.rate_limit_rate, drop_rate=args.drop_rate,
                         retry_after=args.retry_after))
    return fake


async def run_fake_server(args: argparse.Namespace) -> int:
    """The ``fake-server`` command; returns the exit status."""
    from ..testing._fake import STATE_PATH

    fake = _fake(args)
    try:
        await fake.start()
    except OSError as error:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {error.strerror}") from None
    stop = asyncio.Event()
    try:
        with stop_on_signals(stop.set):
            print(f"VOYADO_BASE_URL={fake.url} VOYADO_API_KEY={fake.api_key}", flush=True)
            print(f"{PROG}: FakeVoyado listening (what it received: GET {fake.url}"
                  f"{STATE_PATH}); Ctrl-C to stop", file=sys.stderr, flush=True)
            if fake.contacts:
                print(f"{PROG}: {len(fake.contacts)} contacts for GET {fake.url}"
                      "/api/v3/contacts/id", file=sys.stderr, flush=True)
            await stop.wait()
    finally:
        await fake.close()
    if args.dump is not None:
        _dump(fake, Path(args.dump))
    print(
        f"{PROG}: stopped after {len(fake.requests)} requests: {len(fake.product_views)} "
        f"product views, {len(fake.cart_updates)} cart updates ({len(fake.carts)} carts)",
        file=sys.stderr,
    )
    return EXIT_OK


def _contacts(path: str | None) -> list[dict[str, str]]:
    from ..testing._contacts import load_contacts

    if path is None:
        return []
    try:
        with open(path, encoding="utf-8") as lines:
            return load_contacts(lines)
    except OSError as error:
        raise UsageError(f"cannot read --contacts {path}: {error.strerror}") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise UsageError(f"--contacts {path}: {error}") from None


def _dump(fake: FakeVoyado, path: Path) -> None:
    try:
        path.write_bytes(orjson.dumps(fake.state(), option=orjson.OPT_INDENT_2))
    except OSError as error:
        print(f"{PROG}: could not write {path}: {error.strerror}", file=sys.stderr)
