"""Forwarder: reads the fleet's stream in a consumer group and delivers it to Voyado.

A forwarder is a buffer fed by a stream instead of ``enqueue``: entries are read
(``XREADGROUP``) into a :class:`PendingStore` (cart collapse lives there) and delivered by the
same :class:`Sender` as a buffer's (full batches, bisection of rejected ones, retry holds).
Three small tasks around it talk to Redis:

- the reader reads new entries while the store has room, first re-reading this consumer's
  own pending entries (a restart under the same name), and every ``claim_idle / 2`` seconds
  takes over (``XAUTOCLAIM``) entries idle past ``claim_idle``: those of a forwarder that died;
- the committer settles what the sender finished: ``XACK`` + ``XDEL`` after a 2xx (one
  ``MULTI`` each round), the bad event of a rejected batch to ``<stream>:dead`` with its error;
- the refresher re-claims (``XCLAIM ... JUSTID``) every entry this forwarder still holds,
  every ``claim_idle / 3`` seconds, so entries waiting for a retry are never taken from a
  forwarder that is alive.

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

import attrs
import redis.exceptions

from .._buffer import BufferStats
from .._client import TrackingClient
from .._clock import MonotonicClock, wait_until
from .._endings import report_dead_letters
from .._errors import ClientClosedError, InvalidEventError, VoyadoError
from .._lifecycle import AsyncClosing, stop_tasks
from .._losslog import LossLog
from .._retry import RetryPolicy
from .._sender import Sender
from .._settings import FlushSettings
from .._store import PendingStore
from .._validators import check_positive
from .._wire import Event
from ._ledger import Ledger
from ._stream import (
    DEFAULT_STREAM,
    REDIS_ERRORS,
    RedisUrl,
    close_client,
    connect,
    dead_entry,
    dead_stream,
    decode_entry,
    encode_entry,
    text,
)

__all__ = ["DEFAULT_GROUP", "Forwarder", "ForwarderStats"]

log = logging.getLogger("voyado_tracking")

DEFAULT_GROUP: Final = "voyado-tracking"
_CHUNK: Final = 500  # ids per XACK / XDEL / XCLAIM command
_RELEASED_IDLE_MS: Final = 10 * 365 * 86_400_000  # "idle for years": claimable at once
_BACKOFF: Final = RetryPolicy(max_attempts=None, initial_backoff=0.1, max_backoff=5.0,
                              max_elapsed=1e12)
_READ_BLOCK_MAX: Final = 0.5  # seconds an XREADGROUP may block
_POLL: Final = 0.05  # flush() re-checks the stream this often (other forwarders work too)


@attrs.frozen
class ForwarderStats(BufferStats):
    """A forwarder's counters: those of a buffer (``enqueued`` counts entries read;
    ``spooled``, entries released to other forwarders at close) plus ``claimed``."""

    claimed: int = 0


class Forwarder(AsyncClosing):
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
        on_dead_letter: Callable[[Event, VoyadoError], object] | None = None,
    ) -> None:
        if not isinstance(client, TrackingClient):
            raise TypeError(f"client must be a TrackingClient, got {type(client).__name__}")
        settings = FlushSettings() if settings is None else settings
        if not isinstance(settings, FlushSettings):
            raise TypeError(f"settings must be a FlushSettings, got {type(settings).__name__}")
        self.client, self.settings = client, settings
        self.stream, self.group = str(stream), str(group)
        self.consumer = consumer or (
            f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        )
        self.claim_idle = check_positive("claim_idle", claim_idle)
        self._on_dead_letter = on_dead_letter
        self._redis, self._owns_redis = connect(redis_url)
        self._clock = MonotonicClock()
        self._store = PendingStore(settings)
        self._ledger = Ledger()
        self._sender = Sender(
            self._store, client.transport.post, settings, clock=self._clock,
            on_final=self._final, on_progress=self._notify, on_sent=self._sent,
        )
        self._progress = asyncio.Event()
        self._commit_wake = asyncio.Event()
        self._acks: list[str] = []  # settled entries to XACK + XDEL
        self._dead: list[dict[bytes, bytes]] = []  # entries for the dead stream
        self._releases: list[str] = []  # entries to hand back at close
        self._cursor = "0"  # own pending entries first, then ">" (new ones)
        self._tasks: list[asyncio.Task[None]] = []
        self._state = "new"
        self._reading = True  # the reader's loop goes on while this holds
        self._losses = LossLog()
        self._bad_entries = 0
        self.claimed = 0

    def __repr__(self) -> str:
        return (
            f"<voyado_tracking.Forwarder {self._state} stream={self.stream!r} "
            f"group={self.group!r} consumer={self.consumer!r} held={len(self._ledger)}>"
        )

    @property
    def stats(self) -> ForwarderStats:
        s, sender = self._store, self._sender
        return ForwarderStats(
            enqueued=s.enqueued + self._bad_entries, collapsed=s.collapsed, sent=s.sent,
            requests=sender.requests, retries=sender.retries, dropped=s.dropped,
            dead_lettered=s.dead_lettered + self._bad_entries, spooled=s.spooled,
            pending_carts=s.pending_carts, pending_product_views=s.pending_views,
            in_flight=s.in_flight, claimed=self.claimed,
        )

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the consumer group (creating it and the stream if needed) and start consuming."""
        if self._state != "new":
            return
        self._state = "open"
        with contextlib.suppress(*REDIS_ERRORS):  # else the reader retries
            await self._create_group()
        self._sender.start()
        for name, run in (("reader", self._read_loop), ("committer", self._commit_loop),
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
        self._sender.forcing += 1
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
                await asyncio.sleep(_POLL)
        finally:
            self._sender.forcing -= 1

    async def aclose(self, timeout: float | None = None) -> None:
        """Stop reading, deliver what is held within *timeout* seconds, release the rest.

        Released entries stay in the stream, marked idle so other forwarders claim them at
        once. ``timeout`` defaults to ``settings.shutdown_timeout``.
        """
        if self._state in ("closing", "closed"):
            return
        started, self._state = self._state == "open", "closing"
        timeout = self.settings.shutdown_timeout if timeout is None else max(0.0, timeout)
        deadline = self._clock.now() + timeout
        grace = min(1.0, timeout / 4)
        try:
            if started:
                await self._finish(deadline, grace)
        finally:
            await stop_tasks(self._tasks, grace)
            self._state = "closed"
            self._losses.flush()
            if self._owns_redis:
                await close_client(self._redis)

    async def _finish(self, deadline: float, grace: float) -> None:
        # The reader stops at its next turn rather than by cancellation: a command cancelled
        # between request and reply can leave a redis-py connection waiting forever (redis-py
        # issues 2579 and 2624), and a read blocks at most half a second anyway. A short
        # close cancels it all the same: every wait below is bounded.
        self._reading = False
        budget = min(_READ_BLOCK_MAX + 0.5, deadline - grace - self._clock.now())
        await stop_tasks(self._tasks[:1], budget, cancel=False)
        if self._store.held and not self.client.closed:
            self._sender.forcing += 1
            self._sender.wake()
            await wait_until(self._clock, self._progress, lambda: self._store.held == 0,
                             deadline - grace - self._clock.now())
        await self._sender.stop(max(0.0, deadline - self._clock.now()))
        leftover = self._store.drain()
        self._store.count_spooled(len(leftover))
        self._releases.extend(self._ledger.clear())
        self._commit_wake.set()
        await wait_until(self._clock, self._progress, self._committed,
                         max(0.0, deadline - self._clock.now()))

    def _committed(self) -> bool:
        return not (self._acks or self._dead or self._releases)

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
                await asyncio.sleep(1.0)

    def _notify(self) -> None:
        self._progress.set()

    # -- reading ------------------------------------------------------------------------------

    async def _create_group(self) -> None:
        try:
            await self._redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def _read_loop(self) -> None:
        failures = 0
        next_claim = 0.0
        while self._reading:
            try:
                room = self.settings.max_pending - self._store.held
                if room <= 0:
                    await self._clock.wait(self._progress, 0.2)
                    self._progress.clear()
                    continue
                if self._clock.now() >= next_claim:
                    await self._autoclaim(room)
                    next_claim = self._clock.now() + self.claim_idle / 2
                    room = self.settings.max_pending - self._store.held
                await self._read(min(room, self.settings.max_batch_size))
                failures = 0
            except redis.exceptions.ResponseError as error:
                if "NOGROUP" not in str(error):
                    raise
                # The stream or group is gone (e.g. Redis restarted without persistence).
                await self._create_group()
            except REDIS_ERRORS as error:
                failures += 1
                self._losses.record("redis-read", 0, "Redis unreachable; forwarder waiting",
                                    f"{type(error).__name__}: {error}"[:200])
                await asyncio.sleep(_BACKOFF.backoff(failures))

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
                start_id=start, count=min(room, _CHUNK),
            )
            start, entries = text(reply[0]), [e for e in reply[1] if e]
            fresh = [e for e in entries if text(e[0]) not in self._ledger]
            if fresh:
                self.claimed += len(fresh)
                log.info("claimed %d entries idle past %g s from a stopped forwarder",
                         len(fresh), self.claim_idle)
                self._take_in(fresh)
            room -= len(entries)
            if start == "0-0":
                return

    def _take_in(self, entries: Sequence[Any]) -> None:
        store, ledger, now = self._store, self._ledger, self._clock.now()
        wake = False
        for raw_id, fields in entries:
            entry_id = text(raw_id)
            if entry_id in ledger:
                continue
            if not fields:  # deleted while pending: nothing left to deliver
                self._acks.append(entry_id)
                continue
            try:
                event = decode_entry(fields)
            except InvalidEventError as error:
                self._bad_entries += 1
                self._dead.append(dead_entry(fields, f"unreadable entry: {error}"))
                self._acks.append(entry_id)
                self._losses.record("dead:entry", 1, "dead-lettered an unreadable entry",
                                    str(error))
                continue
            ledger.add(entry_id, event)
            wake = store.add(event, now) or wake
        if wake:
            self._sender.wake()
        if self._acks:
            self._commit_wake.set()

    # -- settling -----------------------------------------------------------------------------

    def _sent(self, events: list[Event]) -> None:
        self._acks.extend(self._ledger.settle(events))
        self._commit_wake.set()

    def _final(self, events: list[Event], error: VoyadoError) -> None:
        ids = self._ledger.settle(events)
        if isinstance(error, ClientClosedError):  # not Voyado's verdict: let another try
            self._store.resolved(len(events), "spooled")
            self._releases.extend(ids)
            self._commit_wake.set()
            return
        self._store.resolved(len(events), "dead_lettered")
        self._dead.extend(dead_entry(encode_entry(e), str(error)) for e in events)
        self._acks.extend(ids)
        self._commit_wake.set()
        self._losses.record(f"dead:{type(error).__name__}", len(events),
                            f"dead-lettered to {dead_stream(self.stream)}", str(error))
        report_dead_letters(self._on_dead_letter, events, error)

    async def _commit_loop(self) -> None:
        failures = 0
        while True:
            if self._committed():
                self._commit_wake.clear()
                await self._commit_wake.wait()
                continue
            acks, dead, releases = self._acks, self._dead, self._releases
            self._acks, self._dead, self._releases = [], [], []
            try:
                await self._commit(acks, dead, releases)
            except REDIS_ERRORS as error:
                self._acks[:0], self._dead[:0], self._releases[:0] = acks, dead, releases
                failures += 1
                self._losses.record("redis-ack", 0, "Redis unreachable; acks waiting",
                                    f"{type(error).__name__}: {error}"[:200])
                await asyncio.sleep(_BACKOFF.backoff(failures))
            else:
                failures = 0
                self._progress.set()

    async def _commit(
        self, acks: list[str], dead: list[dict[bytes, bytes]], releases: list[str]
    ) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            for fields in dead:
                pipe.xadd(dead_stream(self.stream), fields)  # type: ignore[arg-type]
            for chunk in _chunks(acks):
                pipe.xack(self.stream, self.group, *chunk)
                pipe.xdel(self.stream, *chunk)
            for chunk in _chunks(releases):
                pipe.xclaim(self.stream, self.group, self.consumer, 0, chunk,
                            idle=_RELEASED_IDLE_MS, justid=True)
            await pipe.execute()

    async def _refresh_loop(self) -> None:
        every = max(0.02, self.claim_idle / 3)
        while True:
            await asyncio.sleep(every)
            ids = [*self._ledger.ids(), *self._acks]
            if not ids:
                continue
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for chunk in _chunks(ids):
                        pipe.xclaim(self.stream, self.group, self.consumer, 0, chunk,
                                    justid=True)
                    await pipe.execute()
            except REDIS_ERRORS:
                pass  # the reader reports Redis outages; try again next round


def _chunks(ids: list[str]) -> list[list[Any]]:  # Any: redis-py types ids narrowly
    return [ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)]


def _entries(reply: Any) -> list[Any]:
    """The entries of an XREADGROUP reply on one stream (RESP2 list or RESP3 map)."""
    if not reply:
        return []
    streams = reply.values() if isinstance(reply, dict) else (s[1:] for s in reply)
    return [entry for stream in streams for part in stream for entry in part]

