"""One benchmark trial per process: ``scenarios.py SCENARIO LIB --n N --sink URL``.

``run.py`` starts the sink and calls this script once per trial (a fresh interpreter each time,
so threads, connection pools and memory of one library never touch another's numbers). The
last line printed is a JSON object with the trial's measurements, or ``{"error": "..."}`` when
the library cannot be imported or does not work; run.py then prints "n/a" with that reason.

Every library gets the same inputs: product views of a shop (SKU, contact GUID, category,
session, URL, language) built from per-event strings, stamped "now" by the library itself.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
from _common import (
    API_KEY,
    CHUNK,
    PRODUCT_VIEW,
    PRODUCT_VIEWS,
    build_view,
    delivered,
    percentile,
    raw_view,
    raw_views,
    rss_bytes,
    sink_get,
    voyado_caller,
    voyado_throughput,
)
from journal_scenarios import TRIALS as JOURNAL_TRIALS
from tracker import TRIALS as TRACKER_TRIALS

# -- inputs --------------------------------------------------------------------------------


def properties(raw: tuple[str, str, str, str, str, str]) -> dict[str, str]:
    sku, _, category, session, url, language = raw
    return {"sku": sku, "category": category, "session_id": session, "url": url,
            "language": language}


# -- the libraries compared with --------------------------------------------------------------


class Unavailable(Exception):
    """The library to compare with cannot be used here; the reason goes in the table."""


def segment_client(sink: str, queue_size: int) -> Any:
    try:
        from segment.analytics import Client
    except ImportError as error:
        raise Unavailable(f"segment-analytics-python not installed ({error})") from None
    # Its defaults (1 thread, upload_size=100), with a queue big enough not to drop.
    return Client("bench-write-key", host=sink, max_queue_size=queue_size + 10,
                  on_error=lambda error, batch: print("segment error", error, file=sys.stderr))


def posthog_client(sink: str, queue_size: int) -> Any:
    try:
        from posthog import Posthog
    except ImportError as error:
        raise Unavailable(f"posthog not installed ({error})") from None
    return Posthog("phc_bench", host=sink, max_queue_size=queue_size + 10)


def voyado_sdk(sink: str) -> Any:
    try:
        from voyado_engage_sdk import VoyadoEngageSdk
        from voyado_engage_sdk.models import ProductViewApiModel
    except ImportError as error:
        raise Unavailable(f"voyado-engage-client not installed ({error})") from None
    return VoyadoEngageSdk(api_key=API_KEY, api_key_header="apikey", base_url=sink), (
        ProductViewApiModel
    )


def sdk_model(model: Any, raw: tuple[str, str, str, str, str, str], stamp: str) -> Any:
    sku, contact, category, session, url, language = raw
    return model(item_id=sku, contact_id=contact, category=category, time=stamp,
                 session_id=session, language=language, url=url)


def now_iso() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat()


# -- caller cost: µs per call on the caller's side ------------------------------------------


def caller_voyado_enqueue(sink: str, n: int) -> dict[str, Any]:
    return asyncio.run(voyado_caller(sink, n, prebuilt=True))


def caller_voyado_enqueue_otel(sink: str, n: int) -> dict[str, Any]:
    """The same, with the buffer instrumented (``vt.instrument``, OpenTelemetry SDK)."""
    try:
        import opentelemetry.sdk.metrics  # noqa: F401
    except ImportError as error:
        raise Unavailable(f"opentelemetry-sdk is not installed ({error})") from None
    return asyncio.run(voyado_caller(sink, n, prebuilt=True, otel=True))


def caller_voyado_build_enqueue(sink: str, n: int) -> dict[str, Any]:
    return asyncio.run(voyado_caller(sink, n, prebuilt=False))


def _threaded_caller(call: Callable[[tuple[str, ...]], object], n: int) -> float:
    raws = raw_views(n)
    perf = time.perf_counter
    t0 = perf()
    for raw in raws:
        call(raw)
    return (perf() - t0) / n * 1e6


def caller_segment(sink: str, n: int) -> dict[str, Any]:
    client = segment_client(sink, n)
    track = client.track

    def call(raw: tuple[str, ...]) -> object:
        return track(user_id=raw[1], event="Product Viewed", properties=properties(raw))

    return {"us_per_call": _threaded_caller(call, n)}


def caller_posthog(sink: str, n: int) -> dict[str, Any]:
    client = posthog_client(sink, n)
    capture = client.capture

    def call(raw: tuple[str, ...]) -> object:
        return capture("Product Viewed", distinct_id=raw[1], properties=properties(raw))

    return {"us_per_call": _threaded_caller(call, n)}


# -- end to end: delivered events/s --------------------------------------------------------


def throughput_voyado(sink: str, n: int) -> dict[str, Any]:
    return asyncio.run(voyado_throughput(sink, n, prebuilt=False))


def throughput_voyado_prebuilt(sink: str, n: int) -> dict[str, Any]:
    return asyncio.run(voyado_throughput(sink, n, prebuilt=True))


def throughput_segment(sink: str, n: int) -> dict[str, Any]:
    client = segment_client(sink, n)
    raws = raw_views(n)
    track = client.track
    t0 = time.perf_counter()
    for raw in raws:
        track(user_id=raw[1], event="Product Viewed", properties=properties(raw))
    client.flush()
    elapsed = time.perf_counter() - t0
    got = delivered(sink, "/v1/batch")
    return {"events_per_s": got / elapsed, "delivered": got, "seconds": elapsed}


def throughput_posthog(sink: str, n: int) -> dict[str, Any]:
    client = posthog_client(sink, n)
    raws = raw_views(n)
    capture = client.capture
    t0 = time.perf_counter()
    for raw in raws:
        capture("Product Viewed", distinct_id=raw[1], properties=properties(raw))
    client.flush(timeout_seconds=300)
    elapsed = time.perf_counter() - t0
    got = delivered(sink, "/batch/")
    return {"events_per_s": got / elapsed, "delivered": got, "seconds": elapsed}


async def _raw_floor(sink: str, n: int, serialise_in_loop: bool) -> dict[str, Any]:
    import aiohttp

    raws = raw_views(n)
    batches = [
        [{"itemId": sku, "contactId": contact, "category": category, "sessionId": session,
          "url": url, "language": language, "time": "2026-11-27T10:00:00+00:00"}
         for sku, contact, category, session, url, language in raws[start : start + 500]]
        for start in range(0, n, 500)
    ]
    bodies: list[Any] = batches if serialise_in_loop else [orjson.dumps(b) for b in batches]
    headers = {"apikey": API_KEY, "User-Agent": "bench/1.0", "Content-Type": "application/json"}
    url = sink + PRODUCT_VIEWS
    async with aiohttp.ClientSession() as session:
        pending = iter(bodies)

        async def worker() -> None:
            for body in pending:
                if serialise_in_loop:
                    body = orjson.dumps(body)
                async with session.post(url, data=body, headers=headers) as response:
                    response.raise_for_status()
                    await response.read()

        t0 = time.perf_counter()
        await asyncio.gather(worker(), worker())
        elapsed = time.perf_counter() - t0
    got = delivered(sink, PRODUCT_VIEWS)
    return {"events_per_s": got / elapsed, "delivered": got, "seconds": elapsed}


def throughput_raw(sink: str, n: int) -> dict[str, Any]:
    return asyncio.run(_raw_floor(sink, n, serialise_in_loop=False))


def throughput_raw_serialising(sink: str, n: int) -> dict[str, Any]:
    return asyncio.run(_raw_floor(sink, n, serialise_in_loop=True))


def throughput_sdk_batch(sink: str, n: int) -> dict[str, Any]:
    sdk, model = voyado_sdk(sink)
    raws = raw_views(n)
    send = sdk.tracking.product_view_v_register_product_views
    t0 = time.perf_counter()
    for start in range(0, n, 500):
        stamp = now_iso()
        send([sdk_model(model, raw, stamp) for raw in raws[start : start + 500]])
    elapsed = time.perf_counter() - t0
    got = delivered(sink, PRODUCT_VIEWS)
    return {"events_per_s": got / elapsed, "delivered": got, "seconds": elapsed}


def throughput_sdk_single(sink: str, n: int) -> dict[str, Any]:
    sdk, model = voyado_sdk(sink)
    raws = raw_views(n)
    send = sdk.tracking.product_view_v_register_product_view
    t0 = time.perf_counter()
    for raw in raws:
        send(sdk_model(model, raw, now_iso()))
    elapsed = time.perf_counter() - t0
    got = delivered(sink, PRODUCT_VIEW)
    return {"events_per_s": got / elapsed, "delivered": got, "seconds": elapsed}


# -- memory per buffered event, while the sink holds every request --------------------------


def _measure_rss(fill: Callable[[], object]) -> float:
    gc.collect()
    before = rss_bytes()
    kept = fill()
    gc.collect()
    after = rss_bytes()
    del kept
    return float(after - before)


async def _voyado_memory(sink: str, n: int) -> dict[str, Any]:
    import voyado_tracking as vt

    settings = vt.FlushSettings(max_pending=n + 4 * CHUNK)
    client = vt.TrackingClient(sink, API_KEY, max_requests_per_second=None, timeout=300)
    buffer = vt.TrackingBuffer(client, settings)
    # Warm up: the first batches are sent and held by the sink, so later events stay pending.
    for i in range(2 * CHUNK):
        buffer.enqueue(build_view(raw_view(i)))
    await asyncio.sleep(0.2)
    gc.collect()
    before = rss_bytes()
    ProductView = vt.ProductView
    enqueue = buffer.enqueue
    for start in range(2 * CHUNK, n + 2 * CHUNK, CHUNK):
        for i in range(start, start + CHUNK):
            sku, contact, category, session, url, language = raw_view(i)
            enqueue(ProductView(sku, contact, category=category, session_id=session, url=url,
                                language=language))
        await asyncio.sleep(0)
    gc.collect()
    grown = rss_bytes() - before
    stats = buffer.stats
    held = stats.pending_product_views + stats.in_flight
    assert stats.dropped == 0, stats
    assert held >= n, stats
    return {"bytes_per_event": grown / n, "held": held}


def memory_voyado(sink: str, n: int) -> dict[str, Any]:
    sink_get(sink, "hold")
    return asyncio.run(_voyado_memory_wrapper(sink, n))


async def _voyado_memory_wrapper(sink: str, n: int) -> dict[str, Any]:
    result = await _voyado_memory(sink, n)
    # Leave at once: the held requests would otherwise keep the loop from closing.
    print(orjson.dumps(result).decode(), flush=True)
    sink_get(sink, "release")
    os._exit(0)


def _threaded_memory(sink: str, n: int, make: Callable[[str, int], Any], enqueue: str) -> dict[
    str, Any
]:
    client = make(sink, n + 2000)
    sink_get(sink, "hold")
    call = getattr(client, enqueue)
    # Warm up: the consumer thread takes a first batch and blocks on the held sink.
    for i in range(1000):
        raw = raw_view(i)
        if enqueue == "track":
            call(user_id=raw[1], event="Product Viewed", properties=properties(raw))
        else:
            call("Product Viewed", distinct_id=raw[1], properties=properties(raw))
    time.sleep(0.5)
    gc.collect()
    before = rss_bytes()
    for i in range(1000, n + 1000):
        raw = raw_view(i)
        if enqueue == "track":
            call(user_id=raw[1], event="Product Viewed", properties=properties(raw))
        else:
            call("Product Viewed", distinct_id=raw[1], properties=properties(raw))
    gc.collect()
    grown = rss_bytes() - before
    result = {"bytes_per_event": grown / n}
    print(orjson.dumps(result).decode(), flush=True)
    sink_get(sink, "release")
    os._exit(0)


def memory_segment(sink: str, n: int) -> dict[str, Any]:
    return _threaded_memory(sink, n, segment_client, "track")


def memory_posthog(sink: str, n: int) -> dict[str, Any]:
    return _threaded_memory(sink, n, posthog_client, "capture")


# -- single awaited call latency -----------------------------------------------------------


async def _voyado_latency(sink: str, n: int) -> dict[str, Any]:
    import voyado_tracking as vt

    views = [build_view(raw_view(i)) for i in range(n + 50)]
    samples = []
    async with vt.TrackingClient(sink, API_KEY, max_requests_per_second=None) as client:
        for view in views[:50]:  # warm up: the pooled connection is opened once
            await client.register_product_view(view)
        perf = time.perf_counter
        for view in views[50:]:
            t0 = perf()
            await client.register_product_view(view)
            samples.append(perf() - t0)
    return {"ms": statistics.median(samples) * 1e3}


def latency_voyado(sink: str, n: int) -> dict[str, Any]:
    return asyncio.run(_voyado_latency(sink, n))


def latency_sdk(sink: str, n: int) -> dict[str, Any]:
    sdk, model = voyado_sdk(sink)
    stamp = now_iso()
    views = [sdk_model(model, raw_view(i), stamp) for i in range(n + 50)]
    send = sdk.tracking.product_view_v_register_product_view
    for view in views[:50]:
        send(view)
    samples = []
    perf = time.perf_counter
    for view in views[50:]:
        t0 = perf()
        send(view)
        samples.append(perf() - t0)
    return {"ms": statistics.median(samples) * 1e3}


# -- event-loop lag while flushing ----------------------------------------------------------


async def _loop_lag(sink: str, n: int) -> dict[str, Any]:
    import voyado_tracking as vt

    views = [build_view(raw_view(i)) for i in range(n)]
    settings = vt.FlushSettings(max_pending=n + CHUNK, max_batch_size=500)
    lateness: list[float] = []
    done = False

    async def ticker() -> None:
        perf = time.perf_counter
        while not done:
            t0 = perf()
            await asyncio.sleep(0.001)
            lateness.append(perf() - t0 - 0.001)

    # The same ticker on an idle loop first: the machine's own noise floor.
    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.3)
    done = True
    await task
    idle, lateness, done = sorted(lateness), [], False
    async with vt.TrackingClient(sink, API_KEY, max_requests_per_second=None) as client:
        buffer = vt.TrackingBuffer(client, settings)
        for view in views:  # no await: nothing is sent before the ticker runs
            buffer.enqueue(view)
        del views
        task = asyncio.create_task(ticker())
        t0 = time.perf_counter()
        await buffer.flush()
        elapsed = time.perf_counter() - t0
        done = True
        await task
        await buffer.aclose()
    ticks = len(lateness)
    # A flush shorter than one tick (tiny N): its whole duration bounds any stall.
    ms = sorted(x * 1e3 for x in lateness) or [elapsed * 1e3]
    return {
        "p50_ms": percentile(ms, 0.5),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": ms[-1],
        "idle_max_ms": idle[-1] * 1e3,
        "ticks": ticks,
        "seconds": elapsed,
        "delivered": delivered(sink, PRODUCT_VIEWS),
    }


def looplag_voyado(sink: str, n: int) -> dict[str, Any]:
    return asyncio.run(_loop_lag(sink, n))


# -- cart collapse -------------------------------------------------------------------------


async def _collapse(sink: str, n: int) -> dict[str, Any]:
    import voyado_tracking as vt
    from voyado_tracking.testing import latest_carts, shop_traffic

    # The same simulated shoppers in every run: cart updates only, about 8 per cart.
    updates = shop_traffic(5, events=n, shoppers=1_000, view_share=0.0)
    carts = len(latest_carts(updates))
    # Default client and flush settings (rate limit 40 requests/s, batches of 500, 5 s).
    async with vt.TrackingClient(sink, API_KEY) as client:
        buffer = vt.TrackingBuffer(client, vt.FlushSettings(max_pending=max(10_000, carts)))
        t0 = time.perf_counter()
        for start in range(0, n, 100):
            for event in updates[start:start + 100]:
                buffer.enqueue(event)
            await asyncio.sleep(0)
        await buffer.flush()
        elapsed = time.perf_counter() - t0
        stats = buffer.stats
        await buffer.aclose()
    return {
        "updates": n, "carts": carts, "requests": stats.requests, "sent": stats.sent,
        "collapsed": stats.collapsed, "at_sink": delivered(sink, "/api/v2/tracking/carts/batch"),
        "seconds": elapsed,
    }


def collapse_voyado(sink: str, n: int) -> dict[str, Any]:
    return asyncio.run(_collapse(sink, n))


TRIALS: dict[tuple[str, str], Callable[[str, int], dict[str, Any]]] = {
    ("caller", "voyado-enqueue"): caller_voyado_enqueue,
    ("caller", "voyado-enqueue-otel"): caller_voyado_enqueue_otel,
    ("caller", "voyado-build-enqueue"): caller_voyado_build_enqueue,
    ("caller", "segment"): caller_segment,
    ("caller", "posthog"): caller_posthog,
    ("throughput", "voyado"): throughput_voyado,
    ("throughput", "voyado-prebuilt"): throughput_voyado_prebuilt,
    ("throughput", "segment"): throughput_segment,
    ("throughput", "posthog"): throughput_posthog,
    ("throughput", "raw"): throughput_raw,
    ("throughput", "raw-serialising"): throughput_raw_serialising,
    ("throughput", "sdk-batch"): throughput_sdk_batch,
    ("throughput", "sdk-single"): throughput_sdk_single,
    ("memory", "voyado"): memory_voyado,
    ("memory", "segment"): memory_segment,
    ("memory", "posthog"): memory_posthog,
    ("latency", "voyado"): latency_voyado,
    ("latency", "sdk"): latency_sdk,
    ("looplag", "voyado"): looplag_voyado,
    ("collapse", "voyado"): collapse_voyado,
    **JOURNAL_TRIALS,
    **TRACKER_TRIALS,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario")
    parser.add_argument("lib")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--sink", required=True, help="the sink's base URL")
    args = parser.parse_args()
    trial = TRIALS[(args.scenario, args.lib)]
    sink_get(args.sink, "reset")
    try:
        result = trial(args.sink, args.n)
    except Unavailable as error:
        result = {"error": str(error)}
    except Exception as error:  # report it in the table rather than hide it
        result = {"error": f"{type(error).__name__}: {error}"[:200]}
    print(orjson.dumps(result).decode(), flush=True)
    if args.lib in ("segment", "posthog"):
        # Their threads (and atexit flushes) must not outlive the trial.
        os._exit(0)


if __name__ == "__main__":
    main()
