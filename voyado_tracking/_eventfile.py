"""JSON Lines event files: the input of ``voyado-tracking send`` and the buffer's spool.

One object per line: ``{"type": "cart" | "product_view", "event": {<camelCase wire fields>}}``.
Other keys (the spool adds ``"reason"``) are ignored on the way in, so a spool replays as it
is. Reading is line-numbered and tolerant the way a file edited by hand needs: a byte order
mark on the first line and blank lines are skipped; every other problem is an
:class:`InvalidEventError` for the caller to report with the line's number.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Final

import orjson

from ._errors import InvalidEventError
from ._wire import TYPE_NAMES, Event, event_from_wire, event_to_wire

__all__ = ["event_to_line", "line_to_event", "parse_line", "read_blocks"]

_BOM: Final = b"\xef\xbb\xbf"
_BLOCK_BYTES: Final = 1 << 20


def event_to_line(event: Event, **extra: str) -> bytes:
    """One JSON Lines record: ``{"type": ..., "event": {...}, **extra}`` and a newline."""
    record = {"type": TYPE_NAMES[type(event)], "event": event_to_wire(event), **extra}
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


def line_to_event(line: bytes | str) -> Event:
    """The event of one JSON Lines record; other keys are ignored."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        raise InvalidEventError("line", f"is not valid JSON ({error.msg})") from None
    if not isinstance(record, dict):
        raise InvalidEventError("line", "must be a JSON object with 'type' and 'event'")
    if "event" not in record:
        raise InvalidEventError("event", "is required")
    return event_from_wire(record.get("type"), record["event"])  # type: ignore[arg-type]


def parse_line(raw: bytes, number: int) -> Event | None:
    """The event on line *number* (1-based) of a file, or None for a blank line.

    A byte order mark at the start of the file, as some editors write, is ignored.
    """
    if number == 1 and raw.startswith(_BOM):
        raw = raw[len(_BOM):]
    if not raw.strip():
        return None
    return line_to_event(raw)


def read_blocks(stream: IO[bytes]) -> Iterator[list[bytes]]:
    """The lines of *stream* in blocks of about 1 MB (a caller on an event loop reads each
    block in a thread)."""
    while True:
        block = stream.readlines(_BLOCK_BYTES)
        if not block:
            return
        yield block
