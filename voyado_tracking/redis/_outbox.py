"""RedisOutbox: the intake of a fleet worker. Events go to a Redis stream, never to Voyado.

It is an :class:`~voyado_tracking._intake.Intake`, like ``TrackingBuffer``: ``enqueue`` costs
what a buffer's costs and adds the event to a :class:`PendingStore` (the same bound, overflow
policy and cart collapse). Its drain is a :class:`_StreamWriter`: one background task asks
the store's ``plan`` for what is due (``flush_interval``, or a full pipeline) and writes it
with pipelined ``XADD``s, one entry per event.

Every ``RedisError`` is a failed write, not only a lost connection: a Redis full over
``maxmemory`` (``OOM``) or demoted to a read-only replica in a failover (``READONLY``) refuses
writes too. The pipeline runs with ``raise_on_error=False`` and each reply is looked at: the
events whose ``XADD`` went in are written (never sent again), the refused ones wait in the
store under ``max_pending`` with the events of a pipeline that failed as a whole (Redis
unreachable), and are retried with backoff; ``flush()`` waits for them. At close whatever is
left is spooled (JSON Lines, the format ``voyado-tracking send`` reads) or counted as dropped.
A killed worker loses what it had not written yet: normally under ``flush_interval`` of
events.

Accounting: ``enqueued == collapsed + sent + dropped + spooled + pending``, where ``sent``
counts entries written to the stream.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import redis.exceptions

from .._clock import Clock, MonotonicClock
from .._intake import Intake
from .._lifecycle import stop_tasks
from .._outcomes import DropHook, Outcomes
from .._records import KINDS, Batch, Lanes
from .._settings import FlushSettings
from .._stats import OutboxStats
from .._wire import Event
from ._stream import (
    DEFAULT_STREAM,
    REDIS_BACKOFF,
    WRITE_ERRORS,
    RedisUrl,
    close_client,
    connect,
    encode_entry,
)

__all__ = ["OutboxStats", "RedisOutbox"]

log = logging.getLogger("voyado_tracking")

_PIPELINE: Final = 500  # entries per pipelined write


class RedisOutbox(Intake):
    """Queue events for the fleet's forwarders: ``outbox.enqueue(event)``, as with a buffer.

    ``redis_url`` is a URL (``redis://host:6379/0``) or a ``redis.asyncio.Redis`` you built
    (borrowed: never closed). ``on_drop(event, reason)`` is called for each dropped event.
    ``shutdown_timeout`` bounds ``aclose()`` (its default timeout): with Redis down, the
    close waits that long for Redis to take what is held, then spools or drops it.
    """

    _noun = "outbox"

    def __init__(
        self,
        redis_url: RedisUrl,
        *,
        stream: str = DEFAULT_STREAM,
        max_pending: int = 10_000,
        overflow: str = "drop_oldest",
        flush_interval: float = 0.05,
        on_drop: DropHook | None = None,
        spool_path: str | os.PathLike[str] | None = None,
        shutdown_timeout: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        # FlushSettings validates the shared knobs (bound, overflow policy, interval).
        settings = FlushSettings(
            max_batch_size=min(_PIPELINE, max_pending), max_pending=max_pending,
            overflow=overflow, flush_interval=flush_interval,  # type: ignore[arg-type]
            shutdown_timeout=shutdown_timeout,
        )
        self.stream = str(stream)
        self._redis, self._owns_redis = connect(redis_url)
        clock = MonotonicClock() if clock is None else clock
        outcomes = Outcomes(
            settings, clock, name="outbox", sink="RedisOutbox",
            spool_path=Path(spool_path) if spool_path is not None else None, on_drop=on_drop,
        )
        writer = _StreamWriter(outcomes, self._redis, self.stream, clock)
        super().__init__(settings, outcomes, writer, clock)
        self._bind_if_running()

    @property
    def spool_path(self) -> Path | None:
        return self._outcomes.spool_path

    def __repr__(self) -> str:
        return (
            f"<voyado_tracking.RedisOutbox {self._state.value} stream={self.stream!r} "
            f"pending={self._store.held}>"
        )

    @property
    def stats(self) -> OutboxStats:
        s = self._store
        return OutboxStats(s.enqueued, s.collapsed, s.sent, s.dropped, s.spooled, s.held)

    async def _close_resources(self, deadline: float, grace: float) -> None:
        if self._owns_redis:
            await close_client(self._redis, min(2.0, max(0.1, deadline - self._clock.now())))

    def _held(self) -> str:
        return f"{self._store.held} events not yet written to Redis"


class _StreamWriter:
    """The outbox's drain: writes what the store plans with pipelined ``XADD``s."""

    def __init__(self, outcomes: Outcomes, redis: Any, stream: str, clock: Clock) -> None:
        self._outcomes = outcomes
        self._store = outcomes.store
        self._redis = redis
        self._stream = stream
        self._clock = clock
        # One pipeline at a time, with what is due of each stream.
        self.lanes = Lanes(dict.fromkeys(KINDS, 1), len(KINDS))
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._writing: list[Batch] = []
        self._failures = 0
        self._stopping = False

    def start(self) -> None:
        if self._task is None and not self._stopping:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="voyado_tracking outbox"
            )
            self._task.add_done_callback(self._task_done)

    def wake(self) -> None:
        self._wake.set()

    async def stop(self, grace: float) -> None:
        self._stopping = True
        task = self._task
        if task is not None:
            await stop_tasks([task], min(grace, 1.0))
        # A writer that did not finish in time still hands back what it was writing (they
        # are spooled with the rest); one that did has handed it back already.
        self._landed(lambda batch: self._outcomes.requeue(
            batch, batch.events, not_before=self._clock.now()))

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._task = None
        if not task.cancelled() and task.exception() is not None:
            log.error("the RedisOutbox writer crashed; restarting it", exc_info=task.exception())
            if not self._stopping:
                task.get_loop().call_soon(self.start)

    async def _run(self) -> None:
        store, wake, clock, lanes = self._store, self._wake, self._clock, self.lanes
        while True:
            now = clock.now()
            batches, wake_at = store.plan(now, lanes)
            if batches:
                await self._write(batches)
                continue
            wake.clear()
            if wake_at is None:
                await wake.wait()
            else:
                await clock.wait(wake, wake_at - now)

    async def _write(self, batches: list[Batch]) -> None:
        self._writing = batches
        replies: list[Any]
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for batch in batches:
                    for event in batch.events:
                        pipe.xadd(self._stream, encode_entry(event))
                # Each XADD answers for itself: a full or read-only Redis refuses some of
                # them (or all) and takes the others.
                replies = await pipe.execute(raise_on_error=False)
        except WRITE_ERRORS as error:  # the pipeline as a whole: whether any went in is unknown
            replies = [error] * sum(len(batch.events) for batch in batches)
        except BaseException:
            # Cancelled mid-pipeline (or a bug): these events may or may not be in Redis.
            # Keep them (a duplicate view beats a lost one); never leave them orphaned.
            self._landed(lambda batch: self._outcomes.requeue(
                batch, batch.events, not_before=self._clock.now()))
            raise
        self._settle(replies)
        self._outcomes.progressed()

    def _settle(self, replies: list[Any]) -> None:
        """The events whose XADD went in are written; the others are held for a retry."""
        outcomes, position = self._outcomes, 0
        splits: list[tuple[Batch, list[Event], list[Event]]] = []
        error: BaseException | None = None
        for batch in self._writing:
            written: list[Event] = []
            refused: list[Event] = []
            for event, reply in zip(
                batch.events, replies[position : position + len(batch.events)], strict=True
            ):
                if isinstance(reply, BaseException):
                    refused.append(event)
                    error = error or reply
                else:
                    written.append(event)
            position += len(batch.events)
            splits.append((batch, written, refused))
        hold = 0.0
        if error is None:
            self._failures = 0
        else:
            self._failures += 1
            hold = self._clock.now() + REDIS_BACKOFF.backoff(self._failures)
            self.lanes.hold_until = dict.fromkeys(KINDS, hold)
            self._report(error, sum(len(refused) for _, _, refused in splits))
        self._writing = []
        for batch, written, refused in splits:
            if written:
                outcomes.sent(batch, written)
            if refused:
                outcomes.requeue(batch, refused, self._failures, 0.0, hold)
            self.lanes.done(batch.kind)
            self._store.landed(batch)

    def _report(self, error: BaseException, count: int) -> None:
        """A rate-limited warning that Redis did not take *count* events (held, not lost:
        a note, so a retried event is not counted again at each attempt)."""
        if isinstance(error, redis.exceptions.ResponseError):
            key, what = f"redis-refused:{type(error).__name__}", "Redis refused the write"
        else:
            key, what = "redis-down", "Redis unreachable"
        self._outcomes.losses.note(
            key, f"{what} of {count} event(s); holding {self._store.held} to retry",
            f"{type(error).__name__}: {error}"[:200],
        )

    def _landed(self, outcome: Callable[[Batch], None]) -> None:
        """Each batch being written gets its *outcome*, and leaves the lanes."""
        batches, self._writing = self._writing, []
        for batch in batches:
            outcome(batch)
            self.lanes.done(batch.kind)
            self._store.landed(batch)
