"""The input of ``send``: a file, a FIFO, a pipe or stdin, read line by line as it arrives.

Lines are cut from chunks of at most 256 KiB, so memory stays bounded whatever the input's
shape: a line longer than ``max_line_bytes`` is skipped while it is read (only its number is
kept), never assembled. Nothing waits for a block to fill or for the end of the input, so
events written to a pipe or FIFO that stays open are sent as they come.

Pipes, FIFOs, sockets and terminals are read on the event loop (non-blocking); regular files,
which never block for long, in a worker thread. Either read is cancelled at once when ``send``
is stopped by a signal: no thread is ever left blocked on a stream that may never end. A FIFO
is opened without waiting for its writer (which may come later, or never).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final, TypeAlias

from ._common import UsageError

__all__ = ["TOO_LONG", "Input", "open_input"]

_FILE_CHUNK: Final = 256 * 1024
_PIPE_CHUNK: Final = 64 * 1024
# Counting the lines left unread after a stop reads the rest of the file: bounded in time.
_COUNT_FOR: Final = 2.0

TOO_LONG: Final = None  # in a batch of lines: a line skipped for its length

_Read: TypeAlias = Callable[[], Awaitable[bytes]]


class Input:
    """One input stream of ``send``: its lines in batches, and what was left unread."""

    def __init__(self, fd: int, source: str, *, owned: bool, max_line_bytes: int) -> None:
        self.source = source
        self.max_line_bytes = max_line_bytes
        self.read_bytes = 0
        self._fd = fd
        self._owned = owned
        status = os.fstat(fd)
        self.regular = stat.S_ISREG(status.st_mode)
        # A regular file is read with pread from here (stdin may start past 0), so a read
        # cancelled by a signal loses nothing and the count of unread lines is exact.
        self._offset = os.lseek(fd, 0, os.SEEK_CUR) if self.regular else 0
        self.size: int | None = (status.st_size - self._offset or None) if self.regular else None
        # False when the count of unread lines ran out of time (it is then a lower bound).
        self.unread_exact = True
        self._was_blocking = os.get_blocking(fd)
        self._transport: asyncio.ReadTransport | None = None
        # The current line's bytes so far, or None while a too-long line is being skipped.
        self._partial: bytearray | None = bytearray()
        self._at_eof = False

    async def batches(self) -> AsyncIterator[list[bytes | None]]:
        """The lines of the input (without their newline; ``TOO_LONG`` for a skipped one), in
        batches of those that arrived together."""
        read = await self._reader()
        while data := await read():
            self.read_bytes += len(data)
            lines = self._cut(data)
            if lines:
                yield lines
        self._at_eof = True
        partial, self._partial = self._partial, bytearray()
        if partial is None:
            yield [TOO_LONG]
        elif partial:
            yield [bytes(partial)]

    def _cut(self, data: bytes) -> list[bytes | None]:
        limit = self.max_line_bytes
        pieces = data.split(b"\n")
        rest = pieces.pop()  # the start of a line that a later chunk ends
        partial = self._partial
        lines: list[bytes | None] = [TOO_LONG if len(p) > limit else p for p in pieces]
        if pieces:
            # The first piece ends the line in progress.
            if partial is None:
                lines[0] = TOO_LONG
            elif partial:
                fits = len(partial) + len(pieces[0]) <= limit
                lines[0] = bytes(partial + pieces[0]) if fits else TOO_LONG
            partial = bytearray()
        if partial is not None:
            if len(partial) + len(rest) > limit:
                partial = None  # skip the rest of this line, keeping none of it
            else:
                partial += rest
        self._partial = partial
        return lines

    async def _reader(self) -> _Read:
        loop = asyncio.get_running_loop()
        fd = self._fd
        if not self.regular and _pollable(fd):
            reader = asyncio.StreamReader(limit=_PIPE_CHUNK, loop=loop)
            pipe = os.fdopen(os.dup(fd), "rb", buffering=0)
            try:
                self._transport, _ = await loop.connect_read_pipe(
                    lambda: asyncio.StreamReaderProtocol(reader, loop=loop), pipe
                )
            except BaseException:
                pipe.close()
                raise
            return lambda: reader.read(_PIPE_CHUNK)
        # A file, or a device the loop cannot wait on (/dev/null): reads that never block.
        os.set_blocking(fd, True)
        if not self.regular:
            return lambda: asyncio.to_thread(os.read, fd, _FILE_CHUNK)

        async def read_file() -> bytes:
            data = await asyncio.to_thread(os.pread, fd, _FILE_CHUNK, self._offset)
            self._offset += len(data)
            return data

        return read_file

    async def count_unread(self) -> int:
        """Lines not yet yielded (a stop came first): the rest of a regular file, counted
        within a bounded time, plus the line in progress. The rest of a stream is unknown."""
        started = time.monotonic()
        partial = self._partial
        count = 0
        pending = partial is None or bool(partial)  # a line in progress
        if self.regular and not self._at_eof:

            def count_rest() -> tuple[int, bool, bool]:
                lines, tail, offset = 0, pending, self._offset
                while time.monotonic() - started < _COUNT_FOR:
                    data = os.pread(self._fd, 1 << 20, offset)
                    if not data:
                        return lines, tail, True
                    offset += len(data)
                    lines += data.count(b"\n")
                    tail = not data.endswith(b"\n")
                return lines, tail, False

            count, pending, self.unread_exact = await asyncio.to_thread(count_rest)
        return count + (1 if pending else 0)

    @property
    def stream_left_open(self) -> bool:
        """A stream (not a file) stopped before its end: more lines may have followed."""
        return not self.regular and not self._at_eof

    def close(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
        with contextlib.suppress(OSError):
            if self._owned:
                os.close(self._fd)
            else:
                os.set_blocking(self._fd, self._was_blocking)


def _pollable(fd: int) -> bool:
    """Whether the event loop can wait on *fd* (pipes, FIFOs, sockets, terminals can)."""
    with selectors.DefaultSelector() as selector:
        try:
            selector.register(fd, selectors.EVENT_READ)
        except (OSError, ValueError):
            return False
    return True


def open_input(name: str, max_line_bytes: int) -> Input:
    """*name* ("-" for stdin) opened for reading; a FIFO without waiting for its writer."""
    if name == "-":
        return Input(0, "<stdin>", owned=False, max_line_bytes=max_line_bytes)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as error:
        raise UsageError(f"cannot read {name}: {error.strerror or error}") from None
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsageError(f"cannot read {name}: it is a directory")
    return Input(fd, name, owned=True, max_line_bytes=max_line_bytes)
