"""RedisRateLimiter when its Redis refuses writes: full (``maxmemory`` + ``noeviction``) or a
read-only replica. Each test runs a redis-server of its own, so filling it harms no other test."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from conftest import fast_settings, missing_reason, under_ci, view

import voyado_tracking as vt
from voyado_tracking.testing import FakeVoyado, Fault
from voyado_tracking.testing._redis import RedisServer, free_port

pytestmark = pytest.mark.fleet

ONE_ATTEMPT = vt.RetryPolicy(max_attempts=1)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    reason = missing_reason()
    if reason is not None:
        if under_ci():
            pytest.fail(f"{reason} (CI must run the fleet tests)")
        pytest.skip(reason)
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def fill(server: RedisServer) -> None:
    """Lower ``maxmemory`` just above what Redis uses, then write until it refuses."""
    with redis.Redis(port=server.port) as r:
        used = int(r.info("memory")["used_memory"])
        r.config_set("maxmemory-policy", "noeviction")
        r.config_set("maxmemory", used + 256 * 1024)
        for n in range(100_000):
            try:
                r.set(f"fill:{n}", b"x" * 1024)
            except redis.exceptions.OutOfMemoryError:
                break
        else:
            raise AssertionError("Redis never refused a write")
        # Freed client buffers can bring it back under the limit for a moment: keep the
        # limit below what the data holds, so every later write is refused.
        r.config_set("maxmemory", int(r.info("memory")["used_memory"]) - 64 * 1024)


def make_read_only(server: RedisServer) -> None:
    """Demote Redis to a replica (of a master that is not there), as a failover does."""
    with redis.Redis(port=server.port) as r:
        r.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))


@pytest.mark.parametrize("refuse", [fill, make_read_only], ids=["full", "read-only replica"])
async def test_a_limiter_whose_redis_refuses_writes_fails_the_call_with_transport_error(
    fake: FakeVoyado, server: RedisServer, refuse: Callable[[RedisServer], None]
) -> None:
    """Not redis's own exception: callers catch our tree only, and nothing is sent."""
    refuse(server)
    limiter = vt.RedisRateLimiter(server.url, rate=1000.0)
    try:
        async with vt.TrackingClient(fake.url, fake.api_key, rate_limiter=limiter,
                                     retry=ONE_ATTEMPT) as client:
            with pytest.raises(vt.TransportError, match="rate limiter: Redis refused") as caught:
                await client.register_product_view(view("p1"))
    finally:
        await limiter.aclose()
    assert caught.value.retriable
    assert fake.api_key not in str(caught.value)
    assert fake.requests == []


async def test_a_429_pause_that_a_full_redis_refuses_is_logged_and_the_429_raised(
    fake: FakeVoyado, server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = vt.RedisRateLimiter(server.url, rate=1000.0)
    fake.script(Fault(status=429, retry_after="1"))
    try:
        async with vt.TrackingClient(fake.url, fake.api_key, rate_limiter=limiter,
                                     retry=ONE_ATTEMPT) as client:
            # The slot is taken while Redis has room; the 429's pause is refused.
            original = limiter.pause

            async def pause_when_full(seconds: float) -> None:
                fill(server)
                await original(seconds)

            limiter.pause = pause_when_full  # type: ignore[method-assign]
            with caplog.at_level(logging.WARNING, logger="voyado_tracking"), \
                    pytest.raises(vt.RateLimitError):
                await client.register_product_view(view("p1"))
    finally:
        await limiter.aclose()
    assert "could not share a 429 pause" in caplog.text
    assert "OutOfMemoryError" in caplog.text


async def test_a_full_limiter_redis_is_a_retried_transport_failure_of_a_buffer(
    fake: FakeVoyado, server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Retried like an outage, not logged as a bug; then delivered once, nothing lost."""
    caplog.set_level(logging.INFO, logger="voyado_tracking")
    fill(server)
    limiter = vt.RedisRateLimiter(server.url, rate=1000.0)
    try:
        async with vt.TrackingClient(fake.url, fake.api_key, rate_limiter=limiter) as client:
            buffer = vt.TrackingBuffer(client, fast_settings())
            events = [view(f"p{n}") for n in range(20)]
            for event in events:
                buffer.enqueue(event)
            with pytest.raises(TimeoutError):
                await buffer.flush(timeout=0.5)  # cannot finish: every slot is refused
            assert buffer.stats.retries > 0
            assert fake.product_views == []
            with redis.Redis(port=server.port) as r:
                r.config_set("maxmemory", 0)  # room again
            await buffer.aclose(timeout=10.0)
    finally:
        await limiter.aclose()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "rate limiter: Redis refused the request (OutOfMemoryError" in caplog.text
    assert buffer.stats.sent == 20
    assert fake.product_view_counts() == dict.fromkeys(events, 1)
