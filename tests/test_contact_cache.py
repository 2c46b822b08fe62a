"""ContactCache: one lookup per key and TTL, shared by concurrent callers, bounded, impatient."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest

import voyado_tracking as vt
from voyado_tracking.testing import FakeVoyado, Fault

EMAIL = "anna.svensson@example.com"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def lookup_client(fake: FakeVoyado) -> AsyncIterator[vt.TrackingClient]:
    async with vt.TrackingClient(fake.url, fake.api_key, max_requests_per_second=None,
                                 retry=vt.RetryPolicy(initial_backoff=0.01)) as c:
        yield c


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(lookup_client: vt.TrackingClient, clock: Clock) -> vt.ContactCache:
    return vt.ContactCache(lookup_client, ttl=100.0, negative_ttl=10.0, clock=clock)


async def test_a_found_id_is_answered_from_the_cache(fake: FakeVoyado,
                                                     cache: vt.ContactCache) -> None:
    contact = fake.add_contact(email=EMAIL)
    assert await cache.email(EMAIL) == contact
    assert await cache.email(EMAIL) == contact
    assert fake.lookups == 1
    assert cache.stats.as_dict() == {"hits": 1, "misses": 1, "requests": 1, "errors": 0,
                                     "entries": 1}


async def test_emails_are_normalised_to_one_entry(fake: FakeVoyado,
                                                  cache: vt.ContactCache) -> None:
    contact = fake.add_contact(email=EMAIL)
    for typed in (EMAIL, f"  {EMAIL.upper()} ", EMAIL.capitalize()):
        assert await cache.email(typed) == contact
    assert fake.lookups == 1


async def test_concurrent_lookups_of_one_key_share_one_request(
    fake: FakeVoyado, cache: vt.ContactCache
) -> None:
    contact = fake.add_contact(email=EMAIL)
    fake.latency = 0.1
    found = await asyncio.gather(*(cache.email(EMAIL) for _ in range(20)))
    assert found == [contact] * 20
    assert fake.lookups == 1
    assert cache.stats.requests == 1


async def test_a_found_id_is_looked_up_again_after_ttl(
    fake: FakeVoyado, cache: vt.ContactCache, clock: Clock
) -> None:
    fake.add_contact(email=EMAIL)
    await cache.email(EMAIL)
    clock.now = 99.0
    await cache.email(EMAIL)
    assert fake.lookups == 1
    clock.now = 100.5
    await cache.email(EMAIL)
    assert fake.lookups == 2


async def test_an_unknown_contact_is_kept_for_negative_ttl(
    fake: FakeVoyado, cache: vt.ContactCache, clock: Clock
) -> None:
    assert await cache.email(EMAIL) is None
    clock.now = 9.0
    assert await cache.email(EMAIL) is None
    assert fake.lookups == 1
    contact = fake.add_contact(email=EMAIL)  # signed up meanwhile
    clock.now = 10.5
    assert await cache.email(EMAIL) == contact
    assert fake.lookups == 2


async def test_an_invalid_email_is_none_and_kept(fake: FakeVoyado,
                                                 cache: vt.ContactCache) -> None:
    assert await cache.email("not-an-email") is None
    assert await cache.email("not-an-email") is None
    assert fake.lookups == 1


async def test_multiple_matches_are_none_kept_and_logged_once_without_the_value(
    fake: FakeVoyado, cache: vt.ContactCache, caplog: pytest.LogCaptureFixture
) -> None:
    fake.add_contact(email=EMAIL)
    fake.add_contact(email=EMAIL)
    caplog.set_level(logging.WARNING, logger="voyado_tracking")
    results = await asyncio.gather(*(cache.email(EMAIL) for _ in range(5)))
    assert results == [None] * 5
    assert await cache.email(EMAIL) is None
    assert fake.lookups == 1
    warnings = [r for r in caplog.records if "409" in r.getMessage()]
    assert len(warnings) == 1
    assert "anna" not in warnings[0].getMessage().lower()


async def test_other_errors_reach_every_waiter_and_are_not_kept(
    fake: FakeVoyado, cache: vt.ContactCache
) -> None:
    contact = fake.add_contact(email=EMAIL)
    fake.script(500, 500, 500)  # the client's three attempts
    fake.latency = 0.05
    results = await asyncio.gather(*(cache.email(EMAIL) for _ in range(4)),
                                   return_exceptions=True)
    assert all(isinstance(r, vt.ApiError) and r.status == 500 for r in results)
    assert cache.stats.errors == 1
    fake.latency = 0.0
    assert await cache.email(EMAIL) == contact


async def test_the_least_recently_used_entry_goes_past_max_entries(
    fake: FakeVoyado, lookup_client: vt.TrackingClient
) -> None:
    cache = vt.ContactCache(lookup_client, max_entries=2)
    for name in "abc":
        fake.add_contact(email=f"{name}@example.com")
    await cache.email("a@example.com")
    await cache.email("b@example.com")
    await cache.email("a@example.com")  # a is now the most recently used
    await cache.email("c@example.com")  # evicts b
    assert cache.stats.entries == 2
    before = fake.lookups
    await cache.email("a@example.com")
    assert fake.lookups == before
    await cache.email("b@example.com")
    assert fake.lookups == before + 1


async def test_a_lookup_waits_at_most_timeout_for_a_rate_slot(fake: FakeVoyado) -> None:
    """A request handler must not queue behind a backlog for the key's budget."""
    fake.add_contact(email=EMAIL)
    async with vt.TrackingClient(fake.url, fake.api_key, max_requests_per_second=0.5) as client:
        cache = vt.ContactCache(client, timeout=0.3)
        assert await cache.email(EMAIL) is not None  # takes the only slot for 2 s
        started = time.monotonic()
        with pytest.raises(vt.RateLimitError, match="no request slot"):
            await cache.email("other@example.com")
        assert time.monotonic() - started < 0.6  # one wait of 0.3 s, not one per attempt
    assert fake.lookups == 1


async def test_a_429_answer_with_a_pause_past_timeout_is_not_waited_out(
    fake: FakeVoyado, lookup_client: vt.TrackingClient
) -> None:
    fake.script(Fault(status=429, retry_after=3))
    cache = vt.ContactCache(lookup_client, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(vt.RateLimitError):
        await cache.email(EMAIL)
    assert time.monotonic() - started < 1.0
    assert len(fake.requests) == 1


async def test_a_lookup_does_not_wait_out_a_long_429_pause(
    fake: FakeVoyado, lookup_client: vt.TrackingClient
) -> None:
    fake.script(Fault(status=429, retry_after=20))
    with pytest.raises(vt.RateLimitError):
        await lookup_client.register_product_view(
            vt.ProductView("SKU-1", "3fa85f64-5717-4562-b3fc-2c963f66afa6"))
    cache = vt.ContactCache(lookup_client, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(vt.RateLimitError, match="paused"):
        await cache.email(EMAIL)
    assert time.monotonic() - started < 0.4
    assert fake.lookups == 0


async def test_a_cancelled_caller_leaves_the_lookup_to_the_others(
    fake: FakeVoyado, cache: vt.ContactCache
) -> None:
    contact = fake.add_contact(email=EMAIL)
    fake.latency = 0.2
    first = asyncio.ensure_future(cache.email(EMAIL))
    second = asyncio.ensure_future(cache.email(EMAIL))
    await asyncio.sleep(0.05)
    first.cancel()
    assert await second == contact
    assert await cache.email(EMAIL) == contact  # kept, though its first caller left
    assert fake.lookups == 1


async def test_phone_and_custom_key_lookups(fake: FakeVoyado, cache: vt.ContactCache) -> None:
    contact = fake.add_contact(mobile_phone="+46701234567", custom_key="K-1")
    assert await cache.mobile_phone(" +46701234567 ") == contact
    assert await cache.custom_key("K-1") == contact
    assert await cache.custom_key("k-1") is None  # custom keys are not case-folded


async def test_a_blank_value_is_none_without_a_request(fake: FakeVoyado,
                                                       cache: vt.ContactCache) -> None:
    assert await cache.email("   ") is None
    assert fake.lookups == 0


async def test_the_repr_never_shows_a_value(fake: FakeVoyado, cache: vt.ContactCache) -> None:
    fake.add_contact(email=EMAIL)
    await cache.email(EMAIL)
    assert "anna" not in repr(cache).lower()
    assert repr(cache).startswith("voyado_tracking.ContactCache(")


@pytest.mark.parametrize("option", [{"ttl": 0}, {"negative_ttl": -1}, {"max_entries": 0},
                                    {"timeout": float("inf")}])
def test_options_are_validated(lookup_client: vt.TrackingClient,
                               option: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(option))):
        vt.ContactCache(lookup_client, **option)  # type: ignore[arg-type]

