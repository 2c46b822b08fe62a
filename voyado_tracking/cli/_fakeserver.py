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

import orjson

from .._transport import is_loopback
from ..testing import Chaos, FakeVoyado
from ..testing._contacts import load_contacts
from ..testing._fake import STATE_PATH
from ._common import EXIT_OK, PROG, UsageError, on_interrupt

__all__ = ["run_fake_server"]


def _fake(args: argparse.Namespace) -> FakeVoyado:
    if not is_loopback(args.host) and not args.public:
        raise UsageError(f"--host {args.host} is not a loopback address; add --public to "
                         "serve the fake on the network")
    if not 0 <= args.port <= 65535:
        raise UsageError("--port must be between 0 and 65535")
    if args.dump is not None and not os.access(Path(args.dump).parent, os.W_OK):
        raise UsageError(f"cannot write --dump {args.dump}: its directory is not writable")
    fake = FakeVoyado(api_key=args.api_key, host=args.host, port=args.port,
                      rate_limit=args.rate_limit)
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
    fake = _fake(args)
    try:
        await fake.start()
    except OSError as error:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {error.strerror}") from None
    stop = asyncio.Event()
    try:
        with on_interrupt(stop.set):
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
