"""Fleet mode against a Redis that refuses writes: full (``maxmemory`` with ``noeviction``) or
demoted to a read-only replica in a failover. Real redis-servers, one per test, faults for
real: the server refuses with ``OOM`` or ``READONLY`` and the library must hold, retry and
account for every event."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from conftest import CONTACT, eventually, missing_reason

import voyado_tracking as vt
from voyado_tracking.redis import dead_stream
from voyado_tracking.redis._stream import decode_entry
from voyado_tracking.testing import FakeVoyado
from voyado_tracking.testing._redis import RedisServer

pytestmark = pytest.mark.fleet

STREAM = "voyado-tracking"
T0 = datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)
FAST = vt.FlushSettings(
    flush_interval=0.05, shutdown_timeout=5.0,
    retry=vt.RetryPolicy(max_attempts=None, initial_backoff=0.01, max_backoff=0.05,
                         max_elapsed=60.0),
)
Event = vt.Cart | vt.ProductView


# -- servers and faults -------------------------------------------------------------------------


def start_server(directory: Path) -> RedisServer:
    reason = missing_reason()
    if reason is not None:
        pytest.skip(reason)
    directory.mkdir()
    server = RedisServer(directory)
    server.start()
    return server


@pytest.fixture
def node(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone: its memory limit and role are the test's to set."""
    server = start_server(tmp_path / "node")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def r(node: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(node.url)
    yield client
    await client.aclose()


async def used_memory(r: aioredis.Redis) -> int:
    return int((await r.info("memory"))["used_memory"])


async def fill(r: aioredis.Redis) -> None:
    """Fill Redis until it refuses writes (``OOM``), and keep it full: memory the server
    frees later (a client's buffers) must not reopen room for a write."""
    await r.config_set("maxmemory", await used_memory(r) + 256 * 1024)
    try:
        for n in itertools.count():
            await r.set(f"filler:{n}", b"x" * 1024)
    except redis.exceptions.OutOfMemoryError:
        pass
    await r.config_set("maxmemory", await used_memory(r) - 32 * 1024)


async def free(r: aioredis.Redis) -> None:
    await r.config_set("maxmemory", 0)


async def refusals(r: aioredis.Redis, code: str) -> int:
    """How many commands the server refused with *code* (``OOM``, ``READONLY``) so far."""
    stats = await r.info("errorstats")
    return int(stats.get(f"errorstat_{code}", {}).get("count", 0))


async def refused(r: aioredis.Redis, code: str, more_than: int = 0) -> bool:
    """Whether the server refused more than *more_than* commands with *code* so far."""
    return await refusals(r, code) > more_than


async def rejected_calls(r: aioredis.Redis, command: str) -> int:
    """How many calls of *command* the server refused so far (before running them)."""
    stats = await r.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("rejected_calls", 0))


async def link_up(replica: aioredis.Redis) -> bool:
    return (await replica.info("replication")).get("master_link_status") == "up"


# -- events ---------------------------------------------------------------------------------------


def events(count: int, prefix: str = "") -> list[Event]:
    """*count* distinct events, one cart in ten (no two of the same cart: nothing collapses)."""
    out: list[Event] = []
    for n in range(count):
        if n % 10 == 0:
            items = (vt.CartItem(f"sku-{n}", 1),)
            out.append(vt.Cart(f"{prefix}cart-{n}", CONTACT, items=items,
                               time=T0 + timedelta(seconds=n)))
        else:
            out.append(vt.ProductView(f"{prefix}item-{n}", CONTACT, time=T0))
    return out


def key(event: Event) -> str:
    if isinstance(event, vt.Cart):
        return f"cart:{event.cart_reference}"
    return f"view:{event.item_id}"


async def stream_keys(r: aioredis.Redis, stream: str = STREAM) -> Counter[str]:
    """How often each event is in *stream*."""
    return Counter(key(decode_entry(fields)) for _, fields in await r.xrange(stream))


async def enqueue_in_bursts(outbox: vt.RedisOutbox, batch: list[Event]) -> None:
    """Enqueue *batch* 100 events at a time, letting the writer run between bursts."""
    for start in range(0, len(batch), 100):
        for event in batch[start : start + 100]:
            outbox.enqueue(event)
        await asyncio.sleep(0)


async def write(url: str, batch: list[Event]) -> None:
    async with vt.RedisOutbox(url) as outbox:
        for event in batch:
            outbox.enqueue(event)
        await outbox.flush(timeout=10)


# -- the outbox -----------------------------------------------------------------------------------


async def test_outbox_writes_each_event_once_through_a_redis_that_fills_up_mid_run(
    node: RedisServer, r: aioredis.Redis
) -> None:
    """Pipelines partly refused (OOM) are retried for the refused events only."""
    await r.config_set("maxmemory", await used_memory(r) + 300 * 1024)
    sent = events(3000)
    async with vt.RedisOutbox(node.url, flush_interval=0.01) as outbox:
        await enqueue_in_bursts(outbox, sent)
        await eventually(lambda: refused(r, "OOM"), timeout=10)
        with pytest.raises(TimeoutError):
            await outbox.flush(timeout=0.3)
        await free(r)
        await outbox.flush(timeout=20)
    assert await stream_keys(r) == Counter(key(event) for event in sent)
    stats = outbox.stats
    assert (stats.sent, stats.dropped, stats.spooled, stats.pending) == (3000, 0, 0, 0)


async def test_outbox_writes_each_event_once_across_a_failover_and_back(
    tmp_path: Path,
) -> None:
    """Its node demoted to a read-only replica, then promoted back: nothing lost, no
    duplicates."""
    primary, standby = start_server(tmp_path / "a"), start_server(tmp_path / "b")
    ra, rb = aioredis.from_url(primary.url), aioredis.from_url(standby.url)
    try:
        await rb.replicaof("127.0.0.1", primary.port)
        await eventually(lambda: link_up(rb))
        before, during = events(1000, "before-"), events(2200, "during-")
        async with vt.RedisOutbox(primary.url, flush_interval=0.01) as outbox:
            await enqueue_in_bursts(outbox, before)
            await outbox.flush(timeout=10)
            await ra.execute_command("WAIT", 1, 5000)  # the standby has them all
            # Failover: the standby takes over; the old primary becomes its replica.
            await rb.replicaof("NO", "ONE")
            await ra.replicaof("127.0.0.1", standby.port)
            await enqueue_in_bursts(outbox, during)
            await eventually(lambda: refused(ra, "READONLY"), timeout=10)
            with pytest.raises(TimeoutError):
                await outbox.flush(timeout=0.3)
            await eventually(lambda: link_up(ra))  # synced from the standby
            await ra.replicaof("NO", "ONE")
            await outbox.flush(timeout=20)
        assert await stream_keys(ra) == Counter(key(event) for event in before + during)
        assert outbox.stats.sent == 3200
    finally:
        await ra.aclose()
        await rb.aclose()
        primary.stop()
        standby.stop()


async def test_refused_writes_never_fill_max_pending_with_orphans(
    node: RedisServer, r: aioredis.Redis
) -> None:
    await fill(r)
    oom = await refusals(r, "OOM")
    async with vt.RedisOutbox(node.url, max_pending=100, flush_interval=0.01) as outbox:
        first, second = events(100, "first-"), events(100, "second-")
        await enqueue_in_bursts(outbox, first)
        await eventually(lambda: refused(r, "OOM", oom))
        await free(r)
        await outbox.flush(timeout=10)
        await enqueue_in_bursts(outbox, second)
        await outbox.flush(timeout=10)
    assert outbox.stats.dropped == 0
    assert await stream_keys(r) == Counter(key(event) for event in first + second)


async def test_outbox_spools_at_close_what_a_full_redis_refused(
    node: RedisServer, r: aioredis.Redis, tmp_path: Path
) -> None:
    await fill(r)
    oom = await refusals(r, "OOM")
    spool = tmp_path / "spool.jsonl"
    outbox = vt.RedisOutbox(node.url, spool_path=spool, flush_interval=0.01)
    await enqueue_in_bursts(outbox, events(20))
    await eventually(lambda: refused(r, "OOM", oom))
    await outbox.aclose(timeout=0.5)
    assert outbox.stats.spooled == 20
    assert len(spool.read_bytes().splitlines()) == 20
    assert await r.exists(STREAM) == 0


async def test_outbox_logs_refused_writes_with_the_server_reason(
    node: RedisServer, r: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    await fill(r)
    oom = await refusals(r, "OOM")
    outbox = vt.RedisOutbox(node.url, flush_interval=0.01)
    await enqueue_in_bursts(outbox, events(5))
    await eventually(lambda: refused(r, "OOM", oom))
    await outbox.aclose(timeout=0.2)
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelname == "WARNING"]
    assert any("Redis refused" in m and "maxmemory" in m for m in warnings), warnings


# -- the forwarder --------------------------------------------------------------------------------


async def test_forwarder_starts_on_a_full_redis_when_its_group_exists(
    node: RedisServer, r: aioredis.Redis, fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    await write(node.url, events(10))
    await r.xgroup_create(STREAM, "voyado-tracking", id="0")
    await fill(r)
    async with vt.Forwarder(client, node.url, FAST) as forwarder:
        await forwarder.flush(timeout=10)
    assert len(fake.product_views) == 9
    assert len(fake.cart_updates) == 1


async def test_forwarder_on_a_full_redis_creates_its_group_once_memory_allows(
    node: RedisServer, r: aioredis.Redis, fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    await write(node.url, events(10))
    await fill(r)
    before = await refusals(r, "OOM")
    forwarder = vt.Forwarder(client, node.url, FAST)
    try:
        await forwarder.start()  # must not raise: it retries creating the group
        await eventually(lambda: refused(r, "OOM", before + 1))  # a first try and a retry
        assert fake.requests == []
        await free(r)
        await forwarder.flush(timeout=10)
    finally:
        await forwarder.aclose()
    assert len(fake.product_views) == 9
    assert len(fake.cart_updates) == 1


async def pending(r: aioredis.Redis) -> int:
    return int((await r.xpending(STREAM, "voyado-tracking"))["pending"])


async def test_forwarder_on_a_full_redis_acks_what_it_delivered(
    node: RedisServer, r: aioredis.Redis, fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    """Acks outside a transaction (Redis refuses MULTI over maxmemory): nothing re-sent
    after ``claim_idle``."""
    sent = events(300)
    await write(node.url, sent)
    await r.xgroup_create(STREAM, "voyado-tracking", id="0")
    await fill(r)
    async with vt.Forwarder(client, node.url, FAST, claim_idle=0.3) as forwarder:
        await forwarder.flush(timeout=10)
        await eventually(lambda: _acked(r))
    assert await r.xlen(STREAM) == 0
    received = Counter(map(key, [*fake.product_views, *fake.cart_updates]))
    assert received == Counter(map(key, sent))


async def _acked(r: aioredis.Redis) -> bool:
    return await pending(r) == 0


async def test_rejected_event_stays_held_until_its_dead_letter_fits(
    node: RedisServer, r: aioredis.Redis, fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    """The dead-letter XADD refused (OOM): the entry stays pending and owned, never re-sent
    to Voyado, and lands in ``<stream>:dead`` once memory allows."""
    fake.reject_item_ids = {"bad"}
    good = events(15)
    await write(node.url, [vt.ProductView("bad", CONTACT, time=T0), *good])
    await r.xgroup_create(STREAM, "voyado-tracking", id="0")
    await fill(r)

    def tries() -> int:
        return sum(b'"bad"' in request.body for request in fake.requests)

    async with vt.Forwarder(client, node.url, FAST, claim_idle=0.3) as forwarder:
        await eventually(lambda: forwarder.stats.dead_lettered == 1)
        await eventually(lambda: _length(r, STREAM, 1))
        rejected = tries()
        await asyncio.sleep(1.0)  # over three times claim_idle: a lapsed hold is re-claimed
        assert tries() == rejected
        assert await pending(r) == 1
        assert await r.xlen(dead_stream(STREAM)) == 0
        await free(r)
        await eventually(lambda: _length(r, dead_stream(STREAM), 1))
        await eventually(lambda: _length(r, STREAM, 0))
    (entry,) = await r.xrange(dead_stream(STREAM))
    assert decode_entry(entry[1]) == vt.ProductView("bad", CONTACT, time=T0)
    assert b"400" in entry[1][b"error"]
    assert Counter(map(key, [*fake.product_views, *fake.cart_updates])) == Counter(map(key, good))


async def _length(r: aioredis.Redis, stream: str, expected: int) -> bool:
    return int(await r.xlen(stream)) == expected


async def test_forwarder_closing_on_a_full_redis_says_what_stays_pending(
    node: RedisServer, r: aioredis.Redis, fake: FakeVoyado, client: vt.TrackingClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A dead letter Redis never took by the close: bounded, and said, not silently left."""
    fake.reject_item_ids = {"bad"}
    await write(node.url, [vt.ProductView("bad", CONTACT, time=T0)])
    await r.xgroup_create(STREAM, "voyado-tracking", id="0")
    await fill(r)
    forwarder = vt.Forwarder(client, node.url, FAST)
    await forwarder.start()
    await eventually(lambda: forwarder.stats.dead_lettered == 1)
    await asyncio.wait_for(forwarder.aclose(timeout=0.5), 2.0)
    assert any("1 dead letters" in rec.getMessage() for rec in caplog.records)
    assert await pending(r) == 1


async def test_forwarder_acks_across_a_failover_and_back_without_sending_twice(
    tmp_path: Path, fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    """Its node turns read-only while requests are in flight: the acks wait, nothing is
    taken in again and re-sent once the node is writable."""
    primary, standby = start_server(tmp_path / "a"), start_server(tmp_path / "b")
    ra, rb = aioredis.from_url(primary.url), aioredis.from_url(standby.url)
    sent = events(200)
    try:
        await rb.replicaof("127.0.0.1", primary.port)
        await eventually(lambda: link_up(rb))
        await write(primary.url, sent)
        fake.hold()
        async with vt.Forwarder(client, primary.url, FAST, claim_idle=0.3) as forwarder:
            await eventually(lambda: forwarder.stats.in_flight == 200)
            await ra.execute_command("WAIT", 1, 5000)  # the standby has the group's state
            await rb.replicaof("NO", "ONE")
            await ra.replicaof("127.0.0.1", standby.port)
            await eventually(lambda: link_up(ra))
            fake.release()
            await eventually(lambda: forwarder.stats.sent == 200)
            await eventually(lambda: _refused_an_ack(ra))
            await ra.replicaof("NO", "ONE")
            await forwarder.flush(timeout=15)
            await eventually(lambda: _acked_on(ra))
        received = Counter(map(key, [*fake.product_views, *fake.cart_updates]))
        assert received == Counter(map(key, sent))
    finally:
        await ra.aclose()
        await rb.aclose()
        primary.stop()
        standby.stop()


async def _refused_an_ack(r: aioredis.Redis) -> bool:
    return await rejected_calls(r, "xack") > 0


async def _acked_on(r: aioredis.Redis) -> bool:
    return await pending(r) == 0 and await r.xlen(STREAM) == 0
