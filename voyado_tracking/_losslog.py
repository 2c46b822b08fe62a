"""Warnings about events that leave a buffer undelivered: rate-limited, with counts that add up.

A slow or failing Voyado can drop or dead-letter thousands of events a second; one warning each
would flood the log, one warning in all would hide the scale. Each kind of loss (``key``) logs
at once the first time, then at most once per ``interval``: what happened in between is
summed and logged when the interval ends (a timer on the running loop), or by :meth:`flush`
at close. The counts in the log add up to the counts in ``stats``.

A condition that is not a loss (Redis unreachable while events wait to be retried) is a
:meth:`LossLog.note`: rate-limited the same way, but counted in occurrences, never in events,
so a retried event is not counted once per attempt.
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
    __slots__ = ("count", "detail", "events", "timer", "what")

    def __init__(self, what: str, events: bool) -> None:
        self.what = what
        self.events = events  # counts events (a loss), else occurrences (a note)
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
        if self._due(key):
            log.warning("%s %d event(s)%s", what, count, f": {detail}" if detail else "")
            return
        self._hold(key, count, what, detail, events=True)

    def note(self, key: str, what: str, detail: str = "") -> None:
        """A condition that loses nothing by itself (e.g. a retried write), counted in
        occurrences."""
        if self._due(key):
            log.warning("%s%s", what, f": {detail}" if detail else "")
            return
        self._hold(key, 1, what, detail, events=False)

    def _due(self, key: str) -> bool:
        """Whether *key* may log now (and then it is marked as logged)."""
        now = self._clock()
        if now - self._last.get(key, -self._interval) >= self._interval and (
            key not in self._pending
        ):
            self._last[key] = now
            return True
        return False

    def _hold(self, key: str, count: int, what: str, detail: str, *, events: bool) -> None:
        now = self._clock()
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending(what, events)
            delay = max(0.0, self._last.get(key, now) + self._interval - now)
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                pass  # no loop (a pure test): flush() reports it
            else:
                pending.timer = loop.call_later(delay, self._emit, key)
        pending.count += count
        pending.detail = detail
        log.debug("%s (%d): %s", what, count, detail)

    def _emit(self, key: str) -> None:
        pending = self._pending.pop(key, None)
        if pending is None or not pending.count:
            return
        self._last[key] = self._clock()
        last = f" (last: {pending.detail})" if pending.detail else ""
        if not pending.events:
            log.warning("%s again, %d time(s) in the last %.0f s%s",
                        pending.what, pending.count, self._interval, last)
            return
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
