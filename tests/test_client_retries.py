"""TrackingClient against the real loopback FakeVoyado: retries, gates, timeouts, connections."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import warnings

import aiohttp
import pytest
from conftest import free_port

import voyado_tracking as vt
from voyado_tracking._transport import LocalRateLimiter
from voyado_tracking.testing import Chaos, FakeVoyado, Fault

GUID = "0b6f7d49-3c47-4b0a-9a8e-9a1d0f6b2c11"
QUICK = vt.RetryPolicy(max_attempts=3, initial_backoff=0.001, max_backoff=0.5)


def client_for(fake: FakeVoyado, **kwargs: object) -> vt.TrackingClient:
    kwargs.setdefault("retry", QUICK)
    kwargs.setdefault("max_requests_per_second", None)
    return vt.TrackingClient(fake.url, fake.api_key, **kwargs)  # type: ignore[arg-type]


def a_view(item: str = "sku-1") -> vt.ProductView:
    return vt.ProductView(item, GUID)




async def test_503_is_retried_until_success(fake: FakeVoyado) -> None:
    fake.script(503, 503)
    async with client_for(fake) as client:
        await client.register_product_view(a_view())
    assert [r.status for r in fake.requests] == [503, 503, 200]
    assert len(fake.product_views) == 1


async def test_retries_stop_at_max_attempts(fake: FakeVoyado) -> None:
    fake.script(502, 503, 504, 500)
    async with client_for(fake) as client:
        with pytest.raises(vt.ApiError) as info:
            await client.register_product_view(a_view())
    assert info.value.status == 504
    assert len(fake.requests) == 3


async def test_rejected_request_is_not_retried(fake: FakeVoyado) -> None:
    fake.reject_item_ids.add("bad")
    async with client_for(fake) as client:
        with pytest.raises(vt.ApiError, match="400"):
            await client.register_product_view(a_view("bad"))
    assert len(fake.requests) == 1


async def test_authentication_error_is_not_retried(fake: FakeVoyado) -> None:
    async with vt.TrackingClient(fake.url, "wrong-key", retry=QUICK) as client:
        with pytest.raises(vt.AuthenticationError):
            await client.register_product_view(a_view())
    assert len(fake.requests) == 1


async def test_max_elapsed_ends_unlimited_attempts(fake: FakeVoyado) -> None:
    fake.chaos(Chaos(error_rate=1.0))
    policy = vt.RetryPolicy(
        max_attempts=None, initial_backoff=0.02, max_backoff=0.02, max_elapsed=0.2
    )
    async with client_for(fake, retry=policy) as client:
        with pytest.raises(vt.ApiError):
            await client.register_product_view(a_view())
    assert len(fake.requests) >= 2


async def test_retry_after_is_honoured(fake: FakeVoyado) -> None:
    fake.script(Fault(status=429, retry_after=0.2))
    loop = asyncio.get_running_loop()
    async with client_for(fake) as client:
        started = loop.time()
        await client.register_product_view(a_view())
        waited = loop.time() - started
    assert waited >= 0.18
    assert [r.status for r in fake.requests] == [429, 200]


async def test_a_503_with_retry_after_delays_the_next_attempt(fake: FakeVoyado) -> None:
    """Retry-After is honoured on 5xx too, not only on 429."""
    fake.script(Fault(status=503, retry_after=2))
    loop = asyncio.get_running_loop()
    policy = vt.RetryPolicy(max_attempts=3, initial_backoff=0.001, max_backoff=5.0)
    async with client_for(fake, retry=policy) as client:
        started = loop.time()
        await client.register_product_view(a_view())
        waited = loop.time() - started
    assert waited >= 2.0
    assert [r.status for r in fake.requests] == [503, 200]


async def test_retry_after_longer_than_max_backoff_is_not_waited_for(fake: FakeVoyado) -> None:
    """A caller prepared to wait 0.5 s gets the RateLimitError at once, not a 60 s hang."""
    fake.script(Fault(status=429, retry_after=60))
    async with client_for(fake) as client:
        with pytest.raises(vt.RateLimitError) as info:
            await client.register_product_view(a_view())
    assert info.value.retry_after == 60
    assert len(fake.requests) == 1


async def test_429_pauses_every_concurrent_request_of_the_client(fake: FakeVoyado) -> None:
    """One shared gate: after a 429, other callers wait instead of each earning their own."""
    fake.script(Fault(status=429, retry_after=0.3))
    async with client_for(fake) as client:
        first = asyncio.create_task(client.register_product_view(a_view("a")))
        for _ in range(2000):  # until the 429 has been answered
            if fake.requests:
                break
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)  # and read: the gate is closed for 0.3 s
        others = [asyncio.create_task(client.register_product_view(a_view(i))) for i in "bc"]
        await asyncio.sleep(0.1)
        assert len(fake.requests) == 1  # b and c are held at the gate
        await asyncio.gather(first, *others)
    assert [r.status for r in fake.requests] == [429, 200, 200, 200]
    assert sorted(v.item_id for v in fake.product_views) == ["a", "b", "c"]


async def test_429_gate_is_per_client(fake: FakeVoyado) -> None:
    fake.script(Fault(status=429, retry_after=2))
    async with client_for(fake) as paused, client_for(fake) as other:
        with pytest.raises(vt.RateLimitError):
            await paused.register_product_view(a_view("a"))  # 2 s > max_backoff: raised
        await asyncio.wait_for(other.register_product_view(a_view("b")), 0.4)
    assert [v.item_id for v in fake.product_views] == ["b"]


async def test_token_bucket_spaces_requests_beyond_the_burst(fake: FakeVoyado) -> None:
    """At 50 requests/s, 60 requests need at least (60 - 50) / 50 s after the burst."""
    loop = asyncio.get_running_loop()
    async with client_for(fake, max_requests_per_second=50.0) as client:
        started = loop.time()
        await asyncio.gather(*(client.register_product_view(a_view(str(i))) for i in range(60)))
        elapsed = loop.time() - started
    assert elapsed >= 0.18
    assert len(fake.product_views) == 60


async def test_requests_released_by_a_429_pause_keep_the_rate() -> None:
    """Slots reserved before a pause are stale after it: no herd when the gate reopens."""
    loop = asyncio.get_running_loop()
    limiter = LocalRateLimiter(10.0)
    for _ in range(10):
        await limiter.acquire(None)  # the burst is spent: slots come every 0.1 s
    done: list[float] = []

    async def send() -> None:
        await limiter.acquire(None)
        done.append(loop.time())

    tasks = [asyncio.create_task(send()) for _ in range(5)]
    await asyncio.sleep(0)  # every task has reserved its slot (0.1 .. 0.5 s)
    await limiter.pause(0.6)  # as a 429 would
    await asyncio.gather(*tasks)
    assert max(done) - min(done) >= 0.2  # spread like the rate, not all at 0.6 s


async def test_timeout_is_a_transport_error(fake: FakeVoyado) -> None:
    fake.latency = 0.5
    async with client_for(fake, timeout=0.05, retry=vt.RetryPolicy(max_attempts=1)) as client:
        with pytest.raises(vt.TransportError, match="timed out"):
            await client.register_product_view(a_view())


async def test_timeout_is_retried(fake: FakeVoyado) -> None:
    fake.script(Fault(status=200, delay=0.5, process=True))
    async with client_for(fake, timeout=0.1) as client:
        await client.register_product_view(a_view())
    # The first attempt was stored although it timed out: delivery is at-least-once.
    assert fake.product_view_counts()[fake.product_views[0]] == 2


async def test_refused_connection_is_a_transport_error_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="voyado_tracking")
    url = f"http://127.0.0.1:{free_port()}"
    async with vt.TrackingClient(url, "key", retry=QUICK) as client:
        with pytest.raises(vt.TransportError) as info:
            await client.register_product_view(a_view())
    assert "aiohttp" not in type(info.value).__module__
    assert sum("retry" in r.getMessage() for r in caplog.records) == 2


async def test_dropped_connection_is_retried(fake: FakeVoyado) -> None:
    fake.script(Fault(drop=True))
    async with client_for(fake) as client:
        await client.register_product_view(a_view())
    assert [r.status for r in fake.requests] == [0, 200]


async def test_borrowed_session_is_not_closed(fake: FakeVoyado) -> None:
    async with aiohttp.ClientSession() as session:
        async with client_for(fake, session=session) as client:
            await client.register_product_view(a_view())
        assert client.closed
        assert not session.closed


async def test_owned_session_is_closed_by_aclose(fake: FakeVoyado) -> None:
    client = client_for(fake)
    await client.register_product_view(a_view())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await client.aclose()
        del client
        gc.collect()
    assert not [w for w in caught if "Unclosed" in str(w.message)]


async def test_localhost_over_plain_http_is_allowed(fake: FakeVoyado) -> None:
    async with vt.TrackingClient(f"http://localhost:{fake.port}", fake.api_key) as client:
        await client.register_product_view(a_view())
    assert len(fake.product_views) == 1


@pytest.mark.parametrize("host", ["example.com", "127.0.0.1.nip.io", "192.168.1.10"])
def test_plain_http_to_a_non_loopback_host_is_refused(host: str) -> None:
    with pytest.raises(ValueError, match="https"):
        vt.TrackingClient(f"http://{host}", "key")


async def test_one_connection_pool_is_reused(fake: FakeVoyado) -> None:
    async with client_for(fake) as client:
        await client.register_product_view(a_view())
        # No public attribute says which connection pool is in use.
        session = client.transport._session
        await client.register_product_view(a_view())
        assert client.transport._session is session


async def test_awaited_call_fails_fast_while_a_long_429_pause_lasts() -> None:
    """A handler must not hang for a Retry-After longer than its policy's max_backoff."""
    async with FakeVoyado() as server:
        server.script(Fault(status=429, retry_after=30))
        async with vt.TrackingClient(
            server.url, server.api_key, retry=vt.RetryPolicy(max_backoff=1.0)
        ) as c:
            with pytest.raises(vt.RateLimitError):
                await c.register_product_view(vt.ProductView("p1", GUID))
            started = time.monotonic()
            with pytest.raises(vt.RateLimitError) as caught:
                await c.register_product_view(vt.ProductView("p1", GUID))
            assert time.monotonic() - started < 1.0
            assert caught.value.retry_after is not None
            assert caught.value.retry_after > 25
        assert len(server.requests) == 1  # the second call sent nothing
