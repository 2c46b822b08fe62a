"""Live progress on stderr (a rich bar, plain periodic lines, or nothing), its options, and
log set-up.

Progress is polled from a task, which keeps display code off the hot path of the commands.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import IO, Any

from .. import BufferStats
from ._common import PROG

__all__ = [
    "Poll",
    "configure_logging",
    "progress",
    "progress_mode",
    "progress_options",
    "stats_text",
]

Poll = Callable[[], tuple[int, "int | None", str]]  # completed, total, status text


def _rich_available() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def progress_options() -> argparse.ArgumentParser:
    """The ``--progress`` and ``--verbose`` options, as a parent of the commands that show
    progress."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--progress", choices=("auto", "rich", "plain", "none"), default="auto",
        help="live progress on stderr: rich bar on a terminal, plain lines otherwise (auto)",
    )
    options.add_argument("-v", "--verbose", action="store_true",
                         help="log every retry and failure of the library")
    return options


def progress_mode(requested: str, stream: IO[str]) -> str:
    """The display to use: ``auto`` is rich on a terminal when rich is installed."""
    if requested == "auto":
        return "rich" if stream.isatty() and _rich_available() else "plain"
    if requested == "rich" and not _rich_available():
        return "plain"
    return requested


@contextlib.asynccontextmanager
async def progress(mode: str, title: str, poll: Poll, interval: float) -> AsyncIterator[None]:
    """Show *poll*'s progress while the block runs: a rich bar, plain lines, or nothing."""
    if mode == "none":
        yield
    elif mode == "rich":
        async with _rich_progress(title, poll):
            yield
    else:
        async with _plain_progress(title, poll, interval):
            yield


@contextlib.asynccontextmanager
async def _plain_progress(title: str, poll: Poll, interval: float) -> AsyncIterator[None]:
    started = time.monotonic()

    def line(final: bool) -> None:
        completed, total, status = poll()
        # A percentage until the work is complete; "100%" only on the final line, once,
        # however long the block goes on after that (a buffer draining, say).
        done = f"{100 * completed / total:3.0f}% " if total and (final or completed < total) else ""
        print(f"{title} [{time.monotonic() - started:5.1f}s] {done}{status}",
              file=sys.stderr, flush=True)

    async def tick() -> None:
        while True:
            await asyncio.sleep(interval)
            line(final=False)

    async with _ticking(tick):
        yield
    line(final=True)  # the final state, however short the run


@contextlib.asynccontextmanager
async def _ticking(tick: Callable[[], Coroutine[Any, Any, None]]) -> AsyncIterator[None]:
    """Run the coroutine function *tick* as a task while the block runs."""
    task = asyncio.get_running_loop().create_task(tick())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def _rich_progress(title: str, poll: Poll) -> AsyncIterator[None]:
    from rich.console import Console, RenderableType
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.text import Text

    class StatusProgress(Progress):
        """A progress bar with a line of counters under it (too long for one 80-column row)."""

        status = ""

        def get_renderables(self) -> Iterator[RenderableType]:
            yield self.make_tasks_table(self.tasks)
            yield Text(f"  {self.status}", style="dim")

    bar = StatusProgress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=30),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )

    def refresh() -> None:
        completed, total, status = poll()
        bar.status = status
        bar.update(task_id, completed=completed, total=total)

    task_id = bar.add_task(title, total=None)
    refresh()

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.1)
            refresh()

    with bar:
        async with _ticking(tick):
            yield
        refresh()


def configure_logging(mode: str, level: int) -> None:
    """The library's log lines on stderr, through rich when the progress display is rich."""
    logger = logging.getLogger("voyado_tracking")
    logger.setLevel(level)
    logger.propagate = False
    handler: logging.Handler
    if mode == "rich":
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(console=Console(stderr=True), show_path=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
    logger.handlers[:] = [handler]


def stats_text(stats: BufferStats) -> str:
    """A buffer's counters for a progress status line."""
    pending = stats.pending_carts + stats.pending_product_views
    return (
        f"sent {stats.sent}  pending {pending}  in flight {stats.in_flight}  "
        f"requests {stats.requests}  retries {stats.retries}"
    )
