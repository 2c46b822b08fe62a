"""The clock the library runs on: what time it is, "wait for this event, or until then", sleep.

Everything time-driven (flush intervals, retry holds, flush and close deadlines, the 429 gate
and the token bucket, the loss log, the forwarder's loops) asks a :class:`Clock`, so tests can
drive them with ``voyado_tracking.testing.FakeClock`` instead of sleeping.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Clock", "MonotonicClock", "wait_until"]


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale."""

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        """Wait for *event* at most *timeout* seconds; False when the time ran out."""

    async def sleep(self, seconds: float) -> None:
        """Let *seconds* pass."""


class MonotonicClock:
    """The real clock: ``time.monotonic`` and the event loop's timers."""

    __slots__ = ()

    now = staticmethod(time.monotonic)
    sleep = staticmethod(asyncio.sleep)

    if sys.version_info >= (3, 11):

        async def wait(self, event: asyncio.Event, timeout: float) -> bool:
            # Not ``asyncio.wait_for``: on Python 3.10 and 3.11 it swallows a cancellation
            # that arrives as the event is set, which let a cancelled flusher run on.
            try:
                async with asyncio.timeout(timeout):
                    await event.wait()
            except TimeoutError:
                return False
            return True

    else:  # pragma: no cover - Python 3.10

        async def wait(self, event: asyncio.Event, timeout: float) -> bool:
            waiter = asyncio.ensure_future(event.wait())
            try:
                done, _ = await asyncio.wait({waiter}, timeout=timeout)
            finally:
                waiter.cancel()
            return bool(done)


async def wait_until(
    clock: Clock,
    progress: asyncio.Event,
    condition: Callable[[], bool],
    timeout: float | None,
    *,
    before_wait: Callable[[], None] | None = None,
) -> bool:
    """Wait until *condition* holds, re-checking whenever *progress* is set.

    False if *timeout* seconds (``None``: no limit) pass first. *before_wait* is called each
    time the condition does not hold yet, before waiting.
    """
    deadline = None if timeout is None else clock.now() + timeout
    while not condition():
        if before_wait is not None:
            before_wait()
        progress.clear()
        if deadline is None:
            await progress.wait()
            continue
        remaining = deadline - clock.now()
        if remaining <= 0:
            return False
        if not await clock.wait(progress, remaining) and not condition():
            return False
    return True
