"""TrackingBuffer against the real loopback FakeVoyado: delivery, triggers, failures, shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import os
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from conftest import CONTACT, cart, eventually, fast_settings, run_then_collect, view

import voyado_tracking as vt
from voyado_tracking._eventfile import line_to_event
from voyado_tracking.testing import FakeClock, FakeVoyado, Fault

settings = fast_settings


# -- delivery and triggers ----------------------------------------------------------------


async def test_flush_delivers_everything_enqueued_before_it(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    async with vt.TrackingBuffer(client, settings(flush_interval=3600)) as buffer:
        views = [view(f"p{i}") for i in range(1200)]
        for v in views:
            buffer.enqueue(v)
        buffer.enqueue(cart("c1", 1, "a"))
        await buffer.flush(timeout=10)
        assert fake.product_views == views
        assert fake.carts == {"c1": cart("c1", 1, "a")}
        assert buffer.stats.sent == 1201


async def test_size_trigger_flushes_without_waiting_for_the_interval(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    async with vt.TrackingBuffer(
        client, settings(max_batch_size=50, flush_interval=3600)
    ) as buffer:
        for i in range(50):
            buffer.enqueue(view(f"p{i}"))
        await eventually(lambda: len(fake.product_views) == 50)
        assert [r.events for r in fake.requests] == [50]


async def test_time_trigger_flushes_a_partial_batch_after_the_interval(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    clock = FakeClock()
    async with vt.TrackingBuffer(
        client, settings(max_batch_size=500, flush_interval=60), clock=clock
    ) as b:
        b.enqueue(view("p1"))
        await clock.advance(59.9)
        await asyncio.sleep(0.05)
        assert fake.requests == []  # below the size threshold: waits for the interval
        await clock.advance(0.2)
        await eventually(lambda: len(fake.product_views) == 1, timeout=5)


async def test_time_trigger_applies_to_carts_separately(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    clock = FakeClock()
    async with vt.TrackingBuffer(
        client, settings(max_batch_size=500, flush_interval=60), clock=clock
    ) as b:
        b.enqueue(view("p1"))
        await clock.advance(30)
        b.enqueue(cart("c1", 1, "a"))
        await clock.advance(30.1)  # the view is due, the cart is not
        await eventually(lambda: len(fake.product_views) == 1, timeout=5)
        await asyncio.sleep(0.05)
        assert "c1" not in fake.carts
        await clock.advance(30)
        await eventually(lambda: "c1" in fake.carts, timeout=5)
        assert [r.path for r in fake.requests] == [
            "/api/v2/tracking/productviews", "/api/v2/tracking/carts/batch"
        ]


async def test_a_503_with_retry_after_delays_the_buffer_s_next_attempt(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    clock = FakeClock()
    fake.script(Fault(status=503, retry_after=2))
    async with vt.TrackingBuffer(
        client, settings(retry=vt.RetryPolicy(max_attempts=None, initial_backoff=0.01,
                                               max_backoff=0.05, max_elapsed=60)), clock=clock
    ) as b:
        b.enqueue(view("p1"))
        await clock.advance(0.05)  # the flush interval: sent, answered 503 at t=0.05
        await eventually(lambda: len(fake.requests) == 1)
        await asyncio.sleep(0.05)  # the answer is read while the clock stands still
        await clock.advance(1.9)
        await asyncio.sleep(0.05)
        assert len(fake.requests) == 1  # the backoff alone would have retried by now
        await clock.advance(0.2)
        await eventually(lambda: len(fake.product_views) == 1)
    assert [r.status for r in fake.requests] == [503, 200]


async def test_cart_updates_are_collapsed_before_sending(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    async with vt.TrackingBuffer(client, settings(flush_interval=3600)) as buffer:
        for second in range(30):
            buffer.enqueue(cart("c1", second, f"sku{second}"))
        buffer.enqueue(cart("c1", 5, "older"))
        await buffer.flush(timeout=10)
    assert len(fake.cart_updates) == 1
    assert fake.carts["c1"] == cart("c1", 29, "sku29")
    assert buffer.stats.collapsed == 30


async def test_emptied_cart_is_sent_with_empty_items(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    async with vt.TrackingBuffer(client, settings()) as buffer:
        buffer.enqueue(cart("c1", 1, "a"))
        buffer.enqueue(cart("c1", 2))
    assert b'"items":[]' in fake.requests[-1].body
    assert fake.carts["c1"].items == ()


async def test_batches_never_exceed_max_batch_bytes(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    url = "https://shop.example/" + "x" * 400
    async with vt.TrackingBuffer(
        client, settings(max_batch_bytes=4096, flush_interval=3600)
    ) as buffer:
        for i in range(40):
            buffer.enqueue(vt.ProductView(f"p{i}", CONTACT, url=url))
        await buffer.flush(timeout=10)
    assert len(fake.product_views) == 40
    assert all(len(r.body) <= 4096 for r in fake.requests)
    assert len(fake.requests) >= 40 * 400 // 4096


# -- failures -----------------------------------------------------------------------------


async def test_503_is_retried_and_the_batch_delivered(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    fake.script(503, 503)
    async with vt.TrackingBuffer(client, settings()) as buffer:
        views = [view(f"p{i}") for i in range(10)]
        for v in views:
            buffer.enqueue(v)
        await buffer.flush(timeout=10)
        assert fake.product_views == views
        assert (buffer.stats.retries, buffer.stats.requests) == (2, 3)


async def test_dropped_connection_is_retried_without_loss(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    fake.script(Fault(drop=True))
    async with vt.TrackingBuffer(client, settings()) as buffer:
        buffer.enqueue(view("p1"))
        await buffer.flush(timeout=10)
    assert [v.item_id for v in fake.product_views] == ["p1"]


async def test_429_pauses_the_buffer_and_direct_client_calls(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    fake.script(Fault(status=429, retry_after=0.6))
    async with vt.TrackingBuffer(client, settings()) as buffer:
        buffer.enqueue(view("p1"))
        await eventually(lambda: len(fake.requests) == 1)
        started = time.monotonic()
        await client.register_product_view(view("direct"))  # waits for the shared gate
        waited = time.monotonic() - started
        await buffer.flush(timeout=10)
    assert waited >= 0.4
    assert sorted(v.item_id for v in fake.product_views) == ["direct", "p1"]


async def test_one_bad_event_in_500_is_isolated_by_bisection(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    dead: list[tuple[Any, vt.VoyadoError]] = []
    fake.reject_item_ids.add("bad")
    async with vt.TrackingBuffer(
        client, settings(flush_interval=3600), on_dead_letter=lambda e, err: dead.append((e, err))
    ) as buffer:
        for i in range(500):
            buffer.enqueue(view("bad" if i == 321 else f"p{i}"))
        await buffer.flush(timeout=20)
        stats = buffer.stats
    assert len(fake.product_views) == 499
    assert [e.item_id for e, _ in dead] == ["bad"]  # type: ignore[union-attr]
    assert isinstance(dead[0][1], vt.ApiError)
    assert dead[0][1].status == 400
    assert (stats.sent, stats.dead_lettered) == (499, 1)
    assert stats.requests <= 1 + 2 * math.ceil(math.log2(500))


async def test_413_splits_the_batch_until_it_fits(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    fake.script(413, 413)
    async with vt.TrackingBuffer(client, settings(flush_interval=3600)) as buffer:
        for i in range(8):
            buffer.enqueue(view(f"p{i}"))
        await buffer.flush(timeout=10)
        assert buffer.stats.dead_lettered == 0
    assert len(fake.product_views) == 8


async def test_authentication_failure_dead_letters_the_batch(fake: FakeVoyado) -> None:
    dead: list[Any] = []
    async with vt.TrackingClient(fake.url, "wrong-key") as client, vt.TrackingBuffer(
        client, settings(), on_dead_letter=lambda e, err: dead.append(type(err))
    ) as buffer:
        for i in range(5):
            buffer.enqueue(view(f"p{i}"))
        await buffer.flush(timeout=10)
        assert buffer.stats.dead_lettered == 5
    assert dead == [vt.AuthenticationError] * 5
    assert len(fake.requests) == 1  # not retried


async def test_exhausted_retry_budget_dead_letters_the_batch(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    fake.script(*[503] * 10)
    policy = vt.RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)
    async with vt.TrackingBuffer(client, settings(retry=policy)) as buffer:
        buffer.enqueue(view("p1"))
        await buffer.flush(timeout=10)
        assert (buffer.stats.dead_lettered, buffer.stats.retries) == (1, 2)
    assert len(fake.requests) == 3


# -- memory bound and backpressure --------------------------------------------------------


async def test_in_flight_events_are_never_dropped_on_overflow(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    drops: list[tuple[Any, str]] = []
    fake.hold()
    async with vt.TrackingBuffer(
        client, settings(max_batch_size=5, max_pending=5), on_drop=lambda e, r: drops.append((e, r))
    ) as buffer:
        sent = [view(f"p{i}") for i in range(5)]
        for v in sent:
            buffer.enqueue(v)
        await eventually(lambda: buffer.stats.in_flight == 5)
        extra = view("extra")
        buffer.enqueue(extra)
        fake.release()
        await buffer.flush(timeout=10)
    assert drops == [(extra, "overflow")]
    assert fake.product_views == sent


async def test_put_waits_for_room_instead_of_dropping(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    fake.hold()
    async with vt.TrackingBuffer(client, settings(max_batch_size=5, max_pending=5)) as buffer:
        for i in range(5):
            await buffer.put(view(f"p{i}"))
        waiting = asyncio.ensure_future(buffer.put(view("p5")))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        fake.release()
        await asyncio.wait_for(waiting, 10)
        await buffer.flush(timeout=10)
        assert buffer.stats.dropped == 0
    assert len(fake.product_views) == 6


async def test_put_raises_buffer_full_after_its_timeout(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    fake.hold()
    buffer = vt.TrackingBuffer(client, settings(max_batch_size=2, max_pending=2))
    for i in range(2):
        buffer.enqueue(view(f"p{i}"))
    with pytest.raises(vt.BufferFullError):
        await buffer.put(view("p2"), timeout=0.1)
    fake.release()
    await buffer.aclose()
    assert len(fake.product_views) == 2


async def test_flush_raises_timeout_error_when_it_cannot_finish(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    fake.hold()
    buffer = vt.TrackingBuffer(client, settings())
    buffer.enqueue(view("p1"))
    with pytest.raises(TimeoutError):
        await buffer.flush(timeout=0.1)
    fake.release()
    await buffer.aclose()
    assert len(fake.product_views) == 1


# -- shutdown -----------------------------------------------------------------------------


async def test_close_drains_pending_events(fake: FakeVoyado, client: vt.TrackingClient) -> None:
    buffer = vt.TrackingBuffer(client, settings(flush_interval=3600))
    for i in range(30):
        buffer.enqueue(view(f"p{i}"))
    await buffer.aclose()
    assert len(fake.product_views) == 30
    assert buffer.stats.sent == 30


async def test_close_spools_everything_when_the_server_is_down_within_its_deadline(
    closed_port_url: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.jsonl"
    events: list[Any] = [view(f"p{i}") for i in range(20)] + [cart("c1", 1, "a")]
    async with vt.TrackingClient(closed_port_url, "k", max_requests_per_second=None) as client:
        buffer = vt.TrackingBuffer(client, settings(), spool_path=spool)
        for e in events:
            buffer.enqueue(e)
        started = time.monotonic()
        await buffer.aclose(timeout=0.5)
        took = time.monotonic() - started
    spooled = [line_to_event(line) for line in spool.read_bytes().splitlines()]
    assert sorted(map(repr, spooled)) == sorted(map(repr, events))
    assert buffer.stats.spooled == 21
    assert buffer.stats.dropped == 0
    assert took < 2.5


async def test_close_spools_batches_still_in_flight(
    fake: FakeVoyado, client: vt.TrackingClient, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.jsonl"
    fake.hold()
    buffer = vt.TrackingBuffer(client, settings(), spool_path=spool)
    for i in range(10):
        buffer.enqueue(view(f"p{i}"))
    await eventually(lambda: buffer.stats.in_flight == 10)
    await buffer.aclose(timeout=0.2)
    assert len(spool.read_bytes().splitlines()) == 10
    assert (buffer.stats.spooled, buffer.stats.in_flight) == (10, 0)
    fake.release()


async def test_close_without_spool_counts_the_rest_as_dropped_with_one_warning(
    closed_port_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    drops: list[str] = []
    async with vt.TrackingClient(closed_port_url, "k") as client:
        buffer = vt.TrackingBuffer(client, settings(), on_drop=lambda e, r: drops.append(r))
        for i in range(7):
            buffer.enqueue(view(f"p{i}"))
        with caplog.at_level(logging.WARNING, logger="voyado_tracking"):
            await buffer.aclose(timeout=0.3)
    assert drops == ["shutdown"] * 7
    shutdown_warnings = [r for r in caplog.records if "at shutdown" in r.getMessage()]
    assert len(shutdown_warnings) == 1


async def test_enqueue_after_close_raises_buffer_closed(client: vt.TrackingClient) -> None:
    buffer = vt.TrackingBuffer(client, settings())
    await buffer.aclose()
    await buffer.aclose()  # idempotent
    with pytest.raises(vt.BufferClosedError):
        buffer.enqueue(view("p1"))
    with pytest.raises(vt.BufferClosedError):
        await buffer.put(view("p1"))


async def test_cancelling_the_owner_task_during_close_loses_nothing(
    fake: FakeVoyado, client: vt.TrackingClient, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.jsonl"
    fake.hold()
    buffer = vt.TrackingBuffer(client, settings(), spool_path=spool)
    for i in range(10):
        buffer.enqueue(view(f"p{i}"))
    closing = asyncio.ensure_future(buffer.aclose(timeout=30))
    await asyncio.sleep(0.1)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    fake.release()
    stats = buffer.stats
    assert stats.sent + stats.spooled == 10
    assert stats.in_flight == stats.pending_product_views == 0


# -- loop, threads, misuse ------------------------------------------------------------------


async def test_enqueue_rejects_anything_but_events(client: vt.TrackingClient) -> None:
    async with vt.TrackingBuffer(client, settings()) as buffer:
        with pytest.raises(TypeError, match="Cart or ProductView"):
            buffer.enqueue({"itemId": "p1"})  # type: ignore[arg-type]
        assert buffer.stats.enqueued == 0


async def test_enqueue_threadsafe_delivers_events_from_other_threads(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    async with vt.TrackingBuffer(client, settings()) as buffer:
        def produce(worker: int) -> None:
            futures = [buffer.enqueue_threadsafe(view(f"w{worker}-{i}")) for i in range(100)]
            for f in futures:
                f.result(timeout=10)

        threads = [threading.Thread(target=produce, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        await asyncio.get_running_loop().run_in_executor(None, lambda: [t.join() for t in threads])
        await buffer.flush(timeout=10)
    assert len(fake.product_views) == 400


def test_enqueue_without_a_running_loop_fails_loudly() -> None:
    client = vt.TrackingClient("http://127.0.0.1:9", "k")
    buffer = vt.TrackingBuffer(client, settings())
    with pytest.raises(RuntimeError, match="enqueue_threadsafe"):
        buffer.enqueue(view("p1"))


def test_buffer_used_from_another_event_loop_fails_loudly() -> None:
    client = vt.TrackingClient("http://127.0.0.1:9", "k")

    async def make() -> vt.TrackingBuffer:
        b = vt.TrackingBuffer(client, settings())
        b.enqueue(view("p1"))
        return b

    held = [asyncio.run(make())]

    async def use_elsewhere() -> None:
        held[0].enqueue(view("p2"))

    with pytest.raises(RuntimeError, match="another event loop"):
        asyncio.run(use_elsewhere())
    with warnings.catch_warnings():  # the first loop is gone: nothing to close
        warnings.simplefilter("ignore", ResourceWarning)
        held.clear()
        gc.collect()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
async def test_buffer_refuses_to_work_in_a_forked_child(client: vt.TrackingClient) -> None:
    async with vt.TrackingBuffer(client, settings()) as buffer:
        buffer.enqueue(view("p1"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads
            pid = os.fork()
        if pid == 0:  # the child
            try:
                buffer.enqueue(view("p2"))
            except RuntimeError as error:
                os._exit(0 if "forked" in str(error) else 2)
            os._exit(1)
        _, status = os.waitpid(pid, 0)  # noqa: ASYNC222 (the child exits at once)
        assert os.waitstatus_to_exitcode(status) == 0


def test_unclosed_buffer_holding_events_warns_when_collected() -> None:
    async def forget_to_close() -> None:
        client = vt.TrackingClient("http://127.0.0.1:9", "k")
        buffer = vt.TrackingBuffer(client, settings(flush_interval=3600))
        buffer.enqueue(view("p1"))

    with pytest.warns(ResourceWarning, match="1 undelivered events"):
        run_then_collect(forget_to_close())


async def test_buffer_logs_never_contain_the_api_key(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    secret = "s3cr3t-api-key-value"
    async with FakeVoyado(api_key=secret) as server:
        server.script(503, Fault(drop=True), 400)
        async with vt.TrackingClient(server.url, secret) as client:
            with caplog.at_level(logging.DEBUG, logger="voyado_tracking"):
                async with vt.TrackingBuffer(
                    client, settings(), spool_path=tmp_path / "s.jsonl"
                ) as buffer:
                    for i in range(3):
                        buffer.enqueue(view(f"p{i}"))
                    await buffer.flush(timeout=10)
                    text = repr(buffer) + repr(buffer.stats)
    assert caplog.records
    assert secret not in caplog.text
    assert secret not in text


async def test_cancelling_the_task_that_owns_the_buffer_delivers_or_spools_everything(
    fake: FakeVoyado, client: vt.TrackingClient, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.jsonl"
    started = asyncio.Event()

    async def worker() -> None:
        async with vt.TrackingBuffer(
            client, settings(flush_interval=3600), spool_path=spool
        ) as buffer:
            for i in range(50):
                buffer.enqueue(view(f"p{i}"))
            started.set()
            await asyncio.sleep(3600)  # the app's main loop, cancelled at shutdown

    task = asyncio.ensure_future(worker())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    spooled = spool.read_bytes().splitlines() if spool.exists() else []
    assert len(fake.product_views) + len(spooled) == 50


async def test_flush_waits_for_earlier_events_even_when_later_ones_are_delivered(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    """Later carts going through must not make flush() forget a view still being retried."""
    original = client.transport.post
    failing = True

    async def views_fail(path: str, body: bytes, max_pause: float | None = None) -> None:
        if failing and path.endswith("productviews"):
            raise vt.TransportError("views endpoint down")
        await original(path, body, max_pause)

    client.transport.post = views_fail  # type: ignore[method-assign]
    buffer = vt.TrackingBuffer(client, settings())
    buffer.enqueue(view("p1"))
    flushing = asyncio.ensure_future(buffer.flush(timeout=1.0))
    await asyncio.sleep(0)
    buffer.enqueue(cart("c1", 1, "a"))
    with pytest.raises(TimeoutError):
        await flushing
    assert "c1" in fake.carts
    failing = False
    await buffer.aclose()
    assert [v.item_id for v in fake.product_views] == ["p1"]


async def test_flush_and_put_waiters_are_released_when_the_buffer_closes(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    fake.script(*[503] * 100)
    buffer = vt.TrackingBuffer(client, settings(max_batch_size=2, max_pending=2))
    buffer.enqueue(view("p1"))
    buffer.enqueue(view("p2"))
    flushing = asyncio.ensure_future(buffer.flush())
    putting = asyncio.ensure_future(buffer.put(view("p3")))
    await asyncio.sleep(0.1)
    await buffer.aclose(timeout=0.2)
    await asyncio.wait_for(flushing, 2)  # returns: everything was dropped at close
    with pytest.raises(vt.BufferClosedError):
        await asyncio.wait_for(putting, 2)


async def test_closing_after_the_client_was_closed_spools_at_once(
    fake: FakeVoyado, tmp_path: Path
) -> None:
    """The wrong shutdown order (client first) must not lose events nor wait out the timeout."""
    spool = tmp_path / "spool.jsonl"
    client = vt.TrackingClient(fake.url, fake.api_key)
    buffer = vt.TrackingBuffer(client, settings(flush_interval=3600), spool_path=spool)
    for i in range(5):
        buffer.enqueue(view(f"p{i}"))
    await client.aclose()
    started = time.monotonic()
    await buffer.aclose(timeout=10)
    assert time.monotonic() - started < 2
    assert buffer.stats.spooled == 5
    assert len(spool.read_bytes().splitlines()) == 5


async def test_close_with_no_time_left_spools_everything_and_stops_the_flusher(
    fake: FakeVoyado, client: vt.TrackingClient, tmp_path: Path
) -> None:
    """Regression: a cancel swallowed by wait_for let the flusher send on after close."""
    spool = tmp_path / "spool.jsonl"
    fake.hold()
    buffer = vt.TrackingBuffer(client, settings(flush_interval=60), spool_path=spool)
    for i in range(100):
        buffer.enqueue(view(f"p{i}"))
    await asyncio.sleep(0.01)  # the flusher is asleep until the interval
    await buffer.aclose(timeout=0)
    stats = buffer.stats
    assert (stats.spooled, stats.in_flight, stats.pending_product_views) == (100, 0, 0)
    fake.release()


async def test_an_outage_outlasting_the_retry_budget_costs_few_extra_requests(
    closed_port_url: str,
) -> None:
    """When every half fails too, the batch is dead-lettered without a request per event."""
    policy = vt.RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.02)
    client = vt.TrackingClient(closed_port_url, "k", max_requests_per_second=None)
    async with client, vt.TrackingBuffer(
        client, settings(flush_interval=3600, retry=policy)
    ) as buffer:
        for i in range(64):
            buffer.enqueue(view(f"p{i}"))
        await buffer.flush(timeout=10)
        stats = buffer.stats
    assert stats.dead_lettered == 64
    assert stats.requests <= 2 + 2 * 7 + 2
