"""Metrics of the fleet (real Redis): an outbox's and a forwarder's counters equal their stats
and the fake, the forwarder's own Prometheus exposition, ``forward --metrics-port``'s
``/metrics`` and ``/healthz``."""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import cart, eventually, view
from prometheus_client.parser import text_string_to_metric_families
from test_metrics import SLOW_RETRY, Metrics, delivered_by_fake, fake_answers

import voyado_tracking as vt
from voyado_tracking._exposition import Registry
from voyado_tracking.cli._metrics_server import MetricsServer
from voyado_tracking.testing import FakeVoyado, Fault
from voyado_tracking.testing._redis import RedisServer

pytestmark = pytest.mark.fleet

FAST = vt.FlushSettings(flush_interval=0.05, shutdown_timeout=5.0, retry=SLOW_RETRY,
                        max_batch_size=20)
FAMILIES = {
    "voyado_tracking_events": "counter",
    "voyado_tracking_requests": "counter",
    "voyado_tracking_retries": "counter",
    "voyado_tracking_pending": "gauge",
    "voyado_tracking_in_flight": "gauge",
    "voyado_tracking_oldest_pending_age_seconds": "gauge",
    "voyado_tracking_stream_backlog": "gauge",
    "voyado_tracking_delivery_delay_seconds": "histogram",
    "voyado_tracking_batch_size": "histogram",
}


@pytest.fixture
async def own_client(fake: FakeVoyado) -> AsyncIterator[vt.TrackingClient]:
    async with vt.TrackingClient(fake.url, fake.api_key, max_requests_per_second=None,
                                 retry=SLOW_RETRY) as c:
        yield c


async def deliver_through_faults(
    fake: FakeVoyado, forwarder: vt.Forwarder, redis_url: str, outbox_metrics: Metrics
) -> vt.RedisOutbox:
    """Write views and carts through an instrumented outbox while Voyado fails in every
    allowed way; end with views held by a 30 s Retry-After (released at close)."""
    fake.reject_item_ids = {"bad"}
    fake.script(503, Fault(status=429, retry_after="0.05"), Fault(drop=True), 500, 502, 429)
    async with vt.RedisOutbox(redis_url) as outbox:
        vt.instrument(outbox, meter_provider=outbox_metrics.provider)
        for n in range(120):
            outbox.enqueue(view(f"sku-{n}"))
        outbox.enqueue(view("bad"))
        for second in range(3):
            outbox.enqueue(cart("c1", second, "sku-1"))
        await outbox.flush(timeout=10)
        await forwarder.flush(timeout=20)
        fake.script(Fault(status=503, retry_after="30"))
        retries = forwarder.stats.retries
        for n in range(5):
            outbox.enqueue(view(f"late-{n}"))
        await outbox.flush(timeout=10)
    await eventually(lambda: forwarder.stats.retries > retries
                     and forwarder.stats.in_flight == 0)
    return outbox


async def test_fleet_counters_equal_stats_and_the_fake_through_faults(
    fake: FakeVoyado, own_client: vt.TrackingClient, redis_url: str
) -> None:
    forwarder_metrics, outbox_metrics = Metrics(), Metrics()
    forwarder = vt.Forwarder(own_client, redis_url, FAST)
    vt.instrument(forwarder, meter_provider=forwarder_metrics.provider)
    async with forwarder:
        outbox = await deliver_through_faults(fake, forwarder, redis_url, outbox_metrics)
    o = outbox.stats
    assert outbox_metrics.events() == {
        "enqueued": o.enqueued, "recovered": 0, "collapsed": o.collapsed, "written": o.sent,
        "dropped": o.dropped, "dead_lettered": 0, "spooled": o.spooled,
    }
    f = forwarder.stats
    assert f.spooled == 5
    assert f.dead_lettered == 1
    assert forwarder_metrics.events() == {
        "enqueued": f.enqueued, "recovered": 0, "collapsed": f.collapsed, "sent": f.sent,
        "dropped": f.dropped, "dead_lettered": f.dead_lettered, "released": f.spooled,
    }
    assert forwarder_metrics.value("voyado_tracking.retries") == f.retries
    assert forwarder_metrics.requests() == fake_answers(fake)
    assert sum(forwarder_metrics.requests().values()) == f.requests
    assert forwarder_metrics.events()["sent"] == delivered_by_fake(fake)
    assert forwarder_metrics.value("voyado_tracking.stream_backlog") is not None
    forwarder_metrics.provider.shutdown()
    outbox_metrics.provider.shutdown()


def parse(text: str) -> dict[str, Any]:
    """The exposition by family name (prometheus_client's strict parser)."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(families: dict[str, Any]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in families.values() for s in family.samples}


def exposition_matches(families: dict[str, Any], stats: vt.ForwarderStats) -> None:
    assert {name: f.type for name, f in families.items()} == FAMILIES
    values = samples(families)
    events = Counter[str]()
    for (name, labels), value in values.items():
        if name == "voyado_tracking_events_total":
            events[dict(labels)["outcome"]] += int(value)
    assert dict(events) == {
        "enqueued": stats.enqueued, "recovered": 0, "collapsed": stats.collapsed,
        "sent": stats.sent, "dropped": stats.dropped, "dead_lettered": stats.dead_lettered,
        "released": stats.spooled,
    }
    requests = sum(v for (name, _), v in values.items()
                   if name == "voyado_tracking_requests_total")
    assert requests == stats.requests
    assert values[("voyado_tracking_retries_total", frozenset())] == stats.retries
    assert values[("voyado_tracking_delivery_delay_seconds_count", frozenset())] == stats.sent
    assert values[("voyado_tracking_batch_size_count", frozenset())] == stats.requests
    bounds = [dict(labels)["le"] for (name, labels), _ in values.items()
              if name == "voyado_tracking_delivery_delay_seconds_bucket"]
    assert sorted(map(float, bounds)) == [0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 600,
                                          float("inf")]
    bounds = [dict(labels)["le"] for (name, labels), _ in values.items()
              if name == "voyado_tracking_batch_size_bucket"]
    assert sorted(map(float, bounds)) == [1, 10, 50, 100, 250, 500, 1000, float("inf")]


async def test_exposition_has_exactly_the_designed_series_equal_to_stats(
    fake: FakeVoyado, own_client: vt.TrackingClient, redis_url: str
) -> None:
    forwarder = vt.Forwarder(own_client, redis_url, FAST)
    registry = Registry(forwarder)
    registry.attach()
    async with forwarder:
        await registry.refresh_backlog()
        await deliver_through_faults(fake, forwarder, redis_url, Metrics())
    families = parse(registry.render())
    exposition_matches(families, forwarder.stats)
    answers = Counter[str]()
    for (name, labels), value in samples(families).items():
        if name == "voyado_tracking_requests_total":
            (answer,) = (v for k, v in labels if k != "voyado_tracking_endpoint")
            answers[answer] += int(value)
    assert answers["connection"] == 1
    assert answers["429"] == 2
    assert answers["503"] == 2
    values = samples(families)
    assert values[("voyado_tracking_events_total", frozenset({
        ("outcome", "dropped"), ("reason", "overflow")}))] == 0


async def http_get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def test_healthz_is_ok_then_names_a_stopped_reader(
    own_client: vt.TrackingClient, redis_url: str
) -> None:
    async with vt.Forwarder(own_client, redis_url, FAST) as forwarder:
        server = await MetricsServer.start(forwarder, redis_url, "127.0.0.1", 0)
        try:
            assert await http_get(f"{server.url}/healthz") == (200, "text/plain; charset=utf-8",
                                                               "ok\n")
            reader = forwarder._tasks[0]
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            status, _, body = await http_get(f"{server.url}/healthz")
            assert (status, body) == (503, "the forwarder's reader task stopped\n")
        finally:
            await server.aclose()


async def test_healthz_is_503_when_redis_misses_a_ping(
    own_client: vt.TrackingClient, tmp_path: Path
) -> None:
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    try:
        async with vt.Forwarder(own_client, redis_server.url, FAST) as forwarder:
            server = await MetricsServer.start(forwarder, redis_server.url, "127.0.0.1", 0)
            try:
                assert (await http_get(f"{server.url}/healthz"))[0] == 200
                redis_server.stop()
                status, _, body = await http_get(f"{server.url}/healthz")
                assert status == 503
                assert "Redis did not answer PING within 1 s" in body
                assert "reader" not in body  # still running: it waits for Redis
                status, _, text = await http_get(f"{server.url}/metrics")
                assert status == 200
                assert "voyado_tracking_events_total" in text
            finally:
                await server.aclose()
            await forwarder.aclose(timeout=1.0)
    finally:
        redis_server.stop()


class ForwardProcess:
    """``voyado-tracking forward --metrics-port 0`` against *fake* and *redis_url*."""

    def __init__(self, process: asyncio.subprocess.Process, url: str) -> None:
        self.process = process
        self.url = url


async def start_forward(fake: FakeVoyado, redis_url: str) -> ForwardProcess:
    env = {**os.environ, "VOYADO_BASE_URL": fake.url, "VOYADO_API_KEY": fake.api_key}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voyado_tracking", "forward", "--redis", redis_url,
        "--flush-interval", "0.05", "--metrics-port", "0", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    while True:
        line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
        if not line:
            raise AssertionError("forward exited before serving metrics")
        if line.startswith("metrics on "):
            return ForwardProcess(process, line.split()[2].rstrip(",").removesuffix("/metrics"))


async def stop_forward(forward: ForwardProcess) -> None:
    if forward.process.returncode is None:
        forward.process.terminate()
        try:
            await asyncio.wait_for(forward.process.wait(), 20)
        except asyncio.TimeoutError:
            forward.process.kill()
            await forward.process.wait()


async def test_forward_cli_serves_the_exposition_and_health(
    fake: FakeVoyado, redis_url: str
) -> None:
    forward = await start_forward(fake, redis_url)
    try:
        async with vt.RedisOutbox(redis_url) as outbox:
            for n in range(30):
                outbox.enqueue(view(f"sku-{n}"))
        await eventually(lambda: len(fake.product_views) == 30, timeout=30)

        async def sent() -> bool:
            families = parse((await http_get(f"{forward.url}/metrics"))[2])
            return samples(families).get(("voyado_tracking_events_total", frozenset(
                {("outcome", "sent")}))) == 30

        await eventually(sent, timeout=30)
        status, content_type, text = await http_get(f"{forward.url}/metrics")
        assert status == 200
        assert content_type.startswith("text/plain; version=0.0.4")
        assert {name: f.type for name, f in parse(text).items()} == FAMILIES
        assert await http_get(f"{forward.url}/healthz") == (200, "text/plain; charset=utf-8",
                                                            "ok\n")
    finally:
        await stop_forward(forward)
    assert forward.process.returncode == 0


def prometheus_or_skip() -> str:
    """The prometheus executable; skipped without one, except under CI (where it fails)."""
    import shutil

    from conftest import under_ci

    found = shutil.which("prometheus")
    if found is None:
        reason = "prometheus is not installed (Debian: apt-get install prometheus)"
        if under_ci():
            pytest.fail(f"{reason} (.ci/run installs it)")
        pytest.skip(reason)
    return found


@pytest.mark.ci_once
async def test_a_real_prometheus_scrapes_the_forwarder_and_reads_back_sent(
    fake: FakeVoyado, redis_url: str, tmp_path: Path
) -> None:
    """A real Prometheus (1 s scrapes) reads ``sent`` off a live ``forward`` process; the
    value comes back through its HTTP API."""
    from voyado_tracking.testing._redis import free_port

    executable = prometheus_or_skip()
    forward = await start_forward(fake, redis_url)
    target = forward.url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: voyado-forwarder\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    api = f"127.0.0.1:{free_port()}"
    prometheus = await asyncio.create_subprocess_exec(
        executable, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address={api}", stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with vt.RedisOutbox(redis_url) as outbox:
            for n in range(25):
                outbox.enqueue(view(f"sku-{n}"))
        query = f"http://{api}/api/v1/query"
        params = {"query": 'voyado_tracking_events_total{outcome="sent"}'}

        async def scraped() -> bool:
            try:
                async with aiohttp.ClientSession() as session, session.get(
                    query, params=params
                ) as response:
                    answer = await response.json()
            except (aiohttp.ClientError, ValueError):
                return False  # not listening yet
            result = answer.get("data", {}).get("result", [])
            return bool(result) and result[0]["value"][1] == "25"

        await eventually(scraped, timeout=30)
    finally:
        prometheus.terminate()
        try:
            await asyncio.wait_for(prometheus.wait(), 20)
        except asyncio.TimeoutError:
            prometheus.kill()
            await prometheus.wait()
        await stop_forward(forward)
