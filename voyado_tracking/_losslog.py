"""Warnings about events that leave a buffer undelivered: rate-limited, with counts that add up.

A slow or failing Voyado can drop or dead-letter thousands of events a second; one warning each
would flood the log, one warning in all would hide the scale. Each kind of loss (``key``) logs
at once the first time, then at most once per ``interval``: what happened in between is
summed and logged when the interval ends (a timer on the running loop), or by :meth:`flush`
at close. The counts in the log add up to the counts in ``stats``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from ._clock import Clock, MonotonicClock

__all__ = ["LossLog"]

log = logging.getLogger("voyado_tracking")

LOG_EVERY: Final = 10.0


class _Pending:
    __slots__ = ("count", "detail", "timer", "what")

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0
        self.detail = ""
        self.timer: asyncio.TimerHandle | None = None


class LossLog:
    """One warning per kind of loss every *interval* seconds, with the events counted."""

    def __init__(self, interval: float = LOG_EVERY, clock: Clock | None = None) -> None:
        self._interval = interval
        self._clock = (MonotonicClock() if clock is None else clock).now
        self._last: dict[str, float] = {}
        self._pending: dict[str, _Pending] = {}

    def record(self, key: str, count: int, what: str, detail: str = "") -> None:
        """*count* events met *what* (e.g. "dead-lettered"); *detail* says why."""
        now = self._clock()
        if now - self._last.get(key, -self._interval) >= self._interval and (
            key not in self._pending
        ):
            self._last[key] = now
            log.warning("%s %d event(s)%s", what, count, f": {detail}" if detail else "")
            return
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending(what)
            delay = max(0.0, self._last.get(key, now) + self._interval - now)
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                pass  # no loop (a pure test): flush() reports it
            else:
                pending.timer = loop.call_later(delay, self._emit, key)
        pending.count += count
        pending.detail = detail
        log.debug("%s %d event(s): %s", what, count, detail)

    def _emit(self, key: str) -> None:
        pending = self._pending.pop(key, None)
        if pending is None or not pending.count:
            return
        self._last[key] = self._clock()
        last = f" (last: {pending.detail})" if pending.detail else ""
        log.warning(
            "%s %d more event(s) in the last %.0f s%s",
            pending.what, pending.count, self._interval, last,
        )

    def flush(self) -> None:
        """Log every sum not yet logged (at close)."""
        for key in list(self._pending):
            pending = self._pending[key]
            if pending.timer is not None:
                pending.timer.cancel()
            self._emit(key)
