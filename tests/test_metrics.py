"""vt.instrument(): OpenTelemetry instruments that agree with ``stats`` and with what Voyado
(the fake) answered, fed per batch and outcome, never per enqueue."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from conftest import cart, eventually, fast_settings, view
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import voyado_tracking as vt
from voyado_tracking._intake import Intake
from voyado_tracking._outcomes import Observer, Totals
from voyado_tracking._store import PendingStore
from voyado_tracking.testing import FakeVoyado, Fault

SLOW_RETRY = vt.RetryPolicy(max_attempts=None, initial_backoff=0.01, max_backoff=0.05,
                            max_elapsed=600.0)
ENDPOINT = {"/api/v2/tracking/carts/batch": "carts",
            "/api/v2/tracking/productviews": "product_views",
            "/api/v3/contacts/id": "contacts"}


class Metrics:
    """An SDK provider with an in-memory reader, read as {(name, attributes): point}."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])

    def read(self) -> dict[tuple[str, frozenset[tuple[str, Any]]], Any]:
        points: dict[tuple[str, frozenset[tuple[str, Any]]], Any] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        points[(metric.name, frozenset(point.attributes.items()))] = point
        return points

    def value(self, name: str, **attributes: Any) -> Any:
        point = self.read().get((name, frozenset(attributes.items())))
        return None if point is None else point.value

    def events(self) -> dict[str, int]:
        """The events counter by outcome (dropped: summed over reasons)."""
        totals: Counter[str] = Counter()
        for (name, attributes), point in self.read().items():
            if name == "voyado_tracking.events":
                totals[dict(attributes)["outcome"]] += point.value
        return dict(totals)

    def requests(self) -> Counter[tuple[str, object]]:
        """The requests counter by (endpoint, status or error type)."""
        totals: Counter[tuple[str, object]] = Counter()
        for (name, attributes), point in self.read().items():
            if name == "voyado_tracking.requests":
                a = dict(attributes)
                answer = a.get("http.response.status_code", a.get("error.type"))
                totals[(a["voyado_tracking.endpoint"], answer)] += point.value
        return totals

    def histogram(self, name: str) -> Any:
        return self.read()[(name, frozenset())]


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    m = Metrics()
    yield m
    m.provider.shutdown()


@pytest.fixture
async def own_client(fake: FakeVoyado) -> AsyncIterator[vt.TrackingClient]:
    """A client dedicated to one sink (its requests are the sink's)."""
    async with vt.TrackingClient(fake.url, fake.api_key, max_requests_per_second=None,
                                 retry=SLOW_RETRY) as c:
        yield c


def fake_answers(fake: FakeVoyado) -> Counter[tuple[str, object]]:
    """What the fake answered, as the requests counter would count it."""
    return Counter((ENDPOINT[r.path], r.status if r.status else "connection")
                   for r in fake.requests)


def delivered_by_fake(fake: FakeVoyado) -> int:
    return sum(r.events for r in fake.requests if 200 <= r.status < 300)


def assert_counters_equal_buffer_stats(m: Metrics, stats: vt.BufferStats) -> None:
    events = m.events()
    assert events == {
        "enqueued": stats.enqueued, "recovered": stats.recovered,
        "collapsed": stats.collapsed, "sent": stats.sent, "dropped": stats.dropped,
        "dead_lettered": stats.dead_lettered, "spooled": stats.spooled,
    }
    assert sum(m.requests().values()) == stats.requests
    assert m.value("voyado_tracking.retries") == stats.retries


async def test_counters_equal_stats_and_the_fake_through_faults(
    fake: FakeVoyado, own_client: vt.TrackingClient, metrics: Metrics
) -> None:
    """Statuses, 429s, dropped connections, a rejected event, overflow and a shutdown with
    events held: every counter equals stats, sent equals what the fake answered 2xx."""
    fake.reject_item_ids = {"bad"}
    fake.script(503, Fault(status=429, retry_after="0.05"), Fault(drop=True), 500,
                Fault(drop=True), 502, 429)
    buffer = vt.TrackingBuffer(own_client, fast_settings(
        max_batch_size=20, max_pending=150, retry=SLOW_RETRY))
    vt.instrument(buffer, meter_provider=metrics.provider)
    try:
        for n in range(200):  # about 50 dropped by overflow (drop_oldest)
            buffer.enqueue(view(f"sku-{n}"))
        buffer.enqueue(view("bad"))
        for second in range(5):  # one cart, four collapsed updates
            buffer.enqueue(cart("c1", second, "sku-1"))
        await buffer.flush(timeout=20)
        # A 503 asking for 30 s holds the views: what is held at close is dropped (shutdown).
        fake.script(Fault(status=503, retry_after="30"))
        retries = buffer.stats.retries
        for n in range(7):
            buffer.enqueue(view(f"late-{n}"))
        await eventually(lambda: buffer.stats.retries > retries and buffer.stats.in_flight == 0)
    finally:
        await buffer.aclose(timeout=1.0)

    stats = buffer.stats
    assert stats.dead_lettered == 1
    assert stats.collapsed == 4
    assert_counters_equal_buffer_stats(metrics, stats)
    overflow = metrics.value("voyado_tracking.events", outcome="dropped", reason="overflow")
    assert overflow > 0
    assert metrics.value("voyado_tracking.events", outcome="dropped", reason="shutdown") == 7
    assert overflow + 7 == stats.dropped
    assert metrics.events()["sent"] == delivered_by_fake(fake)
    assert metrics.requests() == fake_answers(fake)
    assert metrics.histogram("voyado_tracking.delivery_delay").count == stats.sent
    assert metrics.histogram("voyado_tracking.batch_size").count == stats.requests


async def test_counters_start_at_the_sinks_totals(
    fake: FakeVoyado, own_client: vt.TrackingClient, metrics: Metrics
) -> None:
    """Instrumented after it delivered: counters and stats agree from the first read."""
    async with vt.TrackingBuffer(own_client, fast_settings()) as buffer:
        for n in range(30):
            buffer.enqueue(view(f"sku-{n}"))
        await buffer.flush(timeout=10)
        vt.instrument(buffer, meter_provider=metrics.provider)
        assert metrics.events()["sent"] == 30
        assert metrics.events()["enqueued"] == 30
        assert metrics.value("voyado_tracking.events", outcome="dropped",
                             reason="overflow") == 0
        assert metrics.value("voyado_tracking.retries") == 0


async def test_a_second_instrument_on_one_sink_raises(
    own_client: vt.TrackingClient, metrics: Metrics
) -> None:
    async with vt.TrackingBuffer(own_client, fast_settings()) as buffer:
        vt.instrument(buffer, meter_provider=metrics.provider)
        with pytest.raises(ValueError, match="already instrumented"):
            vt.instrument(buffer, meter_provider=Metrics().provider)


def test_instrument_names_what_it_takes_when_given_something_else() -> None:
    with pytest.raises(TypeError, match="TrackingBuffer, RedisOutbox, Forwarder or Tracker"):
        vt.instrument(object())


async def test_instrument_leaves_the_enqueue_path_untouched(
    own_client: vt.TrackingClient, metrics: Metrics
) -> None:
    """The same functions run, and not one observer call for 1,000 enqueues."""
    async with vt.TrackingBuffer(own_client, fast_settings(flush_interval=60.0)) as buffer:
        vt.instrument(buffer, meter_provider=metrics.provider)
        assert "enqueue" not in vars(buffer)
        assert type(buffer).enqueue is Intake.enqueue
        assert buffer._add_view.__func__ is PendingStore.add_view  # type: ignore[attr-defined]
        assert buffer._add_cart.__func__ is PendingStore.add_cart  # type: ignore[attr-defined]
        counting = Counting()
        buffer._outcomes.observers += (counting,)
        for n in range(1000):
            buffer.enqueue(view(f"sku-{n}"))
        buffer.enqueue(cart("c1", 0, "sku-1"))
        assert counting.calls == []
        await buffer.flush(timeout=10)
        assert "published" in counting.calls  # it does hear the batches


class Counting(Observer):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def published(self, totals: Totals) -> None:
        self.calls.append("published")

    def delivered(self, arrivals: list[float], now: float) -> None:
        self.calls.append("delivered")

    def batched(self, events: int) -> None:
        self.calls.append("batched")


async def test_gauges_show_what_is_pending_while_nothing_is_sent(
    fake: FakeVoyado, own_client: vt.TrackingClient, metrics: Metrics
) -> None:
    """The watcher publishes once a second: pending and the oldest age move without a batch."""
    async with vt.TrackingBuffer(own_client, fast_settings(flush_interval=60.0)) as buffer:
        vt.instrument(buffer, meter_provider=metrics.provider)
        for n in range(12):
            buffer.enqueue(view(f"sku-{n}"))
        buffer.enqueue(cart("c1", 0, "sku-1"))
        await eventually(lambda: metrics.value("voyado_tracking.pending",
                                               stream="product_views") == 12)
        assert metrics.value("voyado_tracking.pending", stream="carts") == 1
        assert metrics.value("voyado_tracking.in_flight") == 0
        assert metrics.value("voyado_tracking.oldest_pending_age") > 0
        await buffer.flush(timeout=10)
    assert metrics.value("voyado_tracking.pending", stream="product_views") == 0
    assert metrics.value("voyado_tracking.oldest_pending_age") == 0


async def test_gauge_callbacks_never_touch_the_store(
    own_client: vt.TrackingClient, metrics: Metrics
) -> None:
    """The SDK's reader (another thread) reads the published snapshot, not the store."""
    async with vt.TrackingBuffer(own_client, fast_settings(flush_interval=60.0)) as buffer:
        vt.instrument(buffer, meter_provider=metrics.provider)
        buffer.enqueue(view("sku-1"))
        buffer._outcomes.publish()
        store = buffer._store
        touched: list[str] = []
        original = type(store).oldest_pending_at

        def watched(self: PendingStore) -> float | None:
            touched.append(threading.current_thread().name)
            return original(self)

        type(store).oldest_pending_at = watched  # type: ignore[method-assign]
        try:
            reader = threading.Thread(target=metrics.read, name="sdk-reader")
            reader.start()
            reader.join(10)
        finally:
            type(store).oldest_pending_at = original  # type: ignore[method-assign]
        assert "sdk-reader" not in touched


async def test_requests_count_every_request_of_the_sinks_client_lookups_included(
    fake: FakeVoyado, own_client: vt.TrackingClient, metrics: Metrics
) -> None:
    fake.add_contact("3fa85f64-5717-4562-b3fc-2c963f66afa6", email="a@example.com")
    async with vt.TrackingBuffer(own_client, fast_settings()) as buffer:
        vt.instrument(buffer, meter_provider=metrics.provider)
        assert await own_client.find_contact_id(email="a@example.com") is not None
        buffer.enqueue(view("sku-1"))
        await buffer.flush(timeout=10)
    assert metrics.requests() == {("contacts", 200): 1, ("product_views", 200): 1}


async def test_a_tracker_is_followed_into_each_new_buffer(
    own_client: vt.TrackingClient, metrics: Metrics
) -> None:
    """The hook a Tracker provides: each sink it hands over is watched, once."""

    class TrackerLike:
        def __init__(self) -> None:
            self.hooks: list[Any] = []

        def _follow_sinks(self, hook: Any) -> None:
            self.hooks.append(hook)

    tracker = TrackerLike()
    vt.instrument(tracker, meter_provider=metrics.provider)
    with pytest.raises(ValueError, match="already instrumented"):
        vt.instrument(tracker, meter_provider=metrics.provider)
    (hook,) = tracker.hooks
    async with vt.TrackingBuffer(own_client, fast_settings()) as first:
        hook(first)
        hook(first)  # handed over twice: watched once
        first.enqueue(view("sku-1"))
        await first.flush(timeout=10)
    async with vt.TrackingBuffer(own_client, fast_settings()) as second:
        hook(second)
        second.enqueue(view("sku-2"))
        await second.flush(timeout=10)
    assert metrics.events()["sent"] == 2
    assert metrics.histogram("voyado_tracking.batch_size").count == 2


def test_a_real_trackers_buffer_is_instrumented_when_it_starts(
    threaded_fake: FakeVoyado, metrics: Metrics
) -> None:
    """instrument(Tracker) before first use: the buffer it then builds feeds the counters."""
    with vt.Tracker(threaded_fake.url, threaded_fake.api_key, settings=fast_settings()) as tracker:
        vt.instrument(tracker, meter_provider=metrics.provider)
        for i in range(3):
            tracker.enqueue(view(f"sku-{i}"))
        tracker.flush(timeout=10)
        assert metrics.events()["sent"] == tracker.stats.sent == 3


def test_import_voyado_tracking_never_imports_opentelemetry() -> None:
    code = ("import sys, voyado_tracking\n"
            "print(any(m.startswith('opentelemetry') for m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "False"


def test_instrument_without_opentelemetry_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None\n"
        "import asyncio, voyado_tracking as vt\n"
        "async def main():\n"
        "    async with vt.TrackingClient('http://127.0.0.1:9', 'k') as client:\n"
        "        async with vt.TrackingBuffer(client) as buffer:\n"
        "            try:\n"
        "                vt.instrument(buffer)\n"
        "            except ImportError as error:\n"
        "                print(error)\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert "voyado-tracking[otel]" in done.stdout
