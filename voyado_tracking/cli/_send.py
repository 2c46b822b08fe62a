"""``voyado-tracking send FILE.jsonl``: an event file (or a spool) through a TrackingBuffer.

Lines are read in blocks off the event loop and handed over with ``await buffer.put()``, so a
file of any size runs in bounded memory. Bad lines are reported by number and skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

import attrs

from .. import (
    BufferStats,
    Cart,
    InvalidEventError,
    TrackingBuffer,
    TrackingClient,
)
from .._eventfile import event_to_line, parse_line, read_blocks
from .._wire import Event
from ._common import EXIT_FAILED, EXIT_OK, PROG, UsageError, on_interrupt
from ._progress import progress, stats_text
from ._sendargs import client_from_args, send_flush_settings

__all__ = ["run_send"]


@attrs.define
class _SendState:
    lines: int = 0
    read_bytes: int = 0
    total_bytes: int | None = None
    valid: int = 0
    invalid: int = 0
    carts: int = 0
    product_views: int = 0
    dead_letters: list[tuple[Event, str]] = attrs.field(factory=list)
    dropped: list[Event] = attrs.field(factory=list)

    def poll(self, status: str) -> tuple[int, int | None, str]:
        return self.read_bytes, self.total_bytes, f"{self.lines} lines{status}"


def _open_input(name: str) -> tuple[IO[bytes], int | None, str]:
    """The input stream, its size if known, and the name used in messages."""
    if name == "-":
        return sys.stdin.buffer, None, "<stdin>"
    path = Path(name)
    try:
        stream = path.open("rb")
    except OSError as error:
        raise UsageError(f"cannot read {name}: {error.strerror or error}") from None
    try:
        size: int | None = os.fstat(stream.fileno()).st_size or None
    except OSError:
        size = None
    return stream, size, name


async def _read_events(
    stream: IO[bytes], source: str, state: _SendState
) -> AsyncIterator[Event]:
    blocks = read_blocks(stream)
    while (block := await asyncio.to_thread(next, blocks, None)) is not None:
        for raw in block:
            state.lines += 1
            state.read_bytes += len(raw)
            try:
                event = parse_line(raw, state.lines)
            except InvalidEventError as error:
                state.invalid += 1
                print(f"{source}:{state.lines}: skipped: {error.field} {error.problem}",
                      file=sys.stderr)
                continue
            if event is None:
                continue
            state.valid += 1
            if isinstance(event, Cart):
                state.carts += 1
            else:
                state.product_views += 1
            yield event


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
    stream, size, source = _open_input(args.file)
    state = _SendState(total_bytes=size)
    try:
        if client is None:
            return await _validate_only(stream, source, state, mode)
        async with client:
            return await _deliver(client, stream, source, state, spool, args, mode)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


async def _validate_only(stream: IO[bytes], source: str, state: _SendState, mode: str) -> int:
    async with progress(mode, "validating", lambda: state.poll(""), 2.0):
        async for _ in _read_events(stream, source, state):
            pass
    print(
        f"dry run: {state.valid} valid events ({state.product_views} product views, "
        f"{state.carts} cart updates), {state.invalid} invalid lines skipped; nothing sent"
    )
    return EXIT_OK if state.invalid == 0 else EXIT_FAILED


async def _deliver(
    client: TrackingClient,
    stream: IO[bytes],
    source: str,
    state: _SendState,
    spool: Path | None,
    args: argparse.Namespace,
    mode: str,
) -> int:
    settings = send_flush_settings(args)
    buffer = TrackingBuffer(
        client,
        settings,
        on_dead_letter=lambda event, error: state.dead_letters.append((event, str(error))),
        on_drop=lambda event, reason: state.dropped.append(event),
        spool_path=spool,
    )

    async def pump() -> None:
        async for event in _read_events(stream, source, state):
            await buffer.put(event)
        await buffer.flush()

    def poll() -> tuple[int, int | None, str]:
        return state.poll(f"  skipped {state.invalid}  {stats_text(buffer.stats)}")

    interrupted = False
    async with progress(mode, "sending", poll, 2.0):
        pumping = asyncio.get_running_loop().create_task(pump())

        def interrupt() -> None:
            # Stop reading and retrying at once; the close below spools what is left.
            nonlocal interrupted
            interrupted = True
            pumping.cancel()

        try:
            with on_interrupt(interrupt):
                await pumping
        except asyncio.CancelledError:
            if not interrupted:
                raise
            print(f"{PROG}: interrupted after line {state.lines}", file=sys.stderr)
        finally:
            await buffer.aclose(timeout=settings.shutdown_timeout)
    return _send_report(buffer.stats, state, spool)


def _spool_failures(state: _SendState, spool: Path) -> None:
    """Append what was dead-lettered or dropped to the spool (the buffer spools the rest)."""
    try:
        with spool.open("ab") as out:
            out.writelines(
                event_to_line(e, reason=f"dead_lettered: {r}") for e, r in state.dead_letters
            )
            out.writelines(event_to_line(e, reason="dropped") for e in state.dropped)
    except OSError as error:
        print(f"{PROG}: could not write the spool file {spool}: {error.strerror}",
              file=sys.stderr)


def _send_report(stats: BufferStats, state: _SendState, spool: Path | None) -> int:
    for event, reason in state.dead_letters[:10]:
        what = (f"cart {event.cart_reference}" if isinstance(event, Cart)
                else f"product view of {event.item_id}")
        print(f"{PROG}: not delivered: {what}: {reason}", file=sys.stderr)
    if len(state.dead_letters) > 10:
        print(f"{PROG}: ... and {len(state.dead_letters) - 10} more not delivered",
              file=sys.stderr)
    undelivered = stats.dead_lettered + stats.dropped + stats.spooled
    if spool is not None and (state.dead_letters or state.dropped):
        _spool_failures(state, spool)
    parts = [
        f"read {state.valid} valid events ({state.product_views} product views, "
        f"{state.carts} cart updates)",
        f"sent {stats.sent} in {stats.requests} requests ({stats.collapsed} cart updates "
        "collapsed)",
        f"skipped {state.invalid} invalid lines",
        f"failed {undelivered} (dead-lettered {stats.dead_lettered}, dropped {stats.dropped}, "
        f"spooled {stats.spooled})",
    ]
    print("; ".join(parts))
    if undelivered and spool is not None:
        print(f"undelivered events were written to {spool}; replay them with "
              f"'{PROG} send {spool}'")
    ok = state.invalid == 0 and undelivered == 0
    return EXIT_OK if ok else EXIT_FAILED
