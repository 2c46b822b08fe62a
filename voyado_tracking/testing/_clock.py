"""FakeClock: virtual time for a TrackingBuffer, so timing tests advance time, not sleep."""

from __future__ import annotations

import asyncio
import heapq
import itertools

__all__ = ["FakeClock"]


class FakeClock:
    """A clock that moves only when told: ``TrackingBuffer(client, settings, clock=clock)``.

    ``await clock.advance(seconds)`` moves virtual time forward, wakes every wait whose
    deadline passed (in deadline order), and lets the woken tasks run. Network I/O still takes
    real time: after advancing, wait for what crosses the wire as usual.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        loop = asyncio.get_running_loop()
        timer: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._timers, (self._now + max(timeout, 0.0), next(self._seq), timer))
        waiter: asyncio.Future[object] = asyncio.ensure_future(event.wait())
        waits: set[asyncio.Future[object]] = {waiter, timer}  # type: ignore[arg-type]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            timer.cancel()
        return event.is_set()

    async def sleep(self, seconds: float) -> None:
        await self.wait(asyncio.Event(), seconds)

    async def advance(self, seconds: float) -> None:
        """Move time forward by *seconds*, firing due timers in order."""
        target = self._now + seconds
        await settle()  # let ready tasks start their waits at the current time
        while self._timers and self._timers[0][0] <= target:
            deadline, _, timer = heapq.heappop(self._timers)
            self._now = max(self._now, deadline)
            if not timer.done():
                timer.set_result(None)
                await settle()
        self._now = target
        await settle()


async def settle(rounds: int = 20) -> None:
    """Let ready tasks run (a few loop iterations), without letting time pass."""
    for _ in range(rounds):
        await asyncio.sleep(0)
