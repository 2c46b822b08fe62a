"""Fleet mode on Redis Streams (the optional extra ``voyado-tracking[redis]``).

Many worker processes enqueue into :class:`RedisOutbox` (events go to one Redis stream); a few
:class:`Forwarder` processes deliver the stream to Voyado in full batches; every client of the
API key shares one :class:`RedisRateLimiter` budget. ``import voyado_tracking`` never imports
this package: the top-level names ``vt.RedisOutbox``, ``vt.Forwarder`` and
``vt.RedisRateLimiter`` load it on first use.
"""

try:
    import redis.asyncio  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "fleet mode needs the 'redis' extra: pip install 'voyado-tracking[redis]' "
        f"({error})"
    ) from error

from ._forwarder import DEFAULT_GROUP, Forwarder, ForwarderStats
from ._limiter import RedisRateLimiter
from ._outbox import OutboxStats, RedisOutbox
from ._stream import DEFAULT_STREAM, FORMAT_VERSION, dead_stream

__all__ = [
    "DEFAULT_GROUP",
    "DEFAULT_STREAM",
    "FORMAT_VERSION",
    "Forwarder",
    "ForwarderStats",
    "OutboxStats",
    "RedisOutbox",
    "RedisRateLimiter",
    "dead_stream",
]

for _name in ("Forwarder", "ForwarderStats", "OutboxStats", "RedisOutbox", "RedisRateLimiter"):
    globals()[_name].__module__ = "voyado_tracking"
del _name
