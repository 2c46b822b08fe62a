"""``voyado-tracking send --journal DIR``: deliver what a journal directory holds.

For a host that will not run the app again: a TrackingBuffer with a journal on *DIR*
recovers the files of processes that are gone (as the app would at its next start) and
delivers them, with progress; what it cannot deliver stays in the journal.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from .. import BufferStats, Journal, TrackingBuffer, TrackingClient
from .._wire import Event
from ._common import EXIT_FAILED, EXIT_OK, PROG, UsageError, stop_on_signals
from ._progress import progress, stats_text
from ._sendargs import client_from_args, send_flush_settings

__all__ = ["run_send_journal"]


def _journal(args: argparse.Namespace) -> Journal:
    directory = Path(args.journal)
    if args.file is not None:
        raise UsageError("give FILE.jsonl or --journal DIR, not both")
    if args.dry_run:
        raise UsageError("--dry-run reads an event file; it does not apply to --journal")
    if args.spool:
        raise UsageError("--spool does not apply to --journal: what is not delivered stays "
                         "in the journal")
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a directory")
    try:
        return Journal(directory, max_age=args.max_age)
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None


async def run_send_journal(args: argparse.Namespace, mode: str) -> int:
    """``send --journal DIR``; returns the exit status."""
    journal = _journal(args)
    client = client_from_args(args)
    assert client is not None  # not a dry run
    async with client:
        return await _deliver(client, journal, args, mode)


async def _deliver(
    client: TrackingClient, journal: Journal, args: argparse.Namespace, mode: str
) -> int:
    settings = send_flush_settings(args)
    dead: list[tuple[Event, str]] = []
    buffer = TrackingBuffer(client, settings, journal=journal,
                            on_dead_letter=lambda event, error: dead.append((event, str(error))))

    def poll() -> tuple[int, int | None, str]:
        stats = buffer.stats
        return stats.sent, None, f"recovered {stats.recovered}  {stats_text(stats)}"

    async with progress(mode, "delivering the journal", poll, 2.0):
        flushing = asyncio.get_running_loop().create_task(buffer.flush())
        # Through the shutdown too: a second signal must not cut the close short.
        with stop_on_signals(lambda: _cancel(flushing)) as stop:
            try:
                await flushing
            except asyncio.CancelledError:
                if stop.signal is None:
                    raise
                print(f"{PROG}: stopped by {stop.signal.name}; what is not delivered stays in "
                      "the journal", file=sys.stderr)
            finally:
                await buffer.aclose(timeout=settings.shutdown_timeout)
    status = _report(buffer.stats, journal, dead)
    return status if stop.exit_status is None else stop.exit_status


def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()


def _report(stats: BufferStats, journal: Journal, dead: list[tuple[Event, str]]) -> int:
    for _, reason in dead[:10]:
        print(f"{PROG}: not delivered: {reason}", file=sys.stderr)
    if len(dead) > 10:
        print(f"{PROG}: ... and {len(dead) - 10} more not delivered", file=sys.stderr)
    print(
        f"recovered {stats.recovered} events from {journal.directory}; sent {stats.sent} in "
        f"{stats.requests} requests ({stats.collapsed} cart updates collapsed); "
        f"dead-lettered {stats.dead_lettered}, dropped {stats.dropped} (expired), "
        f"left in the journal {stats.spooled}"
    )
    if stats.journal_errors:
        print(f"{PROG}: {stats.journal_errors} journal errors (see the log above)",
              file=sys.stderr)
    failed = stats.dead_lettered + stats.dropped + stats.spooled + stats.journal_errors
    return EXIT_OK if failed == 0 else EXIT_FAILED
