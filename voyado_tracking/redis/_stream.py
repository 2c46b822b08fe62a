"""What fleet mode keeps in Redis, and how the fleet classes reach Redis.

One stream entry per event, written by a :class:`RedisOutbox` and read by forwarders::

    v      the entry format version ("1")
    e      the event as its JSON Lines record: {"type": ..., "event": {<wire fields>}}

A dead-lettered event goes to ``<stream>:dead`` with the same fields plus ``error`` (the last
error, as text), so ``voyado-tracking forward --replay-dead`` can move it back unchanged.

Entries are never trimmed by length: forwarders delete (``XDEL``) what they delivered or
dead-lettered, so what the stream holds is exactly what is still undelivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any, Final, TypeAlias

import redis.asyncio as aioredis
import redis.exceptions

from .._errors import InvalidEventError
from .._eventfile import event_to_line, line_to_event
from .._retry import RetryPolicy
from .._wire import Event

__all__ = [
    "DEFAULT_STREAM",
    "FORMAT_VERSION",
    "REDIS_BACKOFF",
    "REDIS_ERRORS",
    "WRITE_ERRORS",
    "RedisUrl",
    "close_client",
    "connect",
    "dead_entry",
    "dead_stream",
    "decode_entry",
    "remove_consumer",
    "encode_entry",
    "entry_key",
    "replay_dead",
    "text",
]

log = logging.getLogger("voyado_tracking")

DEFAULT_STREAM: Final = "voyado-tracking"
FORMAT_VERSION: Final = 1
_VERSION_FIELD: Final = b"1"
# Redis unreachable, restarting, loading, or a connection cut mid-command: retry later.
REDIS_ERRORS: Final = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    OSError,
)

# A write that did not go in: Redis unreachable, or refusing it (full over maxmemory, a
# read-only replica after a failover, ...). Held and retried; nothing is lost on any of them.
WRITE_ERRORS: Final = (redis.exceptions.RedisError, OSError)

# How long the fleet classes wait before trying Redis again after the n-th failure in a row.
REDIS_BACKOFF: Final = RetryPolicy(
    max_attempts=None, initial_backoff=0.1, max_backoff=5.0, max_elapsed=1e12
)

RedisUrl: TypeAlias = "str | aioredis.Redis"
Fields = Mapping[Any, Any]


def connect(redis_url: RedisUrl) -> tuple[aioredis.Redis, bool]:
    """A client for *redis_url*, and whether we own it (a client passed in is borrowed)."""
    if isinstance(redis_url, aioredis.Redis):
        return redis_url, False
    if not isinstance(redis_url, str):
        raise TypeError(
            f"redis_url must be a URL string or a redis.asyncio.Redis, got "
            f"{type(redis_url).__name__}"
        )
    # Bounded waits: an unreachable Redis must turn into an error we retry, never a hang.
    client = aioredis.from_url(
        redis_url, socket_connect_timeout=2.0, socket_timeout=10.0, decode_responses=False
    )
    return client, True


async def close_client(client: aioredis.Redis, timeout: float = 2.0) -> None:
    """Close a client we own, in bounded time and without raising (a connection that a
    cancelled command left waiting must not hang a shutdown)."""
    with contextlib.suppress(*REDIS_ERRORS, asyncio.TimeoutError):
        await asyncio.wait_for(client.aclose(), timeout)


def dead_stream(stream: str) -> str:
    return f"{stream}:dead"


def text(value: bytes | str) -> str:
    """A stream id or field as text (a borrowed client may decode responses, or not)."""
    return value.decode() if isinstance(value, bytes) else value


def entry_key(entry_id: str) -> tuple[int, int]:
    """A stream id (``<ms>-<seq>``) as a sortable pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def encode_entry(event: Event) -> dict[bytes, bytes]:
    return {b"v": _VERSION_FIELD, b"e": event_to_line(event).rstrip(b"\n")}


def dead_entry(fields: Fields, error: str) -> dict[bytes, bytes]:
    """A dead-letter entry: the original fields (as they were) plus the last error."""
    dead = {_raw(k): _raw(v) for k, v in fields.items() if _raw(k) != b"error"}
    dead[b"error"] = error.encode("utf-8", "replace")[:2000]
    return dead


def _field(fields: Fields, name: bytes) -> bytes | None:
    value = fields.get(name)
    if value is None:
        value = fields.get(name.decode())
    return None if value is None else _raw(value)


def _raw(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def decode_entry(fields: Fields) -> Event:
    """The event of an entry; InvalidEventError for a bad entry or an unknown format."""
    version = _field(fields, b"v")
    if version is None:
        raise InvalidEventError("v", "is missing: not an entry written by RedisOutbox")
    try:
        number = int(version)
    except ValueError:
        raise InvalidEventError("v", f"must be a format version, got {version[:20]!r}") from None
    if number != FORMAT_VERSION:
        raise InvalidEventError(
            "v", f"format version {number} is not one this version reads ({FORMAT_VERSION})"
        )
    line = _field(fields, b"e")
    if line is None:
        raise InvalidEventError("e", "is missing")
    return line_to_event(line)


async def replay_dead(client: aioredis.Redis, stream: str, chunk: int = 500) -> int:
    """Move every entry of ``<stream>:dead`` back to *stream* (without its error); the count."""
    dead, moved = dead_stream(stream), 0
    while entries := await client.xrange(dead, count=chunk):
        async with client.pipeline(transaction=True) as pipe:
            for entry_id, fields in entries:
                if entry_id is None or fields is None:
                    continue
                pipe.xadd(stream, {k: v for k, v in fields.items() if _raw(k) != b"error"})
                pipe.xdel(dead, entry_id)
            await pipe.execute()
        moved += len(entries)
    return moved


# Removes a consumer only if it still has nothing pending and has been idle at least ARGV[3]
# ms, checked in the same atomic step as the removal: XGROUP DELCONSUMER would silently
# discard a consumer's pending entries, and a consumer may read or be given entries between
# a look at XINFO and the removal. Returns 1 if removed, 0 if it must stay, -1 if absent.
_REMOVE_CONSUMER: Final = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending > 0 then return 0 end
local consumers = redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
for _, consumer in ipairs(consumers) do
    local fields = {}
    for i = 1, #consumer, 2 do fields[consumer[i]] = consumer[i + 1] end
    if fields['name'] == ARGV[2] then
        if tonumber(fields['pending']) > 0 or tonumber(fields['idle']) < tonumber(ARGV[3]) then
            return 0
        end
        redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
        return 1
    end
end
return -1
"""


async def remove_consumer(
    client: aioredis.Redis, stream: str, group: str, consumer: str, idle: float = 0.0
) -> bool:
    """Remove *consumer* from *group* if it has nothing pending and has been idle at least
    *idle* seconds (one atomic script); whether it was removed."""
    removed = await client.eval(
        _REMOVE_CONSUMER, 1, stream, group, consumer, int(idle * 1000)
    )
    return bool(removed == 1)
