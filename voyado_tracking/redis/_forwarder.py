"""Forwarder: reads the fleet's stream in a consumer group and delivers it to Voyado.

A forwarder is a buffer fed by a stream instead of ``enqueue``: entries are read
(``XREADGROUP``) into a :class:`PendingStore` (cart collapse lives there) and delivered by the
same :class:`Sender` as a buffer's (full batches, bisection of rejected ones, retry holds).
Its :class:`Outcomes` writes the accounting as a buffer's does; its keeper is
:class:`Settlement`, which turns where events end into what becomes of their entries (ack,
dead-letter, release). Three small tasks around it talk to Redis:

- the reader reads new entries while the store has room, first re-reading this consumer's
  own pending entries (a restart under the same name), and every ``claim_idle / 2`` seconds
  takes over (``XAUTOCLAIM``) entries idle past ``claim_idle``: those of a forwarder that died;
- the committer (:class:`Settlement`, in ``_settlement.py``) settles what the sender
  finished: ``XACK`` + ``XDEL`` after a 2xx, the bad event of a rejected batch to
  ``<stream>:dead`` with its error (acked once it is there), in plain pipelines: a full Redis
  refuses ``MULTI``, and only what Redis refused is retried;
- the refresher re-claims (``XCLAIM ... JUSTID``) every entry this forwarder still holds
  (or has yet to ack), every ``claim_idle / 3`` seconds, so entries waiting for a retry are
  never taken from a forwarder that is alive.

Consumers do not pile up in the group. At close, what a forwarder still holds is released to
the group: claimed by the shared consumer ``RELEASED_CONSUMER`` and marked idle for years, so
the next forwarder's ``XAUTOCLAIM`` takes it at once; a forwarder that holds nothing then
removes its own consumer. A live forwarder removes, at each claim round, the consumers with
nothing pending that are idle past ``stale_consumer_after`` (those of forwarders that were
killed, once their entries were claimed), and the released consumer once it is empty. Each
removal is one script that re-checks pending count and idle time before
``XGROUP DELCONSUMER``, which would silently discard pending entries.

Redis refusing a command (full over ``maxmemory``, a read-only replica) is waited out like an
outage: the group is created once Redis takes ``XGROUP CREATE`` (a full Redis refuses it even
when the group exists, so a refusal is checked against ``XINFO GROUPS``), reads and commits
retry with backoff.

Entries are acked only after Voyado answered 2xx: a forwarder killed mid-request leaves them
pending, and another one re-sends them once they are idle past ``claim_idle``
(at-least-once for views; carts are idempotent by ``time``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final

import redis.exceptions

from .._client import TrackingClient
from .._clock import Clock, MonotonicClock, wait_until
from .._errors import InvalidEventError
from .._intake import Lifecycle, State
from .._lifecycle import stop_tasks
from .._outcomes import DeadLetterHook, Outcomes
from .._sender import Sender
from .._settings import FlushSettings
from .._stats import ForwarderStats
from .._validators import check_positive
from ._settlement import CHUNK, RELEASED_CONSUMER, Settlement
from ._stream import (
    DEFAULT_STREAM,
    REDIS_BACKOFF,
    REDIS_ERRORS,
    WRITE_ERRORS,
    RedisUrl,
    close_client,
    connect,
    decode_entry,
    remove_consumer,
    text,
)

__all__ = ["DEFAULT_GROUP", "Forwarder", "ForwarderStats"]

log = logging.getLogger("voyado_tracking")

DEFAULT_GROUP: Final = "voyado-tracking"
_READ_BLOCK_MAX: Final = 0.5  # seconds an XREADGROUP may block
_POLL: Final = 0.05  # flush() re-checks the stream this often (other forwarders work too)


class Forwarder(Lifecycle):
    """Deliver what a fleet's :class:`RedisOutbox` instances write to the stream.

    ``async with vt.Forwarder(client, "redis://...") as forwarder:`` consumes until closed.
    Give *client* a :class:`RedisRateLimiter` so every forwarder shares one request budget.
    """

    def __init__(
        self,
        client: TrackingClient,
        redis_url: RedisUrl,
        settings: FlushSettings | None = None,
        *,
        stream: str = DEFAULT_STREAM,
        group: str = DEFAULT_GROUP,
        consumer: str | None = None,
        claim_idle: float = 60.0,
        on_dead_letter: DeadLetterHook | None = None,
        stale_consumer_after: float = 3600.0,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(client, TrackingClient):
            raise TypeError(f"client must be a TrackingClient, got {type(client).__name__}")
        settings = FlushSettings() if settings is None else settings
        if not isinstance(settings, FlushSettings):
            raise TypeError(f"settings must be a FlushSettings, got {type(settings).__name__}")
        self.client = client
        self.stream, self.group = str(stream), str(group)
        self.consumer = consumer or (
            f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        )
        self.claim_idle = check_positive("claim_idle", claim_idle)
        self.stale_consumer_after = check_positive("stale_consumer_after", stale_consumer_after)
        self._redis, self._owns_redis = connect(redis_url)
        clock = MonotonicClock() if clock is None else clock
        outcomes = Outcomes(settings, clock, name="forwarder", sink="Forwarder",
                            on_dead_letter=on_dead_letter)
        self._settle = outcomes.keeper = Settlement(
            self._redis, self.stream, self.group, self.consumer, clock, outcomes.losses,
            outcomes.progress,
        )
        self._sender = Sender(outcomes, client.transport.post, settings, clock=clock)
        super().__init__(settings, outcomes, self._sender, clock)
        self._ledger = self._settle.ledger
        self._progress = outcomes.progress
        self._losses = outcomes.losses
        self._cursor = "0"  # own pending entries first, then ">" (new ones)
        self._tasks: list[asyncio.Task[None]] = []
        self._reading = True  # the reader's loop goes on while this holds
        self._group_ready = False  # XGROUP CREATE went in, or the group exists
        self.claimed = 0

    def __repr__(self) -> str:
        return (
            f"<voyado_tracking.Forwarder {self._state.value} stream={self.stream!r} "
            f"group={self.group!r} consumer={self.consumer!r} held={len(self._ledger)}>"
        )

    @property
    def stats(self) -> ForwarderStats:
        return self._outcomes.snapshot(ForwarderStats, claimed=self.claimed)

    async def _stream_length(self) -> int:
        """The stream's length (``XLEN``): entries not yet delivered or dead-lettered, by
        any forwarder (the metrics' ``stream_backlog``)."""
        return int(await self._redis.xlen(self.stream))

    def _reader_stopped(self) -> bool:
        """Whether the reader task ended (started, then stopped: closed, or cancelled)."""
        return bool(self._tasks) and self._tasks[0].done()

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the consumer group (creating it and the stream if needed) and start consuming."""
        if self._state is not State.NEW:
            return
        self._state = State.OPEN
        with contextlib.suppress(*WRITE_ERRORS):  # else the reader retries
            await self._create_group()
        self._sender.start()
        for name, run in (("reader", self._read_loop), ("committer", self._settle.run),
                          ("refresher", self._refresh_loop)):
            task = asyncio.get_running_loop().create_task(
                self._guard(name, run), name=f"voyado_tracking forwarder {name}"
            )
            self._tasks.append(task)

    async def __aenter__(self) -> Forwarder:
        await self.start()
        return self

    async def flush(self, timeout: float | None = None) -> None:
        """Return once every entry in the stream at the call is delivered or dead-lettered.

        Entries held by another forwarder count too (they are claimed past ``claim_idle``
        if it died). ``TimeoutError`` after *timeout* seconds.
        """
        deadline = None if timeout is None else self._clock.now() + timeout
        self._sender.lanes.forcing += 1
        self._sender.wake()
        try:
            mark: str | None = None
            while True:
                try:
                    if mark is None:
                        last = await self._redis.xrevrange(self.stream, count=1)
                        if not last:
                            return
                        mark = text(last[0][0] or "0-0")
                    if not await self._redis.xrange(self.stream, "-", mark, count=1):
                        return
                except REDIS_ERRORS:
                    pass  # Redis restarting: keep waiting within the deadline
                if deadline is not None and self._clock.now() >= deadline:
                    raise TimeoutError(f"flush() did not finish in {timeout:g} s")
                self._sender.wake()
                await self._clock.sleep(_POLL)
        finally:
            self._sender.lanes.forcing -= 1

    async def aclose(self, timeout: float | None = None) -> None:
        """Stop reading, deliver what is held within *timeout* seconds, release the rest.

        Released entries stay in the stream, marked idle so other forwarders claim them at
        once. ``timeout`` defaults to ``settings.shutdown_timeout``.
        """
        await super().aclose(timeout)

    async def _stop_intake(self, until: float) -> None:
        # The reader stops at its next turn rather than by cancellation: a command cancelled
        # between request and reply can leave a redis-py connection waiting forever (redis-py
        # issues 2579 and 2624), and a read blocks at most half a second anyway. A short
        # close cancels it all the same: every wait is bounded.
        self._reading = False
        budget = min(_READ_BLOCK_MAX + 0.5, until - self._clock.now())
        await stop_tasks(self._tasks[:1], budget, cancel=False)

    def _can_drain(self) -> bool:
        return not self.client.closed

    async def _close_resources(self, deadline: float, grace: float) -> None:
        # What was delivered, dead-lettered or released is committed by the deadline.
        settle = self._settle
        committed = False
        try:
            committed = await wait_until(self._clock, self._progress, settle.committed,
                                         max(0.0, deadline - self._clock.now()))
            if not committed:
                log.warning(
                    "the Forwarder stopped before Redis took %s; those entries stay pending "
                    "and another forwarder claims them after claim_idle", settle.describe(),
                )
        finally:
            await stop_tasks(self._tasks, grace)
            if committed and self._group_ready:
                await self._remove_own_consumer(deadline + grace)
            if self._owns_redis:
                await close_client(self._redis)

    async def _remove_own_consumer(self, deadline: float) -> None:
        """Leave the group if this consumer holds nothing (the script re-checks that)."""
        budget = max(0.1, deadline - self._clock.now())
        try:
            removed = await asyncio.wait_for(
                remove_consumer(self._redis, self.stream, self.group, self.consumer), budget
            )
        except (*WRITE_ERRORS, asyncio.TimeoutError) as error:
            log.info("the Forwarder could not remove its consumer %r: %s", self.consumer, error)
            return
        if not removed:
            log.info("the Forwarder keeps its consumer %r: entries are pending on it",
                     self.consumer)

    async def _guard(self, name: str, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run a task body; a bug is logged and the body restarted, never silently lost."""
        while True:
            try:
                await run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the Forwarder %s crashed; restarting it", name)
                await self._clock.sleep(1.0)

    # -- reading ------------------------------------------------------------------------------

    async def _create_group(self) -> None:
        """Create the group (and the stream) unless the group exists."""
        try:
            await self._redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as error:
            # A full Redis refuses XGROUP CREATE before it looks for the group.
            if "BUSYGROUP" not in str(error) and not await self._group_exists():
                raise
        self._group_ready = True

    async def _group_exists(self) -> bool:
        try:
            groups: list[Any] = await self._redis.xinfo_groups(self.stream)
        except redis.exceptions.ResponseError:  # no such stream
            return False
        names = (group.get("name") or group.get(b"name") or b"" for group in groups)
        return self.group in {text(name) for name in names}

    async def _read_loop(self) -> None:
        failures = 0
        next_claim = 0.0
        while self._reading:
            try:
                if not self._group_ready:
                    await self._create_group()
                room = self.settings.max_pending - self._store.held
                if room <= 0:
                    await self._clock.wait(self._progress, 0.2)
                    self._progress.clear()
                    continue
                if self._clock.now() >= next_claim:
                    await self._autoclaim(room)
                    await self._remove_stale_consumers()
                    next_claim = self._clock.now() + self.claim_idle / 2
                    room = self.settings.max_pending - self._store.held
                await self._read(min(room, self.settings.max_batch_size))
                failures = 0
            except WRITE_ERRORS as error:
                if "NOGROUP" in str(error) and self._group_ready:
                    # The stream or group is gone (e.g. Redis restarted without persistence).
                    self._group_ready = False
                    continue
                failures += 1
                self._losses.note("redis-read", "Redis unreachable or refusing; forwarder "
                                  "waiting", f"{type(error).__name__}: {error}"[:200])
                await self._clock.sleep(REDIS_BACKOFF.backoff(failures))

    async def _read(self, count: int) -> None:
        if count <= 0:
            return
        own = self._cursor != ">"
        block = None if own else max(1, int(min(_READ_BLOCK_MAX, self.claim_idle / 3) * 1000))
        reply = await self._redis.xreadgroup(
            self.group, self.consumer, {self.stream: self._cursor}, count=count, block=block
        )
        entries = _entries(reply)
        if own:
            self._cursor = text(entries[-1][0]) if entries else ">"
        if entries:
            self._take_in(entries)

    async def _autoclaim(self, room: int) -> None:
        start = "0-0"
        while room > 0:
            reply = await self._redis.xautoclaim(
                self.stream, self.group, self.consumer, int(self.claim_idle * 1000),
                start_id=start, count=min(room, CHUNK),
            )
            start, entries = text(reply[0]), [e for e in reply[1] if e]
            # Entries this forwarder holds, or settled and not acked yet, stay its own.
            owed = set(self._settle.owed())
            fresh = [e for e in entries if text(e[0]) not in self._ledger
                     and text(e[0]) not in owed]
            if fresh:
                self.claimed += len(fresh)
                log.info("claimed %d entries idle past %g s from a stopped forwarder",
                         len(fresh), self.claim_idle)
                self._take_in(fresh)
            room -= len(entries)
            if start == "0-0":
                return

    async def _remove_stale_consumers(self) -> None:
        """Remove the group's consumers with nothing pending that are idle past
        ``stale_consumer_after`` (the released consumer as soon as it is empty)."""
        consumers: list[Any] = await self._redis.xinfo_consumers(self.stream, self.group)
        stale_ms = self.stale_consumer_after * 1000
        for info in consumers:
            fields = {text(k): v for k, v in info.items()}
            name = text(fields.get("name") or b"")
            if name == self.consumer or int(fields.get("pending") or 0):
                continue
            released = name == RELEASED_CONSUMER
            idle = 0.0 if released else self.stale_consumer_after
            if (released or int(fields.get("idle") or 0) >= stale_ms) and await remove_consumer(
                self._redis, self.stream, self.group, name, idle
            ):
                log.info("removed the group's consumer %r: nothing pending, idle", name)

    def _take_in(self, entries: Sequence[Any]) -> None:
        store, ledger, now = self._store, self._ledger, self._clock.now()
        settle = self._settle
        wake = False
        for raw_id, fields in entries:
            entry_id = text(raw_id)
            if entry_id in ledger:
                continue
            if not fields:  # deleted while pending: nothing left to deliver
                settle.deleted(entry_id)
                continue
            try:
                event = decode_entry(fields)
            except InvalidEventError as error:
                self._outcomes.unreadable()
                settle.unreadable(entry_id, fields, str(error))
                self._losses.record("dead:entry", 1, "dead-lettered an unreadable entry",
                                    str(error))
                continue
            ledger.add(entry_id, event)
            wake = store.add(event, now) or wake
        if wake:
            self._sender.wake()

    # -- ownership ----------------------------------------------------------------------------

    async def _refresh_loop(self) -> None:
        every = max(0.02, self.claim_idle / 3)
        while True:
            await self._clock.sleep(every)
            await self._settle.refresh(self._ledger.ids())


def _entries(reply: Any) -> list[Any]:
    """The entries of an XREADGROUP reply on one stream (RESP2 list or RESP3 map)."""
    if not reply:
        return []
    streams = reply.values() if isinstance(reply, dict) else (s[1:] for s in reply)
    return [entry for stream in streams for part in stream for entry in part]

