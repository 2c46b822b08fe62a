"""JSON Lines event files: the input of ``voyado-tracking send`` and the buffer's spool.

One object per line: ``{"type": "cart" | "product_view", "event": {<camelCase wire fields>}}``.
A cart made by ``Cart.checked_out`` adds ``"checkout": true`` at the top level (never inside
``event``, which is exactly what Voyado receives); a reader that does not know the key ignores
it, and the cart's time, stamped ahead, still does the work. Other keys (the spool adds
``"reason"``) are ignored on the way in, so a spool replays as it is. Reading is
line-numbered and tolerant the way a file edited by hand needs: a byte order mark on the
first line and blank lines are skipped; every other problem is an :class:`InvalidEventError`
for the caller to report with the line's number.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Final

import attrs
import orjson

from ._errors import InvalidEventError, shorten
from ._models import Cart
from ._wire import TYPE_NAMES, Event, event_from_wire, event_to_wire

__all__ = ["append_events", "event_to_line", "line_to_event", "parse_line"]

_BOM: Final = b"\xef\xbb\xbf"


def event_to_line(event: Event, **extra: str) -> bytes:
    """One JSON Lines record: ``{"type": ..., "event": {...}, **extra}`` and a newline."""
    record: dict[str, object] = {"type": TYPE_NAMES[type(event)], "event": event_to_wire(event),
                                 **extra}
    if type(event) is Cart and event.checkout:
        record["checkout"] = True
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


def append_events(path: str | os.PathLike[str], events: Iterable[Event], **extra: str) -> None:
    """Append *events* as records to the file at *path* (created private); OSError on failure."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with open(fd, "ab") as spool:
        spool.writelines(event_to_line(e, **extra) for e in events)


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
    event = event_from_wire(record.get("type"), record["event"])  # type: ignore[arg-type]
    checkout = record.get("checkout")
    if checkout is None or checkout is False:
        return event
    if checkout is not True:
        raise InvalidEventError("checkout", f"must be true or false, got {shorten(checkout)}")
    if type(event) is not Cart:
        raise InvalidEventError("checkout", "only a cart can be checked out")
    return attrs.evolve(event, checkout=True)


def parse_line(raw: bytes, number: int) -> Event | None:
    """The event on line *number* (1-based) of a file, or None for a blank line.

    A byte order mark at the start of the file, as some editors write, is ignored.
    """
    if number == 1 and raw.startswith(_BOM):
        raw = raw[len(_BOM):]
    if not raw.strip():
        return None
    return line_to_event(raw)
