"""Retry policy, backoff, ``Retry-After`` parsing and the two request gates of a client.

Both gates are shared by everything that sends through one :class:`TrackingClient`, the
buffer included:

- :class:`RateLimitGate` is closed by a 429 for as long as Voyado asked (``Retry-After``) or
  for a default pause, so concurrent callers stop together instead of each learning the same
  lesson with its own 429.
- :class:`TokenBucket` keeps requests/s under the configured rate before Voyado has to say
  anything. It is a GCRA ("virtual scheduling") bucket: every caller reserves its slot
  synchronously and then sleeps until it, so concurrent callers never race for tokens and
  the burst is bounded by one second's worth of requests.

Both take a :class:`Clock` (``now`` and ``sleep``), so tests pin timing without sleeping.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any, Final

import attrs

from ._clock import Clock, MonotonicClock
from ._errors import ApiError, VoyadoError
from ._validators import attrs_optional_positive, attrs_positive, check_int_at_least

__all__ = ["RateLimitGate", "RetryPolicy", "TokenBucket", "parse_retry_after"]

# Voyado's longest documented back-off is 300 s; a Retry-After beyond that is not trusted.
MAX_RETRY_AFTER: Final = 300.0


def _attempts(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        check_int_at_least("max_attempts", value, 1)


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How often and how patiently to retry a request that failed in a retriable way.

    ``max_attempts`` counts the first try (``1`` disables retries); ``None`` means "until
    ``max_elapsed`` seconds have passed since the first try". The wait before retry *n* is a
    full-jitter draw from ``[0, min(max_backoff, initial_backoff * 2**(n-1))]``, or the server's
    ``Retry-After`` when that is longer.
    """

    max_attempts: int | None = attrs.field(default=3, validator=_attempts)
    initial_backoff: float = attrs.field(default=0.2, validator=attrs_positive)
    max_backoff: float = attrs.field(default=5.0, validator=attrs_positive)
    max_elapsed: float | None = attrs.field(default=None, validator=attrs_optional_positive)

    def __attrs_post_init__(self) -> None:
        if self.max_attempts is None and self.max_elapsed is None:
            raise ValueError("max_attempts=None needs max_elapsed: retries must end")
        if self.max_backoff < self.initial_backoff:
            raise ValueError("max_backoff must be >= initial_backoff")

    def backoff(self, retry: int, rng: Callable[[], float] = random.random) -> float:
        """The wait before retry number *retry* (1 for the first retry)."""
        ceiling = min(self.max_backoff, self.initial_backoff * 2.0 ** min(retry - 1, 62))
        return ceiling * rng()

    def allows(self, attempts: int, elapsed: float, wait: float) -> bool:
        """Whether another attempt may start after *attempts* tries and a *wait* more."""
        if self.max_attempts is not None and attempts >= self.max_attempts:
            return False
        return self.max_elapsed is None or elapsed + wait <= self.max_elapsed

    def next_wait(
        self,
        error: VoyadoError,
        attempts: int,
        elapsed: float,
        *,
        patient: bool = True,
        rng: Callable[[], float] = random.random,
    ) -> float | None:
        """Seconds to wait before the next attempt after *error*, or ``None`` to give up.

        The one retry rule of the library, used by awaited calls and by buffers alike: only
        a retriable error is retried; the wait is the jittered backoff, or the server's
        ``Retry-After`` (on 429 and 5xx alike) when that is longer; the attempt and elapsed
        budgets bound it. An impatient caller (an awaited call in a request handler,
        ``patient=False``) gives up at once when Voyado asks for a pause longer than
        ``max_backoff`` instead of hanging.
        """
        if not error.retriable:
            return None
        wait = self.backoff(attempts, rng)
        retry_after = error.retry_after if isinstance(error, ApiError) else None
        if retry_after is not None:
            if not patient and retry_after > self.max_backoff:
                return None
            wait = max(wait, retry_after)
        return wait if self.allows(attempts, elapsed, wait) else None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            return None
        seconds = moment.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


class RateLimitGate:
    """Closed after a 429 until the pause Voyado asked for has passed."""

    __slots__ = ("_clock", "_until")

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = MonotonicClock() if clock is None else clock
        self._until = 0.0

    def pause(self, seconds: float) -> None:
        self._until = max(self._until, self._clock.now() + min(seconds, MAX_RETRY_AFTER))

    def remaining(self) -> float:
        return max(0.0, self._until - self._clock.now())

    async def wait(self) -> None:
        # Loop: another 429 may extend the pause while we sleep.
        while (delay := self.remaining()) > 0:
            await self._clock.sleep(delay)


class TokenBucket:
    """At most *rate* requests per second, bursts of at most one second's worth."""

    __slots__ = ("_clock", "_interval", "_tat", "_tolerance")

    def __init__(self, rate: float, clock: Clock | None = None) -> None:
        self._interval = 1.0 / rate
        self._tolerance = max(rate, 1.0) * self._interval - self._interval
        self._clock: Clock = MonotonicClock() if clock is None else clock
        self._tat = 0.0  # theoretical arrival time of the next conforming request

    def reserve(self) -> float:
        """Take the next slot; returns how long to wait for it."""
        now = self._clock.now()
        tat = max(self._tat, now)
        self._tat = tat + self._interval
        delay = tat - self._tolerance - now
        # Float sums drift: the last slot of a full burst came out as ~1e-13 s, not 0.
        return delay if delay > 1e-9 else 0.0

    async def acquire(self) -> None:
        delay = self.reserve()
        if delay > 0:
            await self._clock.sleep(delay)
