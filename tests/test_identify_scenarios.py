"""Identification end to end: simulated visits through identify() and the cache against the
fake, and lookups sharing the tracking calls' rate budget (in-process and on Redis)."""

from __future__ import annotations

import asyncio

import pytest
from conftest import fast_settings

import voyado_tracking as vt
from voyado_tracking.testing import FakeVoyado
from voyado_tracking.testing._visits import simulated_contacts, simulated_visits

KEY = "DaqfT7Ys6tGqM3zbesEKpmacTJEqBCp2"
WEEK = 7 * 86_400.0


async def _identify(visit, cache: vt.ContactCache) -> str | None:  # type: ignore[no-untyped-def]
    identity = vt.identify(visit.query, visit.cookies, contact_id=visit.site_id,
                           eclub_key=KEY, eclub_max_age=WEEK)
    if identity is not None:
        return identity.contact_id
    return None if visit.email is None else await cache.email(visit.email)


async def test_simulated_visits_get_the_right_contact_with_one_lookup_per_email() -> None:
    """3,000 visits of 190 contacts: links (vtid, eclub), returning cookies, logins by email,
    junk. Every identifiable visit gets its contact, junk never becomes an id, each distinct
    email is looked up once, and the client never meets the fake's limit of twice its rate."""
    rate = 50
    contacts = simulated_contacts(3, 190)
    visits = simulated_visits(3, 3_000, contacts, eclub_key=KEY)
    assert {v.kind for v in visits} >= {"cookie", "server_cookie", "vtid", "eclub", "site",
                                        "login", "unknown_login", "junk"}
    async with FakeVoyado(rate_limit=2 * rate) as fake:
        for contact_id, email in contacts:
            fake.add_contact(contact_id, email=email)
        async with vt.TrackingClient(fake.url, fake.api_key,
                                     max_requests_per_second=rate) as client:
            cache = vt.ContactCache(client, timeout=10.0)
            found: list[str | None] = []
            for start in range(0, len(visits), 100):  # 100 requests in flight at a time
                found += await asyncio.gather(
                    *(_identify(v, cache) for v in visits[start:start + 100]))
    wrong = [(v.kind, got) for v, got in zip(visits, found, strict=True) if got != v.expected]
    assert wrong == []
    assert all(got is None for v, got in zip(visits, found, strict=True) if v.kind == "junk")
    emails = {v.email.strip().lower() for v in visits if v.email is not None}
    assert 150 < len(emails) <= 200  # 190 contacts' and 7 unknown addresses
    assert fake.lookups == len(emails)
    assert not any(r.rate_limited for r in fake.requests)


async def _tracking_and_lookups(
    fake: FakeVoyado, tracking: vt.TrackingClient, looking: vt.TrackingClient
) -> None:
    """60 single-view requests from a buffer while 40 distinct emails are looked up."""
    for n in range(40):
        fake.add_contact(email=f"shopper{n}@example.com")
    cache = vt.ContactCache(looking, timeout=10.0)
    buffer = vt.TrackingBuffer(tracking, fast_settings(max_batch_size=1, flush_interval=0.01))
    for n in range(60):
        buffer.enqueue(vt.ProductView(f"SKU-{n}", "3fa85f64-5717-4562-b3fc-2c963f66afa6"))
    found = await asyncio.gather(*(cache.email(f"shopper{n}@example.com") for n in range(40)))
    await buffer.aclose(timeout=30.0)
    assert None not in found
    assert buffer.stats.sent == 60


async def test_tracking_and_lookups_share_one_in_process_budget() -> None:
    """The client's one token bucket admits a burst of `rate`, then `rate` per second: by
    schedule no sliding second holds more than 2 * rate - 1 (the fake allows two more for
    arrival jitter), and all 100 requests take (100 - rate) / rate seconds or more. Were
    lookups outside the bucket, they would go at once and the span would be far shorter."""
    rate = 40
    async with FakeVoyado(rate_limit=2 * rate + 2) as fake, vt.TrackingClient(
        fake.url, fake.api_key, max_requests_per_second=rate
    ) as client:
        await _tracking_and_lookups(fake, client, client)
    times = sorted(r.at for r in fake.requests)
    assert len(times) == 100
    assert not any(r.rate_limited for r in fake.requests)
    # One bucket: a burst of `rate`, then one request per 1/rate s for all 100 together.
    assert times[-1] - times[0] >= (100 - rate) / rate * 0.9


@pytest.mark.fleet
async def test_tracking_and_lookups_share_one_redis_budget(redis_url: str) -> None:
    """Two clients (two processes, in effect) with their own RedisRateLimiter on one key:
    no sliding second at the fake holds more than rate + 1 of their requests."""
    rate = 40
    async with FakeVoyado(rate_limit=rate + 1) as fake:
        limiters = [vt.RedisRateLimiter(redis_url, rate=rate) for _ in range(2)]
        try:
            async with vt.TrackingClient(fake.url, fake.api_key,
                                         rate_limiter=limiters[0]) as tracking, \
                    vt.TrackingClient(fake.url, fake.api_key,
                                      rate_limiter=limiters[1]) as looking:
                await _tracking_and_lookups(fake, tracking, looking)
        finally:
            for limiter in limiters:
                await limiter.aclose()
    assert len(fake.requests) == 100
    assert not any(r.rate_limited for r in fake.requests)
    assert fake.max_requests_in_any_window() <= rate + 1
