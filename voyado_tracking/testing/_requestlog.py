"""What ``FakeVoyado.state()`` (and so ``GET /_fake/state`` and ``fake-server --dump``) says
about the requests themselves: a log of the last ones, the busiest second, the cart updates.

Enough to check rate and batching from outside, without a wrapper: each request's time,
path, status and the events the fake took from it; the most requests that arrived within
one second (every arrival counts, refused ones too: Voyado counts them against the key).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any, Final

from ._faults import RecordedRequest

__all__ = ["REQUEST_LOG_SIZE", "request_log_state"]

REQUEST_LOG_SIZE: Final = 10_000  # requests kept in the log (the last ones)


def request_log_state(requests: Sequence[RecordedRequest], cart_updates: int) -> dict[str, Any]:
    """``requestLog`` (oldest first), ``busiestSecond`` and ``cartUpdates``, JSON-ready."""
    offset = time.time() - time.monotonic()  # arrivals are on the monotonic clock

    def wall(at: float) -> str:
        return datetime.fromtimestamp(at + offset, timezone.utc).isoformat(
            timespec="milliseconds")

    log = [{"time": wall(r.at), "path": r.path, "status": r.status, "events": r.events}
           for r in requests[-REQUEST_LOG_SIZE:]]
    return {"requestLog": log, "busiestSecond": _busiest(requests, wall),
            "cartUpdates": cart_updates}


def _busiest(
    requests: Sequence[RecordedRequest], wall: Callable[[float], str]
) -> dict[str, Any]:
    """The sliding one-second window with the most arrivals: its start, requests, events
    (``start`` is None before the first request)."""
    ordered = sorted(requests, key=lambda r: r.at)
    start: str | None = None
    most = events = most_events = first = 0
    for last, request in enumerate(ordered):
        events += request.events
        while request.at - ordered[first].at >= 1.0:
            events -= ordered[first].events
            first += 1
        if last - first + 1 > most:
            start, most, most_events = wall(ordered[first].at), last - first + 1, events
    return {"start": start, "requests": most, "events": most_events}
