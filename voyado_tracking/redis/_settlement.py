"""What a forwarder owes the stream once its events are over: acks, dead letters, releases.

:class:`Settlement` is the forwarder's :class:`~voyado_tracking._outcomes.Keeper`: it turns
where events end into what becomes of their entries, and its committer task writes that to
Redis:

- delivered (2xx): ``XACK`` + ``XDEL``;
- dead-lettered: the event to ``<stream>:dead`` with its error, and only once that ``XADD``
  went in, ``XACK`` + ``XDEL``. Until then the entry stays pending and owned (the refresher
  keeps re-claiming it), so it is neither lost nor re-sent to Voyado;
- kept at close (or when the client closed under the forwarder): released to the group,
  that is claimed by the shared consumer ``RELEASED_CONSUMER`` (not kept in this
  forwarder's pending list, so it can leave the group) and marked idle for years so another
  forwarder claims it at once.

No ``MULTI``: Redis refuses a transaction over ``maxmemory`` even when it holds only XACK and
XDEL, which a full Redis still accepts on their own. They are idempotent, so the committer
sends plain pipelines with ``raise_on_error=False`` and puts back only what was refused (a
chunk whose ``XACK`` or ``XDEL`` failed, a refused dead ``XADD``, a failed release), to retry
with backoff. Nothing is ever taken out before Redis has it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Final

from .._clock import Clock
from .._errors import VoyadoError
from .._losslog import LossLog
from .._outcomes import Keeper
from .._wire import Event
from ._ledger import Ledger
from ._stream import (
    REDIS_BACKOFF,
    WRITE_ERRORS,
    Fields,
    dead_entry,
    dead_stream,
    encode_entry,
)

__all__ = ["CHUNK", "RELEASED_CONSUMER", "Settlement", "chunks"]

log = logging.getLogger("voyado_tracking")

CHUNK: Final = 500  # ids per XACK / XDEL / XCLAIM command
# Where released entries wait for the next forwarder's XAUTOCLAIM.
RELEASED_CONSUMER: Final = "voyado-tracking:released"
_RELEASED_IDLE_MS: Final = 10 * 365 * 86_400_000  # "idle for years": claimable at once

# A dead letter: the entries it settles, and what goes to the dead stream.
_Dead = tuple[list[str], dict[bytes, bytes]]


class Settlement(Keeper):
    """The forwarder's keeper and committer (see the module docstring)."""

    def __init__(
        self, redis: Any, stream: str, group: str, consumer: str, clock: Clock,
        losses: LossLog, progress: asyncio.Event,
    ) -> None:
        self.ledger = Ledger()
        self.acks: list[str] = []  # settled entries to XACK + XDEL
        self.dead_letters: list[_Dead] = []  # not in the dead stream yet
        self.releases: list[str] = []  # entries to hand back
        self._committing: list[str] = []  # acks of the round being written
        self._in_round = False  # a round is being written (what it took out is not back yet)
        self.wake = asyncio.Event()  # the committer has work
        self._redis = redis
        self._stream, self._group, self._consumer = stream, group, consumer
        self._clock = clock
        self._losses = losses
        self._progress = progress

    def committed(self) -> bool:
        return not (self.acks or self.dead_letters or self.releases or self._in_round)

    def describe(self) -> str:
        """What is not committed yet, for a log line."""
        return (f"{len(self.acks)} acks, {len(self.dead_letters)} dead letters and "
                f"{len(self.releases)} releases")

    def owed(self) -> list[str]:
        """Entries settled here but not acked yet: still this forwarder's (refreshed, never
        taken in again)."""
        dead = (entry_id for ids, _ in self.dead_letters for entry_id in ids)
        return [*self.acks, *dead, *self._committing]

    # -- the keeper ---------------------------------------------------------------------------

    def sent(self, events: list[Event]) -> None:
        self.acks.extend(self.ledger.settle(events))
        self.wake.set()

    def dead(self, events: list[Event], error: VoyadoError) -> None:
        for event in events:
            ids = self.ledger.settle([event])
            self.dead_letters.append((ids, dead_entry(encode_entry(event), str(error))))
        self.wake.set()

    def dropped(self, event: Event) -> None:  # pragma: no cover - the reader reads into room
        self.acks.extend(self.ledger.settle([event]))
        self.wake.set()

    def keep(self, events: list[Event], *, in_flight: bool) -> list[Event]:
        # In flight: the client was closed under the forwarder (not Voyado's verdict). At
        # close: everything left in the store is released, so all held entries go.
        self.releases.extend(self.ledger.settle(events) if in_flight else self.ledger.clear())
        self.wake.set()
        return []

    def unclosed(self, held: int) -> str:
        return "their entries stay in the stream for other forwarders"

    # -- entries the reader settles at once ---------------------------------------------------

    def deleted(self, entry_id: str) -> None:
        """A pending entry that was deleted: nothing left to deliver."""
        self.acks.append(entry_id)
        self.wake.set()

    def unreadable(self, entry_id: str, fields: Fields, why: str) -> None:
        """An entry that does not decode: to the dead stream as it is."""
        self.dead_letters.append(([entry_id], dead_entry(fields, f"unreadable entry: {why}")))
        self.wake.set()

    # -- the committer ------------------------------------------------------------------------

    async def run(self) -> None:
        """The committer task: write what was settled, retrying what Redis refused."""
        failures = 0
        while True:
            if self.committed():
                self.wake.clear()
                await self.wake.wait()
                continue
            self._in_round = True
            try:
                error = await self._commit()
            finally:
                self._committing = []
                self._in_round = False
            self._progress.set()
            if error is None:
                failures = 0
                continue
            failures += 1
            self._losses.note(
                "redis-ack", "Redis did not take acks or dead letters; they wait",
                f"{type(error).__name__}: {error}"[:200],
            )
            await self._clock.sleep(REDIS_BACKOFF.backoff(failures))

    async def _commit(self) -> BaseException | None:
        """One round: dead letters first, then acks and releases. What Redis refused is put
        back; the first error is returned."""
        dead, self.dead_letters = self.dead_letters, []
        self._committing = [entry_id for ids, _ in dead for entry_id in ids]
        error: BaseException | None = None
        if dead:
            target = dead_stream(self._stream)
            replies = await self._pipeline(
                lambda pipe: [pipe.xadd(target, fields) for _, fields in dead], len(dead)
            )
            for item, reply in zip(dead, replies, strict=True):
                if isinstance(reply, BaseException):
                    error = error or reply
                    self.dead_letters.append(item)
                else:  # in the dead stream: now its entries may go
                    self.acks.extend(item[0])
        self._committing = self.acks
        acks, releases = chunks(self.acks), chunks(self.releases)
        self.acks, self.releases = [], []
        if not (acks or releases):
            return error

        def commands(pipe: Any) -> None:
            for chunk in acks:
                pipe.xack(self._stream, self._group, *chunk)
                pipe.xdel(self._stream, *chunk)
            for chunk in releases:
                pipe.xclaim(self._stream, self._group, RELEASED_CONSUMER, 0, chunk,
                            idle=_RELEASED_IDLE_MS, justid=True)

        replies = await self._pipeline(commands, 2 * len(acks) + len(releases))
        for n, chunk in enumerate(acks):
            failed = [r for r in replies[2 * n : 2 * n + 2] if isinstance(r, BaseException)]
            if failed:  # both again: XACK and XDEL are idempotent
                error = error or failed[0]
                self.acks.extend(chunk)
        for chunk, reply in zip(releases, replies[2 * len(acks) :], strict=True):
            if isinstance(reply, BaseException):
                error = error or reply
                self.releases.extend(chunk)
        return error

    async def _pipeline(self, queue: Callable[[Any], object], count: int) -> list[Any]:
        """The replies of a plain pipeline of *count* commands that *queue* adds: each one a
        result or the error Redis answered it with (all the error, if the pipeline failed as
        a whole: Redis unreachable)."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                queue(pipe)
                return list(await pipe.execute(raise_on_error=False))
        except WRITE_ERRORS as error:
            return [error] * count

    async def refresh(self, held: Sequence[str]) -> None:
        """Re-claim *held* and every entry owed here, so ``claim_idle`` never takes them
        from a forwarder that is alive. Errors are left to the next round."""
        ids = [*held, *self.owed()]
        if ids:
            await self._pipeline(lambda pipe: [
                pipe.xclaim(self._stream, self._group, self._consumer, 0, chunk, justid=True)
                for chunk in chunks(ids)
            ], 0)


def chunks(ids: list[str]) -> list[list[Any]]:  # Any: redis-py types ids narrowly
    return [ids[i : i + CHUNK] for i in range(0, len(ids), CHUNK)]
