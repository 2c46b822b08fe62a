"""FakeVoyado: checks requests like Voyado, keeps cart state by instant, injects faults."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

import voyado_tracking as vt
from voyado_tracking.testing import Chaos, FakeVoyado, Fault

GUID = "0b6f7d49-3c47-4b0a-9a8e-9a1d0f6b2c11"
CARTS = "/api/v2/tracking/carts"
CARTS_BATCH = "/api/v2/tracking/carts/batch"
VIEW = "/api/v2/tracking/productview"
VIEWS = "/api/v2/tracking/productviews"
FAST_RETRY = vt.RetryPolicy(max_attempts=1)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def client(fake: FakeVoyado) -> AsyncIterator[vt.TrackingClient]:
    async with vt.TrackingClient(
        fake.url, fake.api_key, retry=FAST_RETRY, max_requests_per_second=None
    ) as c:
        yield c


def headers(fake: FakeVoyado, **overrides: str) -> dict[str, str]:
    base = {"apikey": fake.api_key, "User-Agent": "Test/1.0", "Content-Type": "application/json"}
    base.update(overrides)
    return base


def view_json(item: str = "sku-1") -> dict[str, Any]:
    return {"itemId": item, "contactId": GUID}


async def post(
    http: aiohttp.ClientSession,
    fake: FakeVoyado,
    path: str,
    payload: Any,
    hdrs: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, Any]:
    async with http.post(
        fake.url + path,
        data=orjson.dumps(payload),
        headers=headers(fake) if hdrs is None else hdrs,
        **kwargs,
    ) as response:
        raw = await response.read()
        return response.status, orjson.loads(raw) if raw else None


def cart(ref: str, time: str, *items: tuple[str, int]) -> vt.Cart:
    return vt.Cart(ref, GUID, items=[vt.CartItem(s, q) for s, q in items], time=time)


# -- what it checks --------------------------------------------------------------------------


async def test_fake_listens_on_loopback_with_a_random_port(fake: FakeVoyado) -> None:
    assert fake.url.startswith("http://127.0.0.1:")
    assert fake.port > 0
    assert "127.0.0.1" in repr(fake)


async def test_valid_request_is_answered_200_and_recorded(
    fake: FakeVoyado, http: aiohttp.ClientSession
) -> None:
    status, _ = await post(http, fake, VIEW, view_json())
    assert status == 200
    assert [(r.path, r.status, r.events, r.key_ok) for r in fake.requests] == [(VIEW, 200, 1, True)]
    assert fake.product_views == [vt.ProductView("sku-1", GUID, time=fake.product_views[0].time)]


async def test_bad_api_key_is_answered_401(fake: FakeVoyado, http: aiohttp.ClientSession) -> None:
    status, body = await post(http, fake, VIEW, view_json(), headers(fake, apikey="wrong"))
    assert status == 401
    assert "apikey" in body["error"]
    assert fake.product_views == []


async def test_missing_api_key_is_answered_401(
    fake: FakeVoyado, http: aiohttp.ClientSession
) -> None:
    hdrs = headers(fake)
    del hdrs["apikey"]
    assert (await post(http, fake, VIEW, view_json(), hdrs))[0] == 401


async def test_missing_user_agent_is_answered_400(
    fake: FakeVoyado, http: aiohttp.ClientSession
) -> None:
    hdrs = headers(fake)
    del hdrs["User-Agent"]
    status, body = await post(
        http, fake, VIEW, view_json(), hdrs, skip_auto_headers=["User-Agent"]
    )
    assert status == 400
    assert "User-Agent" in body["error"]


async def test_user_agent_without_version_is_answered_400(
    fake: FakeVoyado, http: aiohttp.ClientSession
) -> None:
    status, _ = await post(http, fake, VIEW, view_json(), headers(fake, **{"User-Agent": "Shop"}))
    assert status == 400


async def test_wrong_content_type_is_answered_500_like_engage(
    fake: FakeVoyado, http: aiohttp.ClientSession
) -> None:
    status, body = await post(
        http, fake, VIEW, view_json(), headers(fake, **{"Content-Type": "text/plain"})
    )
    assert status == 500
    assert "Content-Type" in body["error"]


async def test_invalid_event_is_answered_400_naming_the_field(
    fake: FakeVoyado, http: aiohttp.ClientSession
) -> None:
    payload = [view_json("a"), {"itemId": "b", "contactId": "not-a-guid"}]
    status, body = await post(http, fake, VIEWS, payload)
    assert status == 400
    assert (body["index"], body["field"]) == (1, "contactId")
    assert fake.product_views == []


async def test_invalid_json_is_answered_400(fake: FakeVoyado, http: aiohttp.ClientSession) -> None:
    async with http.post(fake.url + VIEW, data=b"{nope", headers=headers(fake)) as response:
        assert response.status == 400


async def test_batch_endpoint_needs_a_json_array(
    fake: FakeVoyado, http: aiohttp.ClientSession
) -> None:
    status, body = await post(http, fake, VIEWS, view_json())
    assert status == 400
    assert "array" in body["error"]


async def test_cart_without_time_is_answered_400(
    fake: FakeVoyado, http: aiohttp.ClientSession
) -> None:
    status, body = await post(http, fake, CARTS, {"cartReference": "c", "contactId": GUID})
    assert (status, body["field"]) == (400, "time")


async def test_recorded_requests_never_store_the_api_key(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    await client.register_product_view(vt.ProductView("sku-1", GUID))
    assert fake.api_key not in repr(fake.requests)
    assert not hasattr(fake.requests[0], "apikey")


# -- cart state ------------------------------------------------------------------------------


async def test_carts_are_kept_latest_by_instant(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    """09:30Z is later than 10:00+02:00, so it wins although it arrives first."""
    newer = cart("c1", "2021-09-22T09:30:00Z", ("late", 1))
    older = cart("c1", "2021-09-22T10:00:00+02:00", ("early", 1))
    await client.register_carts([newer, older])
    assert fake.carts["c1"] == newer
    assert fake.cart_updates == [newer, older]


async def test_equal_instant_later_arrival_wins(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    first = cart("c1", "2021-09-22T10:00:00+02:00", ("a", 1))
    second = cart("c1", "2021-09-22T08:00:00Z", ("b", 1))
    await client.register_cart(first)
    await client.register_cart(second)
    assert fake.carts["c1"].items == second.items


async def test_emptied_cart_replaces_its_items(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    await client.register_cart(cart("c1", "2021-09-22T10:00:00Z", ("a", 1)))
    await client.register_cart(cart("c1", "2021-09-22T10:05:00Z"))
    assert fake.carts["c1"].items == ()


async def test_product_view_counts_show_duplicates(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    view = vt.ProductView("sku-1", GUID)
    await client.register_product_views([view, view])
    assert fake.product_view_counts()[view] == 2


# -- fault injection -------------------------------------------------------------------------


async def test_scripted_faults_answer_the_next_requests_in_order(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    fake.script(503, Fault(status=429, retry_after=0.05, body="slow down"))
    view = vt.ProductView("sku-1", GUID)
    with pytest.raises(vt.ApiError) as first:
        await client.register_product_view(view)
    with pytest.raises(vt.RateLimitError) as second:
        await client.register_product_view(view)
    await client.register_product_view(view)
    assert (first.value.status, second.value.retry_after, second.value.body) == (
        503,
        0.05,
        "slow down",
    )
    assert fake.faults_injected == {"503": 1, "429": 1}
    assert len(fake.product_views) == 1


async def test_processed_fault_stores_events_then_fails(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    """Like a gateway that timed out after the backend did the work: a retry duplicates."""
    fake.script(Fault(status=504, process=True))
    with pytest.raises(vt.ApiError):
        await client.register_product_view(vt.ProductView("sku-1", GUID))
    assert len(fake.product_views) == 1


async def test_scripted_success_stores_the_events(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    """A 2xx answer, however odd its body, means Voyado kept the events."""
    fake.script(Fault(status=202, body=b"<html>ok</html>", content_type="text/html"))
    await client.register_product_view(vt.ProductView("sku-1", GUID))
    assert [v.item_id for v in fake.product_views] == ["sku-1"]
    assert fake.requests[0].events == 1


async def test_scripted_success_for_an_invalid_request_stores_nothing(
    fake: FakeVoyado, http: aiohttp.ClientSession
) -> None:
    fake.script(200)
    status, _ = await post(http, fake, VIEW, {"itemId": "x", "contactId": "bad"})
    assert status == 200
    assert fake.product_views == []


async def test_dropped_connection_gives_no_answer(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    fake.script(Fault(drop=True))
    with pytest.raises(vt.TransportError):
        await client.register_product_view(vt.ProductView("sku-1", GUID))
    assert fake.faults_injected == {"drop": 1}
    assert fake.product_views == []
    await client.register_product_view(vt.ProductView("sku-2", GUID))
    assert [v.item_id for v in fake.product_views] == ["sku-2"]


async def test_reject_item_ids_answers_400_for_batches_holding_them(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    fake.reject_item_ids.add("bad")
    views = [vt.ProductView(i, GUID) for i in ("ok", "bad")]
    with pytest.raises(vt.ApiError) as info:
        await client.register_product_views(views)
    assert info.value.status == 400
    assert orjson.loads(info.value.body)["index"] == 1
    assert fake.product_views == []


async def test_reject_cart_references_answers_400(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    fake.reject_cart_references.add("c-bad")
    with pytest.raises(vt.ApiError, match="400"):
        await client.register_cart(cart("c-bad", "2021-09-22T10:00:00Z"))
    await client.register_cart(cart("c-ok", "2021-09-22T10:00:00Z"))
    assert list(fake.carts) == ["c-ok"]


async def test_hold_parks_requests_until_release(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    fake.hold()
    task = asyncio.create_task(client.register_product_view(vt.ProductView("sku-1", GUID)))
    for _ in range(20):
        await asyncio.sleep(0.005)
        if task.done():
            break
    assert not task.done()
    assert fake.product_views == []
    fake.release()
    await asyncio.wait_for(task, 5)
    assert len(fake.product_views) == 1


async def test_latency_delays_every_answer(fake: FakeVoyado) -> None:
    fake.latency = 0.3
    async with vt.TrackingClient(fake.url, fake.api_key, timeout=0.05, retry=FAST_RETRY) as c:
        with pytest.raises(vt.TransportError, match="timed out"):
            await c.register_product_view(vt.ProductView("sku-1", GUID))


def _outcomes(fake: FakeVoyado) -> list[int]:
    return [r.status for r in fake.requests]


async def _run_chaos(seed: int) -> list[int]:
    async with FakeVoyado() as fake:
        fake.chaos(Chaos(seed=seed, error_rate=0.3, rate_limit_rate=0.2, retry_after=0.01))
        async with vt.TrackingClient(
            fake.url, fake.api_key, retry=FAST_RETRY, max_requests_per_second=None
        ) as c:
            for i in range(30):
                with contextlib.suppress(vt.ApiError):
                    await c.register_product_view(vt.ProductView(f"sku-{i}", GUID))
        return _outcomes(fake)


async def test_chaos_with_a_seed_is_reproducible() -> None:
    first, second, other = await _run_chaos(7), await _run_chaos(7), await _run_chaos(8)
    assert first == second
    assert first != other
    assert {200, 429} <= set(first)
    assert set(first) - {200, 429} <= {500, 502, 503, 504}


async def test_chaos_none_stops_faults(fake: FakeVoyado, client: vt.TrackingClient) -> None:
    fake.chaos(Chaos(error_rate=1.0))
    with pytest.raises(vt.ApiError):
        await client.register_product_view(vt.ProductView("sku-1", GUID))
    fake.chaos(None)
    await client.register_product_view(vt.ProductView("sku-1", GUID))
    assert _outcomes(fake)[-1] == 200


async def test_reset_forgets_state_and_faults(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    await client.register_cart(cart("c1", "2021-09-22T10:00:00Z"))
    fake.script(500)
    fake.reject_item_ids.add("x")
    fake.reset()
    await client.register_product_view(vt.ProductView("x", GUID))
    assert (fake.carts, len(fake.requests), fake.faults_injected) == ({}, 1, {})


async def test_reset_releases_a_hold(fake: FakeVoyado, client: vt.TrackingClient) -> None:
    fake.hold()
    fake.reset()
    await asyncio.wait_for(client.register_product_view(vt.ProductView("x", GUID)), 5)
    assert len(fake.product_views) == 1


async def test_fake_url_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = FakeVoyado().url


# -- answers like Voyado's, state for people, rate limit ------------------------------------


async def test_a_successful_answer_carries_a_json_body(
    fake: FakeVoyado, http: aiohttp.ClientSession
) -> None:
    async with http.post(fake.url + VIEW, data=orjson.dumps(view_json()),
                         headers=headers(fake)) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        assert orjson.loads(await response.read()) == {}


async def test_the_client_accepts_the_json_success_body(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    await client.register_product_views([vt.ProductView("sku-1", GUID)])
    assert [r.status for r in fake.requests] == [200]


async def test_state_endpoint_shows_latest_carts_views_and_request_counts(
    fake: FakeVoyado, client: vt.TrackingClient, http: aiohttp.ClientSession
) -> None:
    await client.register_carts([cart("c-1", "2026-11-27T10:00:00+01:00", ("A", 1)),
                                 cart("c-1", "2026-11-27T09:30:00Z", ("B", 2))])
    await client.register_product_view(vt.ProductView("sku-1", GUID, time="2026-11-27T10:00:00Z"))
    await post(http, fake, VIEW, view_json(), headers(fake, apikey="wrong"))
    async with http.get(fake.url + "/_fake/state") as response:
        assert response.status == 200
        state = orjson.loads(await response.read())
    assert state == fake.state()
    assert state["carts"] == {"c-1": {
        "cartReference": "c-1", "contactId": GUID, "time": "2026-11-27T09:30:00+00:00",
        "items": [{"sku": "B", "quantity": 2}],
    }}
    assert state["productViews"] == [
        {"itemId": "sku-1", "contactId": GUID, "time": "2026-11-27T10:00:00+00:00"}
    ]
    assert state["requests"] == {
        "total": 3,
        "byPath": {CARTS_BATCH: 1, VIEW: 2},
        "byStatus": {"200": 2, "401": 1},
    }


async def test_reading_the_state_is_not_recorded_as_a_request(
    fake: FakeVoyado, http: aiohttp.ClientSession
) -> None:
    async with http.get(fake.url + "/_fake/state") as response:
        assert response.status == 200
    assert fake.requests == []


async def test_requests_beyond_the_rate_limit_in_one_second_get_429_with_retry_after() -> None:
    async with FakeVoyado(rate_limit=5) as fake, aiohttp.ClientSession() as http:

        async def one() -> tuple[int, str | None]:
            async with http.post(fake.url + VIEW, data=orjson.dumps(view_json()),
                                 headers=headers(fake)) as response:
                return response.status, response.headers.get("Retry-After")

        answers = await asyncio.gather(*(one() for _ in range(8)))
    assert sorted(status for status, _ in answers) == [200] * 5 + [429] * 3
    assert all(int(after) >= 1 for status, after in answers if status == 429 and after)
    assert [after is not None for status, after in answers if status == 429] == [True] * 3
    assert sum(r.rate_limited for r in fake.requests) == 3
    assert len(fake.product_views) == 5


async def test_without_a_rate_limit_no_request_is_refused(
    fake: FakeVoyado, http: aiohttp.ClientSession
) -> None:
    answers = await asyncio.gather(*(post(http, fake, VIEW, view_json()) for _ in range(30)))
    assert {status for status, _ in answers} == {200}


def recorded(at: float, *, rate_limited: bool = False) -> Any:
    from voyado_tracking.testing import RecordedRequest

    return RecordedRequest(path=VIEW, status=429 if rate_limited else 200, events=1,
                           key_ok=True, user_agent="Test/1.0", content_type="application/json",
                           body=b"", at=at, rate_limited=rate_limited)


def test_max_requests_in_any_window_slides_over_accepted_arrivals() -> None:
    fake = FakeVoyado()
    fake.requests = [recorded(t) for t in (0.0, 0.2, 0.9, 1.0, 1.05, 1.1, 2.5)]
    fake.requests.append(recorded(1.0, rate_limited=True))  # refused: not in any window
    assert fake.max_requests_in_any_window() == 5  # 0.2 to 1.1
    assert fake.max_requests_in_any_window(seconds=0.5) == 4  # 0.9 to 1.1
    assert fake.max_requests_in_any_window(seconds=0.12) == 3  # 1.0, 1.05, 1.1


def test_a_window_holds_requests_less_than_its_length_apart() -> None:
    fake = FakeVoyado()
    fake.requests = [recorded(t) for t in (0.0, 1.0, 2.0)]
    assert fake.max_requests_in_any_window() == 1
    assert FakeVoyado().max_requests_in_any_window() == 0
