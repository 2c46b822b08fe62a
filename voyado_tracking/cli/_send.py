"""``voyado-tracking send FILE.jsonl``: an event file (or a spool) through a TrackingBuffer.

Lines are read as they arrive (see ``_input``) and handed over with ``await buffer.put()``,
so a file or stream of any size and shape runs in bounded memory. Bad lines (invalid, or
longer than ``--max-line-bytes``) are reported by number and skipped; the good ones are sent.

Every line seen is accounted for, in the summary on stdout::

    lines = read + invalid + too long + blank + unread
    read  = sent + collapsed + dead-lettered + spooled + dropped

"unread" counts the lines a signal left unread: the rest of a file (counted after the stop),
or of a stream what had arrived (its sender may have had more). The event in hand when the
signal came, waiting for room in the buffer, is spooled (or counted dropped without a spool).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs

from .. import BufferStats, Cart, InvalidEventError, TrackingBuffer, TrackingClient
from .._eventfile import append_events, parse_line
from .._wire import Event
from ._common import EXIT_FAILED, EXIT_OK, PROG, Stop, UsageError, stop_on_signals
from ._input import TOO_LONG, Input, open_input
from ._progress import progress, stats_text
from ._sendargs import client_from_args, send_flush_settings

__all__ = ["run_send"]

Put = Callable[[Event], Awaitable[None]]


@attrs.define
class _Counts:
    """What became of the lines seen (see the module docstring)."""

    lines: int = 0
    read: int = 0
    product_views: int = 0
    carts: int = 0
    invalid: int = 0
    too_long: int = 0
    blank: int = 0
    unread: int = 0
    batch_left: int = 0  # lines of the current batch not processed yet
    in_hand: Event | None = None  # read, waiting for room in the buffer
    in_hand_spooled: int = 0
    in_hand_dropped: int = 0
    dead_letters: list[tuple[Event, str]] = attrs.field(factory=list)
    dropped: list[Event] = attrs.field(factory=list)


async def _pump(source: Input, counts: _Counts, put: Put | None) -> None:
    """Read, check and hand over every line (*put* None: a dry run)."""
    name, limit = source.source, source.max_line_bytes
    async for batch in source.batches():
        counts.batch_left = len(batch)
        for raw in batch:
            counts.batch_left -= 1
            counts.lines += 1
            if raw is TOO_LONG:
                counts.too_long += 1
                print(f"{name}:{counts.lines}: skipped: line is longer than --max-line-bytes "
                      f"({limit} bytes)", file=sys.stderr)
                continue
            try:
                event = parse_line(raw, counts.lines)
            except InvalidEventError as error:
                counts.invalid += 1
                print(f"{name}:{counts.lines}: skipped: {error.field} {error.problem}",
                      file=sys.stderr)
                continue
            if event is None:
                counts.blank += 1
                continue
            counts.read += 1
            if isinstance(event, Cart):
                counts.carts += 1
            else:
                counts.product_views += 1
            if put is not None:
                counts.in_hand = event
                await put(event)
                counts.in_hand = None


def _spool_path(args: argparse.Namespace) -> Path | None:
    spool = Path(args.spool) if args.spool else None
    if spool is not None and not os.access(spool.parent, os.W_OK):
        raise UsageError(f"cannot write the spool file {spool}: its directory is not writable")
    if spool is not None and args.file != "-":
        with contextlib.suppress(OSError):
            if spool.exists() and spool.samefile(args.file):
                raise UsageError("--spool must not be the file being sent")
    return spool


async def run_send(args: argparse.Namespace, mode: str) -> int:
    """The ``send`` command; returns the exit status."""
    if args.journal is not None:
        from ._journal import run_send_journal

        return await run_send_journal(args, mode)
    if args.file is None:
        raise UsageError("give FILE.jsonl (or - for stdin), or --journal DIR")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be >= 1")
    if args.timeout <= 0 or args.retry_for <= 0:
        raise UsageError("--timeout and --retry-for must be > 0")
    client = client_from_args(args)
    spool = _spool_path(args)
    source = open_input(args.file, args.max_line_bytes)
    try:
        if client is None:
            return await _validate_only(source, mode)
        async with client:
            return await _deliver(client, source, spool, args, mode)
    finally:
        source.close()


async def _pumping(counts: _Counts, stop: Stop, pumping: asyncio.Task[None]) -> None:
    """Wait for *pumping* to end, or for the signal that cancels it."""
    try:
        await pumping
    except asyncio.CancelledError:
        if stop.signal is None:
            raise
        counts.unread += counts.batch_left
        print(f"{PROG}: stopped by {stop.signal.name} after line {counts.lines}",
              file=sys.stderr)


async def _validate_only(source: Input, mode: str) -> int:
    counts = _Counts()
    poll = _poll(source, counts, lambda: "")
    async with progress(mode, "validating", poll, 2.0):
        pumping = asyncio.get_running_loop().create_task(_pump(source, counts, None))
        with stop_on_signals(lambda: _cancel(pumping)) as stop:
            await _pumping(counts, stop, pumping)
            if stop.signal is not None:
                counts.unread += await source.count_unread()
    print(f"dry run: {_lines_text(counts, source)}; {counts.read} valid events "
          f"({counts.product_views} product views, {counts.carts} cart updates); nothing sent")
    if stop.exit_status is not None:
        return stop.exit_status
    return EXIT_OK if counts.invalid + counts.too_long == 0 else EXIT_FAILED


def _poll(source: Input, counts: _Counts, status: Callable[[], str]
          ) -> Callable[[], tuple[int, int | None, str]]:
    def poll() -> tuple[int, int | None, str]:
        skipped = counts.invalid + counts.too_long
        return source.read_bytes, source.size, f"{counts.lines} lines  skipped {skipped}{status()}"

    return poll


async def _deliver(
    client: TrackingClient,
    source: Input,
    spool: Path | None,
    args: argparse.Namespace,
    mode: str,
) -> int:
    settings = send_flush_settings(args)
    counts = _Counts()
    buffer = TrackingBuffer(
        client,
        settings,
        on_dead_letter=lambda event, error: counts.dead_letters.append((event, str(error))),
        on_drop=lambda event, reason: counts.dropped.append(event),
        spool_path=spool,
    )

    async def pump() -> None:
        await _pump(source, counts, buffer.put)
        await buffer.flush()

    poll = _poll(source, counts, lambda: f"  {stats_text(buffer.stats)}")
    async with progress(mode, "sending", poll, 2.0):
        pumping = asyncio.get_running_loop().create_task(pump())
        # The handlers stay through the shutdown: a signal then must not kill the process
        # before it has spooled what it holds.
        with stop_on_signals(lambda: _cancel(pumping)) as stop:
            try:
                await _pumping(counts, stop, pumping)
            finally:
                if counts.in_hand is not None:
                    _dispose_in_hand(counts, spool)
                closing = buffer.aclose(timeout=settings.shutdown_timeout)
                if stop.signal is None:
                    await closing
                else:  # the count of what was left unread runs while the buffer drains
                    _, unread = await asyncio.gather(closing, source.count_unread())
                    counts.unread += unread
    status = _send_report(buffer.stats, counts, source, spool)
    return status if stop.exit_status is None else stop.exit_status


def _dispose_in_hand(counts: _Counts, spool: Path | None) -> None:
    """The event that waited for room when the signal came: spooled, else counted dropped."""
    event, counts.in_hand = counts.in_hand, None
    assert event is not None
    if spool is not None and _append(spool, [event], reason="interrupted"):
        counts.in_hand_spooled += 1
    else:
        counts.in_hand_dropped += 1


def _append(spool: Path, events: list[Event], reason: str) -> bool:
    """Append to the spool through the library's writer (a new file is private: 0600)."""
    try:
        append_events(spool, events, reason=reason)
    except OSError as error:
        print(f"{PROG}: could not write the spool file {spool}: {error.strerror or error}",
              file=sys.stderr)
        return False
    return True


def _spool_failures(counts: _Counts, spool: Path) -> None:
    """Append what was dead-lettered or dropped to the spool (the buffer spools the rest)."""
    for reason, group in itertools.groupby(counts.dead_letters, key=lambda pair: pair[1]):
        if not _append(spool, [event for event, _ in group], f"dead_lettered: {reason}"):
            return
    if counts.dropped:
        _append(spool, counts.dropped, "dropped")


def _lines_text(counts: _Counts, source: Input) -> str:
    unread = f"unread {counts.unread}"
    if not source.unread_exact:
        unread = f"unread at least {counts.unread}"
    elif source.stream_left_open:
        unread += f" (and whatever else {source.source} had: it was still open)"
    total = counts.lines + counts.unread
    return (f"lines {total} = read {counts.read} + invalid {counts.invalid} + too long "
            f"{counts.too_long} + blank {counts.blank} + {unread}")


def _send_report(stats: BufferStats, counts: _Counts, source: Input, spool: Path | None) -> int:
    for event, reason in counts.dead_letters[:10]:
        what = (f"cart {event.cart_reference}" if isinstance(event, Cart)
                else f"product view of {event.item_id}")
        print(f"{PROG}: not delivered: {what}: {reason}", file=sys.stderr)
    if len(counts.dead_letters) > 10:
        print(f"{PROG}: ... and {len(counts.dead_letters) - 10} more not delivered",
              file=sys.stderr)
    if counts.in_hand_dropped:
        print(f"{PROG}: the event read when the signal came was not sent (no --spool)",
              file=sys.stderr)
    if spool is not None and (counts.dead_letters or counts.dropped):
        _spool_failures(counts, spool)
    spooled = stats.spooled + counts.in_hand_spooled
    dropped = stats.dropped + counts.in_hand_dropped
    undelivered = stats.dead_lettered + dropped + spooled
    print(_lines_text(counts, source))
    print(
        f"read {counts.read} ({counts.product_views} product views, {counts.carts} cart "
        f"updates) = sent {stats.sent} + collapsed {stats.collapsed} + dead-lettered "
        f"{stats.dead_lettered} + spooled {spooled} + dropped {dropped}; "
        f"{stats.requests} requests"
    )
    if undelivered and spool is not None:
        print(f"undelivered events were written to {spool}; replay them with "
              f"'{PROG} send {spool}'")
    ok = counts.invalid + counts.too_long + undelivered == 0
    return EXIT_OK if ok else EXIT_FAILED


def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
