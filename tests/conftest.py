"""Shared fixtures of the test suite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis
from _redisserver import RedisServer, missing_reason, under_ci

from voyado_tracking.testing import FakeVoyado


@pytest.fixture
async def fake() -> AsyncIterator[FakeVoyado]:
    """A started FakeVoyado on 127.0.0.1 with the default test key."""
    async with FakeVoyado() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of this test session on a free 127.0.0.1 port, without persistence."""
    reason = missing_reason()
    if reason is not None:
        if under_ci():
            pytest.fail(f"{reason} (CI must run the fleet tests)")
        pytest.skip(reason)
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    client = redis.Redis(port=redis_server.port)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url
