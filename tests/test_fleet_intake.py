"""RedisOutbox, RedisRateLimiter, the entry format and the lazy fleet names."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import fakeredis
import pytest
import redis.asyncio as aioredis
from conftest import cart, free_port, view

import voyado_tracking as vt
from voyado_tracking.redis._ledger import Ledger
from voyado_tracking.redis._stream import decode_entry, encode_entry
from voyado_tracking.testing import FakeVoyado

# -- the entry format and the ledger (pure) ---------------------------------------------------


def test_entry_carries_format_version_and_json_lines_record() -> None:
    entry = encode_entry(view("sku-1"))
    assert entry[b"v"] == b"1"
    assert entry[b"e"].startswith(b'{"type":"product_view"')
    assert decode_entry(entry) == view("sku-1")


def test_entry_of_unknown_format_version_is_refused() -> None:
    with pytest.raises(vt.InvalidEventError, match="format version 2"):
        decode_entry({b"v": b"2", b"e": encode_entry(view("sku-1"))[b"e"]})


def test_delivered_cart_settles_the_updates_it_replaced() -> None:
    ledger = Ledger()
    older, newer = cart("c1", minute=1), cart("c1", minute=2)
    ledger.add("1-0", newer)
    ledger.add("2-0", older)  # arrived later, older instant: collapsed away
    assert sorted(ledger.settle([newer])) == ["1-0", "2-0"]
    assert len(ledger) == 0


def test_delivered_cart_leaves_newer_updates_held() -> None:
    ledger = Ledger()
    sent, newer = cart("c1", minute=1), cart("c1", minute=2)
    ledger.add("1-0", sent)
    ledger.add("2-0", newer)
    assert ledger.settle([sent]) == ["1-0"]
    assert "2-0" in ledger


def test_delivered_cart_leaves_a_later_update_with_the_same_time_held() -> None:
    ledger = Ledger()
    sent, later = cart("c1", minute=1), cart("c1", minute=1)
    ledger.add("1-0", sent)
    ledger.add("2-0", later)
    assert ledger.settle([sent]) == ["1-0"]


# -- the lazy names ---------------------------------------------------------------------------


def test_import_never_needs_redis_and_fleet_names_say_which_extra() -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import voyado_tracking as vt\n"
        "try:\n    vt.RedisOutbox\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "voyado-tracking[redis]" in out


def test_the_fleet_test_helpers_import_without_redis() -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import voyado_tracking.testing, voyado_tracking.testing._fleet\n"
        "import voyado_tracking.testing._redis\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_buffer_and_outbox_are_event_sinks(fake: FakeVoyado) -> None:
    client = vt.TrackingClient(fake.url, fake.api_key)
    assert isinstance(vt.TrackingBuffer(client), vt.EventSink)
    assert isinstance(vt.RedisOutbox(fakeredis.FakeAsyncRedis()), vt.EventSink)


# -- the outbox -------------------------------------------------------------------------------


@pytest.fixture
def fake_redis() -> fakeredis.FakeAsyncRedis:
    return fakeredis.FakeAsyncRedis()


async def test_outbox_writes_one_entry_per_event(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    async with vt.RedisOutbox(fake_redis, stream="s") as outbox:
        for n in range(5):
            outbox.enqueue(view(f"sku-{n}"))
        await outbox.flush()
        assert outbox.stats.sent == 5
    entries = await fake_redis.xrange("s")
    assert [decode_entry(fields) for _, fields in entries] == [view(f"sku-{n}") for n in range(5)]


async def test_outbox_never_closes_a_borrowed_client(
    fake_redis: fakeredis.FakeAsyncRedis,
) -> None:
    async with vt.RedisOutbox(fake_redis) as outbox:
        outbox.enqueue(view("sku-1"))
    assert await fake_redis.ping()


def unreachable() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


async def test_outbox_holds_events_while_redis_is_unreachable_within_its_bound() -> None:
    dropped: list[tuple[object, str]] = []
    outbox = vt.RedisOutbox(unreachable(), max_pending=10,
                            on_drop=lambda e, why: dropped.append((e, why)))
    for n in range(15):
        outbox.enqueue(view(f"sku-{n}"))
    await asyncio.sleep(0.2)
    assert outbox.stats.pending == 10
    assert outbox.stats.dropped == 5
    assert {why for _, why in dropped} == {"overflow"}
    await outbox.aclose(timeout=0.1)


async def test_outbox_spools_what_redis_never_took(tmp_path: Path) -> None:
    spool = tmp_path / "spool.jsonl"
    outbox = vt.RedisOutbox(unreachable(), spool_path=spool)
    for n in range(3):
        outbox.enqueue(view(f"sku-{n}"))
    await outbox.aclose(timeout=0.2)
    assert outbox.stats.spooled == 3
    assert len(spool.read_bytes().splitlines()) == 3


async def test_outbox_accounting_adds_up(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    async with vt.RedisOutbox(fake_redis) as outbox:
        for minute in range(3):
            outbox.enqueue(cart("c1", minute=minute))
        outbox.enqueue(view("sku-1"))
    s = outbox.stats
    assert s.enqueued == s.collapsed + s.sent + s.dropped + s.spooled + s.pending
    assert s.pending == 0


async def test_outbox_refuses_events_after_close(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    outbox = vt.RedisOutbox(fake_redis)
    await outbox.aclose()
    with pytest.raises(vt.BufferClosedError):
        outbox.enqueue(view("sku-1"))


# -- the shared rate limiter (real Redis: it runs Lua) ----------------------------------------


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.mark.fleet
async def test_shared_limiter_never_admits_more_than_rate_plus_one_in_a_second(
    r: aioredis.Redis,
) -> None:
    limiters = [vt.RedisRateLimiter(r, rate=20.0, key="k") for _ in range(3)]
    admitted: list[float] = []

    async def take(limiter: vt.RedisRateLimiter) -> None:
        for _ in range(10):
            await limiter.acquire(None)
            admitted.append(time.monotonic())

    await asyncio.gather(*(take(limiter) for limiter in limiters))
    admitted.sort()
    assert max(sum(1 for t in admitted if s <= t < s + 1.0) for s in admitted) <= 21


@pytest.mark.fleet
async def test_a_429_pause_holds_every_limiter_of_the_key(r: aioredis.Redis) -> None:
    first = vt.RedisRateLimiter(r, rate=40.0, key="k")
    second = vt.RedisRateLimiter(r, rate=40.0, key="k")
    await first.pause(5.0)
    with pytest.raises(vt.RateLimitError):
        await second.acquire(max_pause=1.0)


@pytest.mark.fleet
async def test_default_limiter_key_is_a_hash_never_the_api_key(
    fake: FakeVoyado, r: aioredis.Redis
) -> None:
    limiter = vt.RedisRateLimiter(r)
    async with vt.TrackingClient(fake.url, fake.api_key, rate_limiter=limiter) as client:
        await client.register_product_view(view("sku-1"))
    assert limiter.key is not None
    assert fake.api_key not in limiter.key
    keys = [k.decode() for k in await r.keys("*")]
    assert keys
    assert all(fake.api_key not in k for k in keys)
    other = vt.RedisRateLimiter(r)
    vt.TrackingClient(fake.url, "another-key", rate_limiter=other)
    assert other.key != limiter.key
