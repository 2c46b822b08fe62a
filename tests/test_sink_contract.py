"""The EventSink contract, run over both sinks: TrackingBuffer (to the fake Voyado) and
RedisOutbox (to a real redis-server). App code typed against ``vt.EventSink`` switches
between them, so each rule here must hold for both."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST_RETRY, cart, fast_settings, view

import voyado_tracking as vt
from voyado_tracking._eventfile import line_to_event
from voyado_tracking.testing import FakeVoyado

STREAM = "contract"


class Case:
    """One sink under test: how to build it, and what reached its destination."""

    name: str

    async def sink(self, **options: Any) -> vt.EventSink:
        raise NotImplementedError

    async def unreachable(self, **options: Any) -> vt.EventSink:
        """A sink whose destination refuses connections: it holds what it takes."""
        raise NotImplementedError

    async def delivered(self) -> list[vt.Cart | vt.ProductView]:
        raise NotImplementedError

    async def close(self) -> None:
        pass


class BufferCase(Case):
    name = "TrackingBuffer"

    def __init__(self, fake: FakeVoyado, closed_port_url: str) -> None:
        self.fake, self.closed = fake, closed_port_url
        self.clients: list[vt.TrackingClient] = []

    def _client(self, url: str, key: str) -> vt.TrackingClient:
        client = vt.TrackingClient(url, key, max_requests_per_second=None, retry=FAST_RETRY)
        self.clients.append(client)
        return client

    @staticmethod
    def _settings(options: dict[str, Any]) -> vt.FlushSettings:
        keys = ("max_pending", "overflow", "flush_interval")
        values = {k: options.pop(k) for k in keys if k in options}
        values.setdefault("max_batch_size", min(500, values.get("max_pending", 500)))
        return fast_settings(**values)

    async def sink(self, **options: Any) -> vt.EventSink:
        settings = self._settings(options)
        return vt.TrackingBuffer(self._client(self.fake.url, self.fake.api_key), settings,
                                 **options)

    async def unreachable(self, **options: Any) -> vt.EventSink:
        settings = self._settings(options)
        return vt.TrackingBuffer(self._client(self.closed, "k"), settings, **options)

    async def delivered(self) -> list[vt.Cart | vt.ProductView]:
        return [*self.fake.product_views, *self.fake.carts.values()]

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()


class OutboxCase(Case):
    name = "RedisOutbox"

    def __init__(self, redis_url: str, closed_port: str) -> None:
        self.url, self.closed = redis_url, closed_port

    async def sink(self, **options: Any) -> vt.EventSink:
        options.setdefault("flush_interval", 0.05)
        return vt.RedisOutbox(self.url, stream=STREAM, **options)

    async def unreachable(self, **options: Any) -> vt.EventSink:
        options.setdefault("flush_interval", 0.05)
        return vt.RedisOutbox(self.closed, stream=STREAM, **options)

    async def delivered(self) -> list[vt.Cart | vt.ProductView]:
        import redis.asyncio as aioredis  # the optional extra: only for this case

        from voyado_tracking.redis._stream import decode_entry

        client = aioredis.from_url(self.url)
        try:
            entries = await client.xrange(STREAM)
        finally:
            await client.aclose()
        return [decode_entry(fields) for _, fields in entries]


@pytest.fixture(params=["TrackingBuffer", "RedisOutbox"])
async def case(
    request: pytest.FixtureRequest, closed_port_url: str
) -> AsyncIterator[Case]:
    if request.param == "TrackingBuffer":
        async with FakeVoyado() as fake:
            made: Case = BufferCase(fake, closed_port_url)
            yield made
            await made.close()
    else:
        redis_url = request.getfixturevalue("redis_url")  # a sync fixture
        yield OutboxCase(redis_url, closed_port_url.replace("http://", "redis://"))


def ids(events: list[vt.Cart | vt.ProductView]) -> list[str]:
    return sorted(getattr(e, "item_id", None) or e.cart_reference for e in events)  # type: ignore[union-attr]


async def test_a_sink_is_an_event_sink(case: Case) -> None:
    async with await case.sink() as sink:
        assert isinstance(sink, vt.EventSink)


async def test_flush_hands_over_everything_enqueued_before_it(case: Case) -> None:
    async with await case.sink(flush_interval=3600.0) as sink:
        for n in range(5):
            sink.enqueue(view(f"p{n}"))
        sink.enqueue(cart("c1", 1, "sku"))
        await sink.flush(timeout=10)
        assert ids(await case.delivered()) == ["c1", "p0", "p1", "p2", "p3", "p4"]


async def test_updates_of_one_cart_collapse_to_the_latest(case: Case) -> None:
    async with await case.sink(flush_interval=3600.0) as sink:
        sink.enqueue(cart("c1", 2, "new"))
        sink.enqueue(cart("c1", 1, "old"))  # older: discarded
        sink.enqueue(cart("c1", 3, "newest"))
        await sink.flush(timeout=10)
        (delivered,) = await case.delivered()
        assert delivered == cart("c1", 3, "newest")
        assert sink.stats.collapsed == 2  # type: ignore[attr-defined]


async def test_enqueue_refuses_what_is_not_an_event(case: Case) -> None:
    async with await case.sink() as sink:
        with pytest.raises(TypeError, match="dict"):
            sink.enqueue({"itemId": "p1"})  # type: ignore[arg-type]


async def test_enqueue_after_close_raises_buffer_closed(case: Case) -> None:
    async with await case.sink() as sink:
        pass
    with pytest.raises(vt.BufferClosedError):
        sink.enqueue(view("p1"))


async def test_enqueue_threadsafe_from_another_thread_is_handed_over(case: Case) -> None:
    async with await case.sink() as sink:
        future = await asyncio.to_thread(sink.enqueue_threadsafe, view("p1"))
        await asyncio.wrap_future(future)
        await sink.flush(timeout=10)
        assert ids(await case.delivered()) == ["p1"]


async def test_put_gives_up_after_its_timeout_when_full(case: Case) -> None:
    async with await case.unreachable(max_pending=2) as sink:
        await sink.put(view("p1"))
        await sink.put(view("p2"))
        with pytest.raises(vt.BufferFullError, match="max_pending=2"):
            await sink.put(view("p3"), timeout=0.2)
        await sink.aclose(timeout=0.5)


async def test_drop_oldest_drops_the_oldest_view_and_reports_it(case: Case) -> None:
    dropped: list[tuple[Any, str]] = []
    sink = await case.unreachable(
        max_pending=2, on_drop=lambda event, reason: dropped.append((event, reason))
    )
    async with sink:
        for n in range(3):
            sink.enqueue(view(f"p{n}"))
        await sink.aclose(timeout=0.5)
    assert dropped[0] == (view("p0"), "overflow")
    assert sink.stats.dropped == 3  # type: ignore[attr-defined]  # p0, then p1 and p2 at close


async def test_close_spools_what_it_could_not_hand_over_privately(
    case: Case, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.jsonl"
    async with await case.unreachable(spool_path=spool) as sink:
        sink.enqueue(view("p1"))
        sink.enqueue(cart("c1", 1, "sku"))
        await sink.aclose(timeout=0.5)
    events = [line_to_event(line) for line in spool.read_text().splitlines()]
    assert ids(events) == ["c1", "p1"]
    assert stat.S_IMODE(os.stat(spool).st_mode) == 0o600  # it holds contact ids
    assert sink.stats.spooled == 2  # type: ignore[attr-defined]


async def test_close_returns_within_its_timeout_when_the_target_is_down(case: Case) -> None:
    async with await case.unreachable() as sink:
        sink.enqueue(view("p1"))
        loop = asyncio.get_running_loop()
        started = loop.time()
        await sink.aclose(timeout=0.5)
        assert loop.time() - started < 3.0  # the timeout, plus a bounded cancel


async def test_a_sink_is_bound_to_the_loop_it_first_ran_in(case: Case) -> None:
    sink = await case.sink()
    try:
        sink.enqueue(view("p1"))
        failed: list[BaseException] = []

        def other_loop() -> None:
            async def use() -> None:
                sink.enqueue(view("p2"))

            try:
                asyncio.run(use())
            except RuntimeError as error:
                failed.append(error)

        await asyncio.to_thread(other_loop)
        assert len(failed) == 1
        assert "another event loop" in str(failed[0])
    finally:
        await sink.aclose()
