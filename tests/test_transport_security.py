"""Transport security: TLS verified by default, plain http only to loopback hosts."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import pytest
import trustme

import voyado_tracking as vt
from voyado_tracking.testing import FakeVoyado

VIEW = vt.ProductView("p1", "3fa85f64-5717-4562-b3fc-2c963f66afa6")


@pytest.fixture
async def tls_fake() -> AsyncIterator[FakeVoyado]:
    """A fake serving HTTPS with a certificate from a CA nobody trusts."""
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    async with FakeVoyado(ssl_context=server_context) as fake:
        yield fake


async def test_tls_certificates_are_verified_by_default(tls_fake: FakeVoyado) -> None:
    assert tls_fake.url.startswith("https://127.0.0.1:")
    async with vt.TrackingClient(
        tls_fake.url, tls_fake.api_key, retry=vt.RetryPolicy(max_attempts=1)
    ) as client:
        with pytest.raises(vt.TransportError, match=r"(?i)certificate"):
            await client.register_product_view(VIEW)
    assert tls_fake.product_views == []


async def test_verify_tls_false_is_the_explicit_way_to_skip_verification(
    tls_fake: FakeVoyado,
) -> None:
    async with vt.TrackingClient(tls_fake.url, tls_fake.api_key, verify_tls=False) as client:
        await client.register_product_view(VIEW)
    assert tls_fake.product_views == [VIEW]


@pytest.mark.parametrize(
    "url",
    ["http://example.voyado.com", "http://10.0.0.5", "http://192.168.1.2:8080", "ftp://x.se"],
)
def test_plain_http_to_a_non_loopback_host_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="https"):
        vt.TrackingClient(url, "key")


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080", "http://localhost:1234", "http://[::1]:99", "http://127.9.9.9"]
)
def test_plain_http_to_loopback_is_allowed_for_the_fake_server(url: str) -> None:
    assert vt.TrackingClient(url, "key").base_url.startswith("http://")
