"""What the benchmark scripts share: the inputs every library gets, the sink's counters, our
own caller-cost and throughput trials (the journal's trials run them with a journal on), and
the table's number format and percentile.

Scripts import it as ``from _common import ...`` (they run from this directory).
"""

from __future__ import annotations

import asyncio
import os
import time
import urllib.request
from collections.abc import Sequence
from typing import Any

import orjson

__all__ = [
    "API_KEY",
    "CHUNK",
    "EN_DASH",
    "PRODUCT_VIEW",
    "PRODUCT_VIEWS",
    "build_view",
    "delivered",
    "fmt",
    "percentile",
    "raw_view",
    "raw_views",
    "requests_to",
    "rss_bytes",
    "sink_get",
    "voyado_caller",
    "voyado_throughput",
]

API_KEY = "bench-api-key"
PRODUCT_VIEWS = "/api/v2/tracking/productviews"
PRODUCT_VIEW = "/api/v2/tracking/productview"
CHUNK = 500  # events between two yields to the event loop in async producers
EN_DASH = "\u2013"


# -- inputs --------------------------------------------------------------------------------


def raw_view(i: int) -> tuple[str, str, str, str, str, str]:
    """The fields of the i-th product view: item_id, contact_id, category, session, url, lang."""
    sku = f"SKU-{i % 5000:05d}"
    return (
        sku,
        f"{i:08x}-0000-4000-8000-{i % 1000:012x}",
        "shoes > sneakers",
        f"session-{i // 10:08d}",
        f"https://shop.example.com/p/{sku}",
        "sv-SE",
    )


def raw_views(n: int) -> list[tuple[str, str, str, str, str, str]]:
    return [raw_view(i) for i in range(n)]


def build_view(raw: tuple[str, str, str, str, str, str]) -> Any:
    import voyado_tracking as vt

    sku, contact, category, session, url, language = raw
    return vt.ProductView(sku, contact, category=category, session_id=session, url=url,
                          language=language)


# -- sink helpers --------------------------------------------------------------------------


def sink_get(sink: str, what: str) -> Any:
    with urllib.request.urlopen(f"{sink}/_{what}", timeout=10) as response:
        return orjson.loads(response.read())


def delivered(sink: str, path: str) -> int:
    return int(sink_get(sink, "stats")["events"].get(path, 0))


def requests_to(sink: str, path: str) -> int:
    return int(sink_get(sink, "stats")["requests"].get(path, 0))


def rss_bytes() -> int:
    try:
        import psutil
    except ImportError:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return int(psutil.Process().memory_info().rss)


# -- the table's numbers ---------------------------------------------------------------------


def fmt(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:,.0f}k"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile (*share* in 0..1) of non-empty *values*: the library's own
    rule, the one ``stats.delivery_delay_p99`` uses."""
    from voyado_tracking._delays import percentile as nearest_rank

    return nearest_rank(sorted(values), share)


# -- our trials: caller cost and delivered events/s --------------------------------------------


async def voyado_caller(
    sink: str, n: int, prebuilt: bool, otel: bool = False, **journal: Any
) -> dict[str, Any]:
    """Caller cost of ``enqueue()``; with *otel*, the buffer is instrumented with
    ``vt.instrument()`` on an OpenTelemetry SDK meter provider (an in-memory reader)."""
    import voyado_tracking as vt

    raws = raw_views(n)
    events = [build_view(r) for r in raws] if prebuilt else None
    settings = vt.FlushSettings(max_pending=n + CHUNK, flush_interval=60.0)
    provider = None
    async with vt.TrackingClient(sink, API_KEY, max_requests_per_second=None) as client:
        buffer = vt.TrackingBuffer(client, settings, **journal)
        if otel:
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import InMemoryMetricReader

            provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
            vt.instrument(buffer, meter_provider=provider)
        enqueue = buffer.enqueue
        spent = 0.0
        perf = time.perf_counter
        for start in range(0, n, CHUNK):
            if events is not None:
                batch = events[start : start + CHUNK]
                t0 = perf()
                for event in batch:
                    enqueue(event)
                spent += perf() - t0
            else:
                batch_raws = raws[start : start + CHUNK]
                t0 = perf()
                for sku, contact, category, session, url, language in batch_raws:
                    enqueue(vt.ProductView(sku, contact, category=category, session_id=session,
                                           url=url, language=language))
                spent += perf() - t0
            await asyncio.sleep(0)  # the flusher runs between chunks, as between requests
        await buffer.aclose(timeout=60)
        assert buffer.stats.dropped == 0, buffer.stats
    if provider is not None:
        provider.shutdown()
    return {"us_per_call": spent / n * 1e6}


async def voyado_throughput(
    sink: str, n: int, prebuilt: bool, **journal: Any
) -> dict[str, Any]:
    import voyado_tracking as vt

    raws = raw_views(n)
    events = [build_view(r) for r in raws] if prebuilt else None
    settings = vt.FlushSettings(max_pending=n + CHUNK)
    async with vt.TrackingClient(sink, API_KEY, max_requests_per_second=None) as client:
        buffer = vt.TrackingBuffer(client, settings, **journal)
        enqueue = buffer.enqueue
        ProductView = vt.ProductView
        t0 = time.perf_counter()
        for start in range(0, n, CHUNK):
            if events is not None:
                for event in events[start : start + CHUNK]:
                    enqueue(event)
            else:
                for sku, contact, category, session, url, language in raws[start : start + CHUNK]:
                    enqueue(ProductView(sku, contact, category=category, session_id=session,
                                        url=url, language=language))
            await asyncio.sleep(0)
        await buffer.flush()
        elapsed = time.perf_counter() - t0
        stats = buffer.stats
        await buffer.aclose()
    got = delivered(sink, PRODUCT_VIEWS)
    return {"events_per_s": got / elapsed, "delivered": got, "seconds": elapsed,
            "requests": stats.requests, "dropped": stats.dropped}
