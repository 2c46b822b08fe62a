"""What ``send FILE.jsonl`` and ``send --journal DIR`` share: the client and the buffer
settings their flags (and ``VOYADO_BASE_URL`` / ``VOYADO_API_KEY``) describe, their limits,
and how a signal stops them.

SIGINT or SIGTERM stops reading at once; what is queued then gets ``--shutdown-timeout``
seconds to be delivered, the rest is spooled (or left in the journal), and the command exits
128 + the signal's number: 130 after SIGINT, 143 after SIGTERM. A second signal while it
shuts down does not cut that short (the timeout bounds it).
"""

from __future__ import annotations

import argparse
from typing import Final

from .. import FlushSettings, RetryPolicy, TrackingClient
from ._common import UsageError, positive_int, seconds, voyado_environment

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "add_send_limits",
    "client_from_args",
    "send_flush_settings",
]

DEFAULT_MAX_LINE_BYTES: Final = 1 << 20
DEFAULT_SHUTDOWN_TIMEOUT: Final = 5.0


def add_send_limits(send: argparse.ArgumentParser) -> None:
    """The options of ``send`` that bound its memory and its shutdown."""
    send.add_argument(
        "--max-line-bytes", type=positive_int, default=DEFAULT_MAX_LINE_BYTES, metavar="N",
        help="skip (and report by line number) lines longer than N bytes, without holding "
        f"them in memory (default {DEFAULT_MAX_LINE_BYTES}, 1 MiB)",
    )
    send.add_argument(
        "--shutdown-timeout", type=seconds, default=DEFAULT_SHUTDOWN_TIMEOUT, metavar="SECONDS",
        help="after SIGINT or SIGTERM (or at the end), deliver for at most this long, then "
        "spool the rest; a signal exits 130 (SIGINT) or 143 (SIGTERM) "
        f"(default {DEFAULT_SHUTDOWN_TIMEOUT:g})",
    )


def _connection(args: argparse.Namespace) -> tuple[str, str]:
    env = voyado_environment()
    base_url = args.base_url or env.base_url
    api_key = args.api_key or env.api_key
    missing = [
        what
        for what, value in (("--base-url or VOYADO_BASE_URL", base_url),
                            ("--api-key or VOYADO_API_KEY", api_key))
        if not value.strip()
    ]
    if missing:
        raise UsageError(f"missing {' and '.join(missing)} (or use --dry-run)")
    return base_url.strip(), api_key.strip()


def client_from_args(args: argparse.Namespace) -> TrackingClient | None:
    """The client the flags and environment describe; None for ``--dry-run``."""
    if args.dry_run:
        return None
    base_url, api_key = _connection(args)
    try:
        return TrackingClient(
            base_url,
            api_key,
            user_agent=args.user_agent,
            timeout=args.timeout,
            max_batch_size=args.batch_size,
            max_requests_per_second=args.max_rps if args.max_rps > 0 else None,
        )
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None  # never contains the key


def send_flush_settings(args: argparse.Namespace) -> FlushSettings:
    """The buffer settings of ``send``: batches of ``--batch-size``, retries for ``--retry-for``."""
    return FlushSettings(
        max_batch_size=args.batch_size,
        flush_interval=0.2,
        max_pending=max(10_000, 4 * args.batch_size),
        retry=RetryPolicy(
            max_attempts=None,
            initial_backoff=min(1.0, args.retry_for),
            max_backoff=max(min(30.0, args.retry_for), min(1.0, args.retry_for)),
            max_elapsed=args.retry_for,
        ),
        shutdown_timeout=args.shutdown_timeout,
    )
