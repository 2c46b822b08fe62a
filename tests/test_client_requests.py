"""TrackingClient request building and error mapping, with aiohttp mocked by aioresponses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any
from unittest.mock import patch

import aiohttp
import orjson
import pytest
from aioresponses import aioresponses
from yarl import URL

import voyado_tracking as vt

BASE = "https://tenant.voyado.com"
KEY = "s3cret-api-key"
GUID = "0b6f7d49-3c47-4b0a-9a8e-9a1d0f6b2c11"
CARTS = f"{BASE}/api/v2/tracking/carts"
CARTS_BATCH = f"{BASE}/api/v2/tracking/carts/batch"
VIEW = f"{BASE}/api/v2/tracking/productview"
VIEWS = f"{BASE}/api/v2/tracking/productviews"
NO_RETRY = vt.RetryPolicy(max_attempts=1)


class _CompatResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 predates aiohttp 3.14's required ``stream_writer`` argument."""

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


@pytest.fixture
def mocked() -> Any:
    with patch("aioresponses.core.ClientResponse", _CompatResponse), aioresponses() as m:
        yield m


@pytest.fixture
async def client() -> AsyncIterator[vt.TrackingClient]:
    async with vt.TrackingClient(
        BASE, KEY, retry=NO_RETRY, max_requests_per_second=None
    ) as c:
        yield c


def sent(mocked: Any, url: str) -> list[Any]:
    return list(mocked.requests.get(("POST", URL(url)), []))


def body(call: Any) -> Any:
    return orjson.loads(call.kwargs["data"])


def a_cart(ref: str = "cart-1", **kw: Any) -> vt.Cart:
    kw.setdefault("time", "2021-09-22T11:00:00+02:00")
    return vt.Cart(ref, GUID, **kw)


def a_view(item: str = "sku-1", **kw: Any) -> vt.ProductView:
    kw.setdefault("time", "2021-09-22T11:00:00Z")
    return vt.ProductView(item, GUID, **kw)


# -- request building ------------------------------------------------------------------------


async def test_cart_is_posted_to_the_carts_endpoint_with_exact_body(
    mocked: Any, client: vt.TrackingClient
) -> None:
    mocked.post(CARTS, status=200)
    cart = vt.Cart(
        "cart-1",
        GUID,
        items=[vt.CartItem("sku-1", 2)],
        time=datetime(2021, 9, 22, 11, 0, tzinfo=timezone(timedelta(hours=2))),
        language="sv-SE",
        url="https://shop.example/cart",
    )
    await client.register_cart(cart)
    [call] = sent(mocked, CARTS)
    assert body(call) == {
        "cartReference": "cart-1",
        "contactId": GUID,
        "items": [{"sku": "sku-1", "quantity": 2}],
        "time": "2021-09-22T11:00:00+02:00",
        "language": "sv-SE",
        "url": "https://shop.example/cart",
    }


async def test_every_request_carries_apikey_user_agent_and_json_content_type(
    mocked: Any, client: vt.TrackingClient
) -> None:
    mocked.post(VIEW, status=200)
    await client.register_product_view(a_view())
    headers = sent(mocked, VIEW)[0].kwargs["headers"]
    assert headers["apikey"] == KEY
    assert headers["User-Agent"] == f"voyado-tracking/{vt.__version__}"
    assert headers["Content-Type"] == "application/json"


async def test_user_agent_can_be_overridden(mocked: Any) -> None:
    mocked.post(VIEW, status=200)
    async with vt.TrackingClient(BASE, KEY, user_agent="MyShop/2.1") as client:
        await client.register_product_view(a_view())
    assert sent(mocked, VIEW)[0].kwargs["headers"]["User-Agent"] == "MyShop/2.1"


@pytest.mark.parametrize("user_agent", ["", "MyShop", "My Shop 2", "shop/1\r\nX: y"])
def test_user_agent_must_look_like_system_slash_version(user_agent: str) -> None:
    with pytest.raises(ValueError, match="user_agent"):
        vt.TrackingClient(BASE, KEY, user_agent=user_agent)


async def test_product_view_with_utm_omits_absent_optional_fields(
    mocked: Any, client: vt.TrackingClient
) -> None:
    mocked.post(VIEW, status=200)
    await client.register_product_view(
        a_view(utm=[vt.Utm("utm_source", "newsletter")], new_session=True)
    )
    assert body(sent(mocked, VIEW)[0]) == {
        "itemId": "sku-1",
        "contactId": GUID,
        "time": "2021-09-22T11:00:00+00:00",
        "newSession": True,
        "utm": [{"key": "utm_source", "value": "newsletter"}],
    }


async def test_emptied_cart_is_sent_with_empty_items(
    mocked: Any, client: vt.TrackingClient
) -> None:
    mocked.post(CARTS, status=200)
    await client.register_cart(a_cart(items=()))
    assert body(sent(mocked, CARTS)[0])["items"] == []


async def test_base_url_trailing_slash_is_ignored(mocked: Any) -> None:
    mocked.post(CARTS, status=200)
    async with vt.TrackingClient(BASE + "/", KEY) as client:
        await client.register_cart(a_cart())
    assert len(sent(mocked, CARTS)) == 1


async def test_batch_calls_are_chunked_by_max_batch_size(mocked: Any) -> None:
    mocked.post(VIEWS, status=200, repeat=True)
    async with vt.TrackingClient(BASE, KEY, max_batch_size=2) as client:
        await client.register_product_views([a_view(f"sku-{i}") for i in range(5)])
    chunks = [[v["itemId"] for v in body(call)] for call in sent(mocked, VIEWS)]
    assert chunks == [["sku-0", "sku-1"], ["sku-2", "sku-3"], ["sku-4"]]


async def test_carts_batch_goes_to_the_batch_endpoint(
    mocked: Any, client: vt.TrackingClient
) -> None:
    mocked.post(CARTS_BATCH, status=200)
    await client.register_carts(a_cart(f"c{i}") for i in range(3))
    assert [c["cartReference"] for c in body(sent(mocked, CARTS_BATCH)[0])] == ["c0", "c1", "c2"]


async def test_empty_batch_sends_nothing(mocked: Any, client: vt.TrackingClient) -> None:
    await client.register_carts([])
    await client.register_product_views([])
    assert mocked.requests == {}


async def test_failed_chunk_stops_later_chunks(mocked: Any) -> None:
    mocked.post(CARTS_BATCH, status=400)
    async with vt.TrackingClient(BASE, KEY, max_batch_size=1, retry=NO_RETRY) as client:
        with pytest.raises(vt.ApiError):
            await client.register_carts([a_cart("a"), a_cart("b")])
    assert len(sent(mocked, CARTS_BATCH)) == 1


@pytest.mark.parametrize(
    ("method", "argument"),
    [
        ("register_cart", "a_view"),
        ("register_product_view", "a_cart"),
        ("register_carts", "[a_view]"),
        ("register_product_views", "[a_cart]"),
    ],
)
async def test_wrong_event_type_is_a_type_error_and_sends_nothing(
    mocked: Any, client: vt.TrackingClient, method: str, argument: str
) -> None:
    value: Any = {"a_view": a_view(), "a_cart": a_cart(), "[a_view]": [a_view()],
                  "[a_cart]": [a_cart()]}[argument]
    with pytest.raises(TypeError):
        await getattr(client, method)(value)
    assert mocked.requests == {}


async def test_wrong_type_anywhere_in_a_batch_sends_nothing(
    mocked: Any, client: vt.TrackingClient
) -> None:
    with pytest.raises(TypeError, match="element 2"):
        await client.register_product_views([a_view(), a_view(), {"itemId": "x"}])  # type: ignore[list-item]
    assert mocked.requests == {}


# -- status -> exception ---------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
async def test_401_and_403_raise_authentication_error(
    mocked: Any, client: vt.TrackingClient, status: int
) -> None:
    mocked.post(CARTS, status=status, body="no")
    with pytest.raises(vt.AuthenticationError) as info:
        await client.register_cart(a_cart())
    assert (info.value.status, info.value.retriable) == (status, False)


async def test_429_raises_rate_limit_error_with_retry_after(
    mocked: Any, client: vt.TrackingClient
) -> None:
    mocked.post(CARTS, status=429, headers={"Retry-After": "7"})
    with pytest.raises(vt.RateLimitError) as info:
        await client.register_cart(a_cart())
    assert (info.value.status, info.value.retry_after, info.value.retriable) == (429, 7.0, True)


async def test_429_without_retry_after_has_none(mocked: Any, client: vt.TrackingClient) -> None:
    mocked.post(CARTS, status=429)
    with pytest.raises(vt.RateLimitError) as info:
        await client.register_cart(a_cart())
    assert info.value.retry_after is None


@pytest.mark.parametrize("status", [400, 404, 413, 422, 501])
async def test_client_errors_and_501_are_api_errors_not_retriable(
    mocked: Any, status: int
) -> None:
    mocked.post(CARTS, status=status, body='{"error": "bad"}')
    async with vt.TrackingClient(BASE, KEY, retry=vt.RetryPolicy(max_attempts=3)) as client:
        with pytest.raises(vt.ApiError) as info:
            await client.register_cart(a_cart())
    assert type(info.value) is vt.ApiError
    assert (info.value.status, info.value.retriable) == (status, False)
    assert info.value.body == '{"error": "bad"}'
    assert len(sent(mocked, CARTS)) == 1


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504, 599])
async def test_408_and_5xx_are_retriable_api_errors(
    mocked: Any, client: vt.TrackingClient, status: int
) -> None:
    mocked.post(CARTS, status=status)
    with pytest.raises(vt.ApiError) as info:
        await client.register_cart(a_cart())
    assert (info.value.status, info.value.retriable) == (status, True)


async def test_retriable_status_is_retried_until_success(mocked: Any) -> None:
    mocked.post(CARTS, status=503)
    mocked.post(CARTS, status=200)
    policy = vt.RetryPolicy(max_attempts=3, initial_backoff=0.001, max_backoff=0.001)
    async with vt.TrackingClient(BASE, KEY, retry=policy) as client:
        await client.register_cart(a_cart())
    assert len(sent(mocked, CARTS)) == 2


async def test_error_body_is_truncated_to_about_one_kilobyte(
    mocked: Any, client: vt.TrackingClient
) -> None:
    mocked.post(CARTS, status=400, body="x" * 100_000)
    with pytest.raises(vt.ApiError) as info:
        await client.register_cart(a_cart())
    assert 1000 <= len(info.value.body) <= 1100
    assert len(str(info.value)) <= 1200


@pytest.mark.parametrize(
    "exception",
    [
        aiohttp.ClientConnectionError("refused"),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientPayloadError("broken"),
        asyncio.TimeoutError(),
        aiohttp.ServerTimeoutError("slow"),
        ConnectionResetError("reset"),
    ],
)
async def test_aiohttp_exceptions_become_transport_errors(
    mocked: Any, client: vt.TrackingClient, exception: BaseException
) -> None:
    mocked.post(CARTS, exception=exception)
    with pytest.raises(vt.TransportError) as info:
        await client.register_cart(a_cart())
    assert info.value.retriable
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


async def test_closed_client_refuses_to_send(mocked: Any) -> None:
    client = vt.TrackingClient(BASE, KEY)
    await client.aclose()
    await client.aclose()  # idempotent
    assert client.closed
    with pytest.raises(vt.VoyadoError, match="closed"):
        await client.register_cart(a_cart())


# -- constructor -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://tenant.voyado.com",
        "ftp://tenant.voyado.com",
        "tenant.voyado.com",
        "http://10.0.0.1",
        "https://user:pw@tenant.voyado.com",
        "https://tenant.voyado.com?x=1",
    ],
)
def test_base_url_must_be_https_except_loopback(url: str) -> None:
    with pytest.raises(ValueError, match="base_url"):
        vt.TrackingClient(url, KEY)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:9", BASE]
)
def test_plain_http_is_allowed_to_loopback_hosts(url: str) -> None:
    assert vt.TrackingClient(url, KEY).base_url == url


def test_a_base_url_with_a_path_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="without a path") as info:
        vt.TrackingClient("https://tenant.voyado.com/api/v2", "secret-key")
    assert "secret-key" not in str(info.value)


def test_a_base_url_with_a_trailing_slash_is_accepted() -> None:
    client = vt.TrackingClient("https://tenant.voyado.com/", "k")
    assert client.base_url == "https://tenant.voyado.com"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("timeout", 0),
        ("timeout", True),
        ("max_requests_per_second", -1),
        ("max_batch_size", 0),
        ("max_batch_size", 2.5),
    ],
)
def test_bad_client_options_are_value_errors(option: str, value: object) -> None:
    options: dict[str, Any] = {option: value}
    with pytest.raises(ValueError, match=option):
        vt.TrackingClient(BASE, KEY, **options)


def test_retry_must_be_a_retry_policy() -> None:
    with pytest.raises(TypeError, match="RetryPolicy"):
        vt.TrackingClient(BASE, KEY, retry={"max_attempts": 3})  # type: ignore[arg-type]
