"""EventSink: what app code needs of a place to put events, whichever delivers them.

:class:`TrackingBuffer` (delivers to Voyado itself) and ``RedisOutbox`` (fleet mode: writes
to a Redis stream that forwarders deliver) both satisfy it, so code typed against
``vt.EventSink`` switches between them by changing the line that builds one.
"""

from __future__ import annotations

import concurrent.futures
from types import TracebackType
from typing import Protocol, runtime_checkable

from ._wire import Event

__all__ = ["EventSink"]


@runtime_checkable
class EventSink(Protocol):
    """Fire-and-forget intake of cart updates and product views."""

    def enqueue(self, event: Event) -> None:
        """Queue an event; synchronous, O(1), never blocks."""

    def enqueue_threadsafe(self, event: Event) -> concurrent.futures.Future[None]:
        """Queue an event from another thread."""

    async def put(self, event: Event, timeout: float | None = None) -> None:
        """Queue an event, waiting while the sink is full."""

    async def flush(self, timeout: float | None = None) -> None:
        """Return once everything queued before the call has left this process."""

    async def aclose(self, timeout: float | None = None) -> None:
        """Stop intake, hand over what is queued within the timeout, spool the rest."""

    @property
    def stats(self) -> object:
        """A snapshot of the sink's counters."""

    async def __aenter__(self) -> EventSink: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
