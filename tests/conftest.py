"""Shared fixtures and helpers of the test suite (``from conftest import view, cart, ...``).

redis (the optional extra) is imported only by the fixtures that need it, so the tests that do
not use Redis run without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any

import pytest

import voyado_tracking as vt
from voyado_tracking.testing import FakeVoyado
from voyado_tracking.testing._redis import RedisServer, free_port

CONTACT = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
AT = "2024-05-01T10:00:00Z"


def view(item: str, **fields: Any) -> vt.ProductView:
    """A product view at a fixed instant (so equal views compare equal)."""
    fields.setdefault("time", AT)
    return vt.ProductView(item, CONTACT, **fields)


def cart(ref: str, second: int = 0, *skus: str, minute: int = 0, **fields: Any) -> vt.Cart:
    """A cart update at *minute*:*second* past a fixed hour (unless *fields* give a ``time``),
    one of each SKU."""
    fields.setdefault("time", f"2024-05-01T10:{minute:02d}:{second:02d}Z")
    return vt.Cart(ref, CONTACT, [vt.CartItem(s, 1) for s in skus], **fields)


FAST_RETRY = vt.RetryPolicy(max_attempts=None, initial_backoff=0.01, max_backoff=0.05,
                            max_elapsed=30.0)


def fast_settings(**overrides: Any) -> vt.FlushSettings:
    """Flush settings for tests: 50 ms interval, quick retries, a 5 s shutdown."""
    values: dict[str, Any] = {"flush_interval": 0.05, "retry": FAST_RETRY, "shutdown_timeout": 5.0}
    values.update(overrides)
    return vt.FlushSettings(**values)


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0
) -> None:
    """Wait (polling) until *condition* holds (it may be async); fail after *timeout* s."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result if isinstance(result, bool) else await result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@pytest.fixture
async def fake() -> AsyncIterator[FakeVoyado]:
    """A started FakeVoyado on 127.0.0.1 with the default test key."""
    async with FakeVoyado() as server:
        yield server


def missing_reason() -> str | None:
    """Why fleet tests cannot run here (None: they can); under CI a missing server fails."""
    if shutil.which("redis-server") is not None:
        return None
    return (
        "redis-server is not installed (Debian: apt-get install redis-server); "
        "the fleet tests need a real Redis"
    )


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


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
    import redis

    client = redis.Redis(port=redis_server.port)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture
async def client(fake: FakeVoyado) -> AsyncIterator[vt.TrackingClient]:
    """A client of *fake* without a rate limit and with quick retries."""
    async with vt.TrackingClient(fake.url, fake.api_key, max_requests_per_second=None,
                                 retry=vt.RetryPolicy(initial_backoff=0.01)) as c:
        yield c


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL where connections are refused."""
    return f"http://127.0.0.1:{free_port()}"


def run_then_collect(main: Coroutine[Any, Any, None]) -> None:
    """Run *main* in a new loop, then collect garbage: an object it dropped is collected
    when unreferenced, or at the latest here."""
    asyncio.run(main)
    gc.collect()


class FakeServerProcess:
    """A running ``voyado-tracking fake-server`` subprocess and what it printed first."""

    def __init__(self, process: asyncio.subprocess.Process, settings: dict[str, str]) -> None:
        self.process = process
        self.base_url = settings["VOYADO_BASE_URL"]
        self.api_key = settings["VOYADO_API_KEY"]

    async def stop(self) -> bytes:
        """SIGTERM, then wait for the exit; returns what it wrote on stderr."""
        self.process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(self.process.communicate(), 20)
        return err


@contextlib.asynccontextmanager
async def fake_server_process(*args: str) -> AsyncIterator[FakeServerProcess]:
    """Start ``voyado-tracking fake-server ARGS``, read its URL and key line; killed at the
    end if the test did not stop it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voyado_tracking", "fake-server", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        first = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        yield FakeServerProcess(process, dict(part.split("=", 1) for part in first.split()))
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


class ThreadedFake:
    """A FakeVoyado served by its own event loop on a thread, for tests of synchronous code
    (a Tracker's callers block: the fake must not share their thread)."""

    def __init__(self, **options: Any) -> None:
        import threading

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server = FakeVoyado(**options)
        self.run(self.server.start())

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Run *coroutine* on the fake's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def close(self) -> None:
        self.run(self.server.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture
def threaded_fake() -> Iterator[FakeVoyado]:
    """A started FakeVoyado on 127.0.0.1 running on its own thread (for sync tests)."""
    fake = ThreadedFake()
    try:
        yield fake.server
    finally:
        fake.close()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """``eventually`` for synchronous tests: poll *condition*; fail after *timeout* s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)
