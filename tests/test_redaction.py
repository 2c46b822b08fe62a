"""The API key never appears in a repr, a log line or an exception."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator

import pytest

import voyado_tracking as vt
from voyado_tracking.testing import FakeVoyado, Fault

KEY = "k3y-THAT-must-NEVER-leak-0123456789"
GUID = "0b6f7d49-3c47-4b0a-9a8e-9a1d0f6b2c11"
QUICK = vt.RetryPolicy(max_attempts=2, initial_backoff=0.001, max_backoff=0.01)


@pytest.fixture
async def fake() -> AsyncIterator[FakeVoyado]:
    async with FakeVoyado(api_key=KEY) as server:
        yield server


def exception_chain(error: BaseException | None) -> list[BaseException]:
    chain = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def assert_no_key(error: BaseException) -> None:
    for link in exception_chain(error):
        assert KEY not in str(link)
        assert KEY not in repr(link)
        assert KEY not in repr(getattr(link, "__dict__", {}))


def test_client_repr_hides_the_key() -> None:
    client = vt.TrackingClient("https://tenant.voyado.com", KEY)
    assert KEY not in repr(client)
    assert KEY not in str(client)
    assert repr(client).startswith("voyado_tracking.TrackingClient(")


@pytest.mark.parametrize("bad_key", ["", "   ", KEY + "\n", "\x00" + KEY, KEY + "\r\nX: y"])
def test_invalid_api_key_error_does_not_echo_it(bad_key: str) -> None:
    with pytest.raises(ValueError, match="api_key") as info:
        vt.TrackingClient("https://tenant.voyado.com", bad_key)
    assert KEY not in str(info.value)


def test_swapped_arguments_do_not_echo_the_key() -> None:
    with pytest.raises(ValueError, match="base_url") as info:
        vt.TrackingClient(KEY, "https://tenant.voyado.com")
    assert KEY not in str(info.value)


def test_base_url_error_still_shows_a_url_with_a_scheme() -> None:
    with pytest.raises(ValueError, match="ftp://tenant"):
        vt.TrackingClient("ftp://tenant.voyado.com", KEY)


def test_non_string_api_key_is_rejected_without_echo() -> None:
    with pytest.raises(ValueError, match="api_key") as info:
        vt.TrackingClient("https://tenant.voyado.com", KEY.encode())  # type: ignore[arg-type]
    assert KEY not in str(info.value)


async def test_key_echoed_in_an_error_body_is_redacted(fake: FakeVoyado) -> None:
    """A proxy or gateway may echo the request headers back; ApiError.body must not."""
    fake.script(Fault(status=400, body=f"bad request, headers: apikey={KEY}"))
    async with vt.TrackingClient(fake.url, KEY, retry=QUICK) as client:
        with pytest.raises(vt.ApiError) as info:
            await client.register_product_view(vt.ProductView("sku-1", GUID))
    assert KEY not in info.value.body
    assert "apikey=" in info.value.body
    assert_no_key(info.value)


async def test_no_key_in_debug_logs_or_errors_across_failures(
    fake: FakeVoyado, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.script(
        503,
        Fault(status=429, retry_after=0.001),
        Fault(drop=True),
        Fault(status=200, delay=0.3, process=True),
        Fault(status=500, body=KEY),
        Fault(status=500, body=KEY),
        401,
    )
    errors: list[BaseException] = []
    async with vt.TrackingClient(fake.url, KEY, retry=QUICK, timeout=0.1) as client:
        for i in range(6):
            try:
                await client.register_product_view(vt.ProductView(f"sku-{i}", GUID))
            except vt.VoyadoError as error:
                errors.append(error)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with vt.TrackingClient(f"http://127.0.0.1:{port}", KEY, retry=QUICK) as client:
        try:
            await client.register_cart(vt.Cart("c", GUID))
        except vt.TransportError as error:
            errors.append(error)

    kinds = {type(e) for e in errors}
    assert {vt.ApiError, vt.AuthenticationError, vt.TransportError} <= kinds
    assert any(r.levelno == logging.DEBUG for r in caplog.records)
    assert KEY not in caplog.text
    for record in caplog.records:
        assert KEY not in record.getMessage()
    for caught in errors:
        assert_no_key(caught)


def test_recorded_requests_and_fake_repr_hold_no_key() -> None:
    fake = FakeVoyado(api_key=KEY)
    assert KEY not in repr(fake)
