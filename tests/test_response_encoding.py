"""Answers whose Content-Encoding lies, as broken proxies send them, on a real loopback server:
a 2xx is a success whatever its body, and an error keeps its status."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import attrs
import pytest
from aiohttp import web
from conftest import fast_settings, view

import voyado_tracking as vt

KEY = "test-api-key-0123456789"
LYING_CODINGS = ["gzip", "deflate", "br", "zstd"]


@attrs.define
class Proxy:
    """Answers every POST with *status*, *body* and *headers*, and records what it saw."""

    url: str = ""
    status: int = 200
    body: bytes = b'{"ok": true}'
    headers: dict[str, str] = attrs.field(factory=dict)
    seen: list[web.Request] = attrs.field(factory=list)
    peers: list[tuple[str, int]] = attrs.field(factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.seen.append(request)
        self.peers.append(request.transport.get_extra_info("peername"))  # type: ignore[union-attr]
        # Raw bytes under whatever header we were told to send: aiohttp encodes nothing here.
        return web.Response(status=self.status, body=self.body, headers=self.headers)


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    proxy = Proxy()
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    proxy.url = f"http://127.0.0.1:{port}"
    try:
        yield proxy
    finally:
        await runner.cleanup()


def lying(proxy: Proxy, coding: str) -> None:
    proxy.headers = {"Content-Encoding": coding, "Content-Type": "application/json"}


@pytest.mark.parametrize("coding", LYING_CODINGS)
async def test_a_2xx_whose_body_does_not_decode_is_one_delivered_request(
    proxy: Proxy, coding: str
) -> None:
    lying(proxy, coding)
    async with vt.TrackingClient(proxy.url, KEY, max_requests_per_second=None) as client:
        await client.register_product_view(view("p1"))
    assert len(proxy.seen) == 1


async def test_a_buffer_counts_a_2xx_whose_body_does_not_decode_as_sent_without_retry(
    proxy: Proxy,
) -> None:
    lying(proxy, "gzip")
    async with vt.TrackingClient(proxy.url, KEY, max_requests_per_second=None) as client:
        buffer = vt.TrackingBuffer(client, fast_settings())
        for n in range(3):
            buffer.enqueue(view(f"p{n}"))
        await buffer.aclose(timeout=5.0)
    assert (buffer.stats.sent, buffer.stats.retries, len(proxy.seen)) == (3, 0, 1)


async def test_a_2xx_whose_body_does_not_decode_keeps_its_connection_for_the_next_request(
    proxy: Proxy,
) -> None:
    lying(proxy, "gzip")
    async with vt.TrackingClient(proxy.url, KEY, max_requests_per_second=None) as client:
        await client.register_product_view(view("p1"))
        await client.register_product_view(view("p2"))
    assert len(proxy.peers) == 2
    assert proxy.peers[0] == proxy.peers[1]


async def test_an_error_whose_body_does_not_decode_keeps_its_status(proxy: Proxy) -> None:
    """A 400 under a lying gzip label is Voyado's 400 (not retried), not a transport failure."""
    proxy.status, proxy.body = 400, b'{"error": "contactId is unknown"}'
    lying(proxy, "gzip")
    async with vt.TrackingClient(proxy.url, KEY, max_requests_per_second=None) as client:
        with pytest.raises(vt.ApiError) as caught:
            await client.register_product_view(view("p1"))
    assert caught.value.status == 400
    assert "contactId is unknown" in caught.value.body
    assert len(proxy.seen) == 1


async def test_a_gzip_error_body_is_inflated_for_its_message(proxy: Proxy) -> None:
    proxy.status, proxy.body = 400, gzip.compress(b'{"error": "contactId is unknown"}')
    lying(proxy, "gzip")  # true this time
    async with vt.TrackingClient(proxy.url, KEY, max_requests_per_second=None) as client:
        with pytest.raises(vt.ApiError) as caught:
            await client.register_product_view(view("p1"))
    assert "contactId is unknown" in caught.value.body


async def test_requests_ask_for_bodies_without_content_coding(proxy: Proxy) -> None:
    """The client never decodes a body, so it never asks for a compressed one."""
    async with vt.TrackingClient(proxy.url, KEY, max_requests_per_second=None) as client:
        await client.register_product_view(view("p1"))
    assert proxy.seen[0].headers["Accept-Encoding"] == "identity"
