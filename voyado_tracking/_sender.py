"""The sender: turns a store's due batches into requests, and reports every outcome.

It owns the I/O tasks of a buffer (aiokafka's ``sender.py`` plays this role for its
producer): one flusher task that sleeps on one wake-up event with the next deadline as timeout
("size or time"), asks :meth:`PendingStore.plan` for the batches to send now (the store
decides what is due, within the sender's :class:`Lanes`: product views use up to
``max_concurrent_requests`` connections, cart batches go one at a time), and starts a send
task per batch.

It depends on a narrow interface only: ``send(path, body)`` (one attempt, raising our
errors) and a :class:`Clock`, so its rules are tested with a fake send and a fake clock. It
writes no accounting itself: every outcome goes to :class:`Outcomes`.

Per batch, whatever way it ends, each event is sent, given up on (``Outcomes.final``: a dead
letter), or back in the store:

- a retriable failure (429, 5xx, timeout) puts the unresolved events back with their own
  retry budget and holds the stream for the backoff (``RetryPolicy.next_wait``);
- a rejected batch (400/413/422) is bisected until the bad event is alone; the good ones go;
- when a batch's budget is spent, its halves get one last chance each, so one event that
  Voyado keeps answering 5xx to is dead-lettered alone; past ``2 log2(n) + 2`` failures the
  cause is not one event (Voyado is down) and the rest is dead-lettered;
- an authentication failure or a closed client is final for the whole batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Final

from ._clock import Clock
from ._errors import ApiError, AuthenticationError, ClientClosedError, VoyadoError
from ._outcomes import Outcomes
from ._records import STREAMS, Batch, Lanes
from ._settings import FlushSettings
from ._transport import Send
from ._wire import Event, encode_batch, split_bodies

__all__ = ["Sender"]

log = logging.getLogger("voyado_tracking")

_REJECTED: Final = frozenset({400, 413, 422})

# One request's worth of a batch: its events and, when already encoded, its body.
_Chunk = tuple[list[Event], "bytes | None"]


class _Retry(Exception):
    """The unresolved rest of a batch must go back to the queue after a backoff."""

    def __init__(self, error: VoyadoError) -> None:
        self.error = error


class Sender:
    """Delivers what the store of *outcomes* holds through *send*, in the background."""

    def __init__(
        self, outcomes: Outcomes, send: Send, settings: FlushSettings, *, clock: Clock
    ) -> None:
        self._outcomes = outcomes
        self._store = outcomes.store
        self._send = send
        self._settings = settings
        self._clock = clock
        self.lanes = Lanes.for_settings(settings)
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._sends: dict[asyncio.Task[None], tuple[Batch, deque[_Chunk]]] = {}
        self._stopping = False
        self.crashes = 0

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the flusher in the running loop (idempotent; never after stop)."""
        if self._flusher is None and not self._stopping:
            task = asyncio.get_running_loop().create_task(
                self._run(), name="voyado_tracking flusher"
            )
            task.add_done_callback(self._flusher_done)
            self._flusher = task

    def wake(self) -> None:
        self._wake.set()

    async def stop(self, grace: float) -> None:
        """Stop the flusher, cancel sends, and put what they held back in the store.

        Sends get *grace* seconds to hand their events back; whatever they still hold after
        that is taken back here, so nothing stays unaccounted for.
        """
        self._stopping = True
        self._wake.set()
        sends = list(self._sends.values())
        tasks = [t for t in (self._flusher, *self._sends) if t is not None and not t.done()]
        try:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=max(grace, 0.01))
        finally:
            self._reclaim([*sends, *self._sends.values()])

    def _reclaim(self, sends: list[tuple[Batch, deque[_Chunk]]]) -> None:
        """Take back the events of sends that did not hand them back themselves.

        A send cancelled before its first step never runs its handler; one still running after
        the grace period finds its todo empty when it ends, so nothing is counted twice.
        """
        for batch, todo in sends:
            if todo:
                self._outcomes.requeue(batch, _take_all(todo), batch.attempts,
                                       batch.first_failure, self._clock.now())
            self._store.landed(batch)

    def _flusher_done(self, task: asyncio.Task[None]) -> None:
        self._flusher = None
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            # Events stay in the store; the flusher restarts at once.
            self.crashes += 1
            log.error("the TrackingBuffer flusher crashed; restarting it", exc_info=error)
            if not self._stopping:
                asyncio.get_running_loop().call_soon(self._restart)

    def _restart(self) -> None:
        if not self._stopping and self._flusher is None:
            self.start()
            self._wake.set()

    # -- the flusher --------------------------------------------------------------------------

    async def _run(self) -> None:
        store, wake, clock, lanes = self._store, self._wake, self._clock, self.lanes
        while not self._stopping:
            now = clock.now()
            batches, wake_at = store.plan(now, lanes)
            for batch in batches:
                self._start_send(batch)
            wake.clear()
            if wake_at is None:
                await wake.wait()  # an enqueue, a finished send, flush() or close sets it
            else:
                await clock.wait(wake, wake_at - now)

    def _start_send(self, batch: Batch) -> None:
        # Encoded inside the task: whatever happens, the events are in todo until resolved.
        todo: deque[_Chunk] = deque([(batch.events, None)])
        task = asyncio.get_running_loop().create_task(self._deliver(batch, todo))
        self._sends[task] = (batch, todo)
        task.add_done_callback(self._send_done)

    def _send_done(self, task: asyncio.Task[None]) -> None:
        entry = self._sends.pop(task, None)
        if entry is not None:
            self.lanes.done(entry[0].kind)
            self._store.landed(entry[0])
        self._wake.set()
        self._outcomes.progressed()

    # -- one batch ----------------------------------------------------------------------------

    async def _deliver(self, batch: Batch, todo: deque[_Chunk]) -> None:
        """Send a batch, bisecting rejected chunks; the events not yet resolved stay in *todo*."""
        last_chance: VoyadoError | None = None
        try:
            todo.clear()
            todo.extend(split_bodies(batch.events, self._settings.max_batch_bytes))
            try:
                await self._send_chunks(batch, todo)
            except _Retry as retry:
                events = _take_all(todo)
                if self._retry_later(batch, events, retry.error):
                    return
                if len(events) == 1:
                    self._outcomes.final(events, retry.error)
                    return
                middle = len(events) // 2  # the whole batch is known to fail: start split
                todo.extend([(events[:middle], None), (events[middle:], None)])
                last_chance = retry.error
            if last_chance is not None:
                log.warning(
                    "retry budget spent for %d %s; trying halves once to isolate a bad event",
                    sum(len(e) for e, _ in todo), batch.kind.replace("_", " "),
                )
                await self._send_chunks(batch, todo, last_chance)
        except asyncio.CancelledError:
            # Shutdown: what was not confirmed goes back to the store, to be spooled.
            self._outcomes.requeue(
                batch, _take_all(todo), batch.attempts, batch.first_failure, self._clock.now()
            )
            raise
        except Exception as error:  # a bug, not a Voyado answer: keep the events, retry later
            self.crashes += 1
            log.exception("unexpected error while sending a batch; it will be retried")
            events = _take_all(todo)
            wrapped = _Unexpected(f"unexpected error: {error!r}"[:300])
            if not self._retry_later(batch, events, wrapped):
                self._outcomes.final(events, wrapped)
        else:
            if last_chance is None:
                self.lanes.hold_until[batch.kind] = 0.0  # Voyado answers again

    async def _send_chunks(
        self, batch: Batch, todo: deque[_Chunk], last_chance: VoyadoError | None = None
    ) -> None:
        """Send the chunks of *todo* in order, resolving each.

        A retriable failure raises ``_Retry`` (the failed chunk and the rest stay in *todo*),
        except in the last chance of a batch whose budget is spent (see the module docstring).
        """
        path = STREAMS[batch.kind].batch_path
        failures_left = 2 * sum(len(e) for e, _ in todo).bit_length() + 2
        while todo:
            events, body = todo[0]
            self._outcomes.requested(len(events))
            try:
                await self._send(path, body if body is not None else encode_batch(events))
            except (AuthenticationError, ClientClosedError) as error:
                for chunk_events in _take_chunks(todo):
                    self._outcomes.final(chunk_events, error)
                return
            except VoyadoError as error:
                if error.retriable:
                    if last_chance is None:
                        raise _Retry(error) from None
                    failures_left = self._split_or_give_up(todo, error, failures_left)
                    continue
                todo.popleft()
                if (
                    isinstance(error, ApiError)
                    and error.status in _REJECTED
                    and len(events) > 1
                ):
                    # Bisect: the good half goes through, the bad one is split again.
                    middle = len(events) // 2
                    todo.extendleft([(events[middle:], None), (events[:middle], None)])
                    continue
                self._outcomes.final(events, error)  # the isolated bad event, or a final status
            else:
                todo.popleft()
                self._outcomes.sent(batch, events)

    def _split_or_give_up(
        self, todo: deque[_Chunk], error: VoyadoError, failures_left: int
    ) -> int:
        """Last chance: split the failed head chunk, or dead-letter (it, or everything)."""
        events, _ = todo.popleft()
        failures_left -= 1
        if failures_left <= 0:
            self._outcomes.final(events, error)
            for chunk_events in _take_chunks(todo):
                self._outcomes.final(chunk_events, error)
        elif len(events) == 1:
            self._outcomes.final(events, error)
        else:
            middle = len(events) // 2
            todo.extendleft([(events[middle:], None), (events[:middle], None)])
        return failures_left

    def _retry_later(self, batch: Batch, events: list[Event], error: VoyadoError) -> bool:
        """Back off and put *events* back; False (events untouched) when the budget is spent."""
        if not events:
            return True
        now = self._clock.now()
        attempts = batch.attempts + 1
        first_failure = batch.first_failure if batch.attempts else now
        wait = self._settings.retry.next_wait(error, attempts, now - first_failure)
        if wait is None:
            log.error("retry budget exhausted after %d attempts for %d events",
                      attempts, len(events))
            return False
        hold = self.lanes.hold_until
        hold[batch.kind] = max(hold[batch.kind], now + wait)
        self._outcomes.retry(batch, events, error, attempts, first_failure, now + wait)
        return True


class _Unexpected(VoyadoError):
    """A bug in the send path, not a Voyado answer: retried like a transport failure."""

    retriable = True


def _take_chunks(todo: deque[_Chunk]) -> list[list[Event]]:
    chunks = [events for events, _ in todo]
    todo.clear()
    return chunks


def _take_all(todo: deque[_Chunk]) -> list[Event]:
    """Empty *todo* and return its events (so that no one else can resolve them twice)."""
    return [event for events in _take_chunks(todo) for event in events]
