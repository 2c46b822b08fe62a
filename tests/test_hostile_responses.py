"""Hostile wire traffic on loopback: the client survives odd answers, the fake odd requests."""

from __future__ import annotations

import asyncio
import random
import tracemalloc
from collections.abc import AsyncIterator

import aiohttp
import pytest

import voyado_tracking as vt
from voyado_tracking.testing import FakeVoyado, Fault

VIEW = vt.ProductView("p1", "3fa85f64-5717-4562-b3fc-2c963f66afa6")
ONE_ATTEMPT = vt.RetryPolicy(max_attempts=1)


@pytest.fixture
async def client(fake: FakeVoyado) -> AsyncIterator[vt.TrackingClient]:
    async with vt.TrackingClient(fake.url, fake.api_key, retry=ONE_ATTEMPT) as c:
        yield c


async def test_huge_error_body_is_truncated_in_the_error(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    fake.script(Fault(status=500, body=b"E" * 5_000_000))
    with pytest.raises(vt.ApiError) as caught:
        await client.register_product_view(VIEW)
    assert caught.value.status == 500
    assert len(caught.value.body) <= 1100
    assert len(str(caught.value)) <= 1300


async def test_error_body_that_is_not_utf8_is_reported_readably(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    fake.script(Fault(status=400, body=bytes(range(256)), content_type="application/octet-stream"))
    with pytest.raises(vt.ApiError) as caught:
        await client.register_product_view(VIEW)
    assert caught.value.status == 400
    assert "\ufffd" in caught.value.body


async def test_success_with_a_wrong_content_type_and_junk_body_is_still_success(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    fake.script(Fault(status=200, body=b"<html>not json</html>", content_type="text/html"))
    await client.register_product_view(VIEW)  # Voyado's 2xx body carries nothing we need


async def test_client_stays_usable_after_hostile_answers(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    fake.script(
        Fault(status=500, body=b"\x00" * 10_000, content_type="image/png"),
        Fault(drop=True),
        Fault(status=429, retry_after="soon, maybe"),  # an unparseable Retry-After
    )
    for _ in range(3):
        with pytest.raises(vt.VoyadoError):
            await client.register_product_view(VIEW)
    await client.register_product_view(VIEW)
    assert fake.product_views == [VIEW]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json at all",
        b"\xff\xfe\x00garbage",
        b"[" * 10_000,
        b'{"itemId": "p1"',
        b'"just a string"',
        b"[1, 2, 3]",
        b'[{"itemId": {"nested": ["deep"]}, "contactId": 5}]',
        b'[{"itemId": "p1", "contactId": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "x": 1}]',
    ],
)
async def test_fake_answers_400_to_malformed_bodies_and_keeps_serving(
    fake: FakeVoyado, client: vt.TrackingClient, body: bytes
) -> None:
    headers = {"apikey": fake.api_key, "User-Agent": "Test/1", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http, http.post(
        f"{fake.url}/api/v2/tracking/productviews", data=body, headers=headers
    ) as response:
        assert response.status == 400
        assert "error" in await response.json()
    await client.register_product_view(VIEW)
    assert fake.product_views == [VIEW]


async def test_fake_survives_random_bytes(fake: FakeVoyado, client: vt.TrackingClient) -> None:
    rng = random.Random(3)
    headers = {"apikey": fake.api_key, "User-Agent": "Test/1", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        for _ in range(50):
            body = rng.randbytes(rng.randrange(1, 2000))
            async with http.post(f"{fake.url}/api/v2/tracking/carts", data=body,
                                 headers=headers) as response:
                assert response.status == 400
    await client.register_product_view(VIEW)
    assert fake.product_views == [VIEW]


async def test_a_huge_success_body_is_not_read_into_memory() -> None:
    """A 2xx answer of 50 MB must not grow memory by 50 MB: the client reads a bounded start."""
    chunk = b"x" * 65_536
    size = 800 * len(chunk)  # 50 MiB

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % size)
        try:
            for _ in range(800):
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass  # the client stopped reading and closed: as intended
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with vt.TrackingClient(f"http://127.0.0.1:{port}", "k", retry=ONE_ATTEMPT,
                                     max_requests_per_second=None) as client:
            tracemalloc.start()
            try:
                await client.register_product_view(VIEW)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    finally:
        server.close()
        await server.wait_closed()
    assert peak < 8 * 1024 * 1024
