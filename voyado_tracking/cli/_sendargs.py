"""What ``send FILE.jsonl`` and ``send --journal DIR`` share: the client and the buffer
settings their flags (and ``VOYADO_BASE_URL`` / ``VOYADO_API_KEY``) describe."""

from __future__ import annotations

import argparse
import os

from .. import FlushSettings, RetryPolicy, TrackingClient
from ._common import UsageError

__all__ = ["client_from_args", "send_flush_settings"]


def _connection(args: argparse.Namespace) -> tuple[str, str]:
    base_url = args.base_url or os.environ.get("VOYADO_BASE_URL", "")
    api_key = args.api_key or os.environ.get("VOYADO_API_KEY", "")
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
        shutdown_timeout=5.0,
    )
