"""RedisRateLimiter: one request budget and one 429 pause for every client of an API key.

GCRA without burst, in one Lua script run by Redis (so every process sees one clock, Redis's
``TIME``, and one theoretical arrival time): each call reserves the next slot, ``1 / rate``
seconds after the previous one, and returns how long to wait for it. Slots are evenly
spaced, so no sliding one-second window holds more than ``rate + 1`` of them.

A 429 stores "paused until" under a second key; while it lies ahead no slot is handed out,
so the pause Voyado asked for holds every forwarder and client that uses the same key. A
slot reserved before a pause began is checked again once waited for: it is stale if a
pause started meanwhile, and a new one is taken after the pause.

Redis failing in any way (unreachable, full under ``maxmemory`` with ``noeviction``, a
read-only replica after a failover, a script error): ``acquire`` raises
:class:`TransportError` (retriable, no request is sent) rather than sending outside the shared
budget (``_translate``), and ``pause`` logs that the pause could not be shared. No exception
of the redis package leaves this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Final

import redis.exceptions

from .._errors import RateLimitError, TransportError
from .._validators import check_positive
from ._stream import RedisUrl, close_client, connect

__all__ = ["RedisRateLimiter", "key_for"]

log = logging.getLogger("voyado_tracking")

_KEY_PREFIX: Final = "voyado-tracking:rate:"

# KEYS[1]: theoretical arrival time (µs), KEYS[2]: paused-until (µs).
# ARGV[1]: interval (µs). Returns {paused, microseconds to wait}.
_ACQUIRE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now then
  return {1, paused - now}
end
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local ttl = math.floor((tat + interval - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', tat + interval), 'PX', ttl)
return {0, tat - now}
"""

# KEYS[1]: paused-until (µs). ARGV[1]: pause (µs). Returns nothing.
_PAUSE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local untl = now + tonumber(ARGV[1])
local paused = tonumber(redis.call('GET', KEYS[1]) or '0')
if untl > paused then
  redis.call('SET', KEYS[1], string.format('%.0f', untl), 'PX', math.floor(ARGV[1] / 1000) + 1000)
end
return 0
"""

# KEYS[1]: paused-until (µs). Returns the microseconds of pause left (0: none).
_REMAINING: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local paused = tonumber(redis.call('GET', KEYS[1]) or '0')
if paused > now then return paused - now end
return 0
"""

_MAX_PAUSE: Final = 3600.0
# Everything a call to Redis can fail with: not only a lost connection but every refusal
# (OutOfMemoryError, ReadOnlyError, a script error are all RedisErrors).
_REDIS_FAILURES: Final = (redis.exceptions.RedisError, OSError, asyncio.TimeoutError)


def key_for(identity: str) -> str:
    """The Redis key prefix of the budget of one API key (given as its fingerprint)."""
    return _KEY_PREFIX + identity


class RedisRateLimiter:
    """Admit requests at *rate* per second across every process that shares *key*.

    Give it to each client of the API key: ``TrackingClient(..., rate_limiter=limiter)``.
    Without *key*, the key is derived from a hash of the client's API key and base URL
    (never the key itself), so clients of one tenant and key share one budget.
    """

    def __init__(self, redis_url: RedisUrl, *, rate: float = 40.0, key: str | None = None) -> None:
        self.rate = check_positive("rate", rate)
        self._interval_us = max(1, round(1_000_000 / self.rate))
        self._redis, self._owns_redis = connect(redis_url)
        self._key = None if key is None else str(key)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._pause = self._redis.register_script(_PAUSE)
        self._remaining = self._redis.register_script(_REMAINING)

    def __repr__(self) -> str:
        return f"<voyado_tracking.RedisRateLimiter rate={self.rate:g} key={self._key!r}>"

    @property
    def key(self) -> str | None:
        return self._key

    def bind(self, identity: str) -> None:
        """Called by TrackingClient with the fingerprint of its API key and base URL."""
        key = key_for(identity)
        if self._key is None:
            self._key = key

    def _keys(self) -> list[str]:
        if self._key is None:
            raise RuntimeError(
                "RedisRateLimiter has no key: give it key=..., or pass it to a TrackingClient"
            )
        return [self._key + ":tat", self._key + ":paused"]

    async def acquire(self, max_pause: float | None) -> None:
        keys = self._keys()
        while True:
            with _translate():
                paused, wait_us = await self._acquire(keys=keys, args=[self._interval_us])
            wait = int(wait_us) / 1_000_000
            if int(paused):
                if max_pause is not None and wait > max_pause:
                    raise RateLimitError(
                        429, "not sent: requests are paused by an earlier 429 from Voyado",
                        retry_after=wait,
                    )
                await asyncio.sleep(wait)
                continue
            if wait <= 0:
                return
            await asyncio.sleep(wait)
            # A pause that began while we waited for our slot makes the slot stale.
            with _translate():
                left = int(await self._remaining(keys=keys[1:]))
            if not left:
                return

    async def pause(self, seconds: float) -> None:
        micros = round(min(max(seconds, 0.0), _MAX_PAUSE) * 1_000_000)
        keys = self._keys()[1:]
        try:
            await self._pause(keys=keys, args=[micros])
        except _REDIS_FAILURES as error:
            # The 429 is still raised to the sender, which backs off on its own.
            log.warning("could not share a 429 pause: %s", _describe(error))

    async def aclose(self) -> None:
        """Close the Redis connection pool (a client passed in is left open)."""
        if self._owns_redis:
            await close_client(self._redis)


@contextlib.contextmanager
def _translate() -> Iterator[None]:
    """Redis's failures, as our retriable TransportError (the only place that does this)."""
    try:
        yield
    except _REDIS_FAILURES as error:
        raise TransportError(f"rate limiter: {_describe(error)}; not sent") from None


def _describe(error: BaseException) -> str:
    if isinstance(error, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                          OSError, asyncio.TimeoutError)):
        return f"Redis unreachable ({type(error).__name__})"
    # A refusal: its first line says why (full, read-only), e.g. "command not allowed when
    # used memory > 'maxmemory'". Redis's messages carry no credentials.
    reason = (str(error).splitlines() or [""])[0][:200]
    return f"Redis refused the request ({type(error).__name__}: {reason})"

