"""TrackingBuffer: fire-and-forget events, collapsed, batched and delivered in the background.

Split the way aiokafka splits its producer, with OpenTelemetry's one shared core:

- :class:`~voyado_tracking._store.PendingStore` (pure, synchronous): collapse, thresholds,
  overflow, and what to send when (``plan``);
- :class:`~voyado_tracking._sender.Sender` (owns the I/O tasks): planned batches to requests,
  retries, bisection;
- :class:`~voyado_tracking._outcomes.Outcomes`: the one writer of the accounting, telling the
  journal (when there is one), the loss log and the user's hooks where events ended;
- :class:`~voyado_tracking._intake.Intake`: the lifecycle every sink shares (loop binding,
  ``enqueue``, ``put``, ``flush``, the bounded close);
- :class:`TrackingBuffer` (this module): an intake whose drain is the sender, with the
  journal wired in.

No silent loss: every drop, dead letter and undelivered shutdown is logged (rate-limited, with
counts that add up, see ``_losslog``) as well as counted; a buffer that is garbage-collected
or still open at interpreter exit while holding events logs an error with the count (a
collected buffer's journal commits what is queued and releases its file).
"""

from __future__ import annotations

import os
from pathlib import Path

from ._client import TrackingClient
from ._clock import Clock, MonotonicClock
from ._intake import Intake
from ._journal import Journal
from ._outcomes import DeadLetterHook, DropHook, Outcomes
from ._sender import Sender
from ._settings import FlushSettings
from ._stats import BufferStats

__all__ = ["BufferStats", "TrackingBuffer"]


class TrackingBuffer(Intake):
    """Fire-and-forget delivery of cart updates and product views.

    ``enqueue(event)`` returns at once; a background task collapses cart updates per
    ``cart_reference``, batches, retries and delivers through *client*. Close it with
    ``await aclose()`` or ``async with``: that drains within ``shutdown_timeout`` and spools
    the rest to ``spool_path`` (JSON Lines) if given.

    ``on_drop(event, reason)`` is called for each dropped event (reason ``"overflow"`` or
    ``"shutdown"``); ``on_dead_letter(event, error)`` for each event Voyado rejected or that
    exhausted the retry budget. Both run on the event loop and must not block. ``clock`` is
    for tests (``voyado_tracking.testing.FakeClock``).
    """

    def __init__(
        self,
        client: TrackingClient,
        settings: FlushSettings | None = None,
        *,
        on_drop: DropHook | None = None,
        on_dead_letter: DeadLetterHook | None = None,
        spool_path: str | os.PathLike[str] | None = None,
        clock: Clock | None = None,
        journal: Journal | None = None,
    ) -> None:
        if not isinstance(client, TrackingClient):
            raise TypeError(f"client must be a TrackingClient, got {type(client).__name__}")
        if settings is None:
            settings = FlushSettings()
        elif not isinstance(settings, FlushSettings):
            raise TypeError(f"settings must be a FlushSettings, got {type(settings).__name__}")
        self.client = client
        clock = MonotonicClock() if clock is None else clock
        outcomes = Outcomes(
            settings, clock, spool_path=None if spool_path is None else Path(spool_path),
            on_drop=on_drop, on_dead_letter=on_dead_letter,
            client_closed=lambda: client.closed,
        )
        self._sender = Sender(outcomes, client.transport.post, settings, clock=clock)
        journaling = None
        if journal is not None:
            # Imported here: SQLite and the writer load only for a buffer with a journal.
            from ._journal._journaling import Journaling

            journaling = Journaling(
                journal, outcomes, client.transport.fingerprint("journal"), clock=clock,
                wake=self._sender.wake, spooling=spool_path is not None,
            )
            outcomes.keeper = journaling  # told where events end; keeps them at close
        super().__init__(settings, outcomes, self._sender, clock, journaling)
        self._journaling = journaling
        self._bind_if_running()

    @property
    def spool_path(self) -> Path | None:
        return self._outcomes.spool_path

    def __repr__(self) -> str:
        s = self._store
        return (
            f"<voyado_tracking.TrackingBuffer {self._state.value} "
            f"pending_carts={s.pending_carts} pending_product_views={s.pending_views} "
            f"in_flight={s.in_flight}>"
        )

    @property
    def stats(self) -> BufferStats:
        return self._outcomes.snapshot(
            BufferStats,
            journal_errors=0 if self._journaling is None else self._journaling.errors,
        )

    async def sync(self, timeout: float | None = None) -> None:
        """With a journal: return once every event enqueued before the call is committed.

        Raises ``TimeoutError`` naming how many are not committed after *timeout* seconds, or
        at once if the journal stopped writing after an error. Without a journal there is
        nothing to commit: it returns at once.
        """
        self._ensure_running()
        if self._journaling is not None:
            await self._journaling.sync(timeout)

    def _can_drain(self) -> bool:
        return not self.client.closed

    async def _close_resources(self, deadline: float, grace: float) -> None:
        if self._journaling is not None:
            await self._journaling.aclose(deadline - self._clock.now())

    def _abandoned(self) -> None:
        if self._journaling is not None:
            self._journaling.abandon()  # its file is released for the next start

    def _held(self) -> str:
        s = self._store
        return (
            f"{s.pending_carts} carts and {s.pending_views} product views pending "
            f"(retrying included), {s.in_flight} events in flight"
        )
