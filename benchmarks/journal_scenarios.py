"""The durable journal's trials (``scenarios.py journal LIB``); the journal-off sides are the
ordinary caller and throughput trials of the same run.

- ``enqueue-on``: caller cost of ``enqueue()`` of pre-built views, journal on;
- ``throughput-on``: delivered events/s, views built in the loop, journal on;
- ``recovery``: a journal file of a process that is gone holds N views; a new buffer (default
  settings, ``max_pending=10_000``) starts on it: seconds to the first 2xx, delivered events/s,
  peak events held, peak RSS growth, and bytes on disk per journaled view;
- ``recovery-off``: the same N views built in the loop and handed over with ``await put()``
  under the same settings, journal off: the rate recovery is compared with;
- ``burst-on`` / ``burst-off``: a bulk producer enqueues N pre-built views in one burst (no
  await between them), then a ticker sleeping 1 ms measures how late it wakes while
  ``flush()`` delivers them and, journal on, ``sync()`` waits for the writer to commit them
  (``journal_burst.py`` runs both side by side for 50k and 200k views). Full (generation 2)
  garbage collections in that window are counted and timed, and the maximum lateness outside
  them reported too: they walk the whole heap, whoever triggers them.
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from _common import (
    API_KEY,
    CHUNK,
    PRODUCT_VIEWS,
    build_view,
    delivered,
    percentile,
    raw_view,
    rss_bytes,
    voyado_caller,
    voyado_throughput,
)

Trial = Callable[[str, int], dict[str, Any]]
PREP_CHUNK = 10_000


def _journal(directory: str) -> Any:
    import voyado_tracking as vt

    return vt.Journal(directory)


def write_journal(directory: Path, owner: str, n: int) -> float:
    """A journal file of a process that is gone, holding *n* views; bytes on disk per view."""
    try:
        from voyado_tracking._journal._body import encode_views
        from voyado_tracking._journal._db import JournalFile
    except ImportError:  # a tree before the journal package (for --baseline runs)
        from voyado_tracking._journal_db import (  # type: ignore[no-redef]
            JournalFile,
            encode_views,
        )

    file = JournalFile.create(directory, owner, synchronous="NORMAL", max_bytes=10**12)
    now = time.time()
    for start in range(0, n, PREP_CHUNK):
        views = [build_view(raw_view(i)) for i in range(start, min(n, start + PREP_CHUNK))]
        file.begin()
        file.add_views(start + 1, now, encode_views(views))
        file.commit()
    file.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = sum(p.stat().st_size for p in directory.iterdir() if p.suffix != ".lock")
    file.release()
    return size / n


async def _recovery(sink: str, n: int) -> dict[str, Any]:
    import voyado_tracking as vt

    with tempfile.TemporaryDirectory() as directory:
        async with vt.TrackingClient(sink, API_KEY, max_requests_per_second=None) as client:
            per_view = write_journal(Path(directory), client.transport.fingerprint("journal"), n)
            gc.collect()
            rss_before, peak_rss, peak_held, first = rss_bytes(), 0, 0, None
            settings = vt.FlushSettings()
            started = time.perf_counter()
            buffer = vt.TrackingBuffer(client, settings, journal=vt.Journal(directory))

            async def watch() -> None:
                nonlocal peak_rss, peak_held, first
                ticks = 0
                while True:
                    stats = buffer.stats
                    held = stats.pending_product_views + stats.in_flight
                    peak_held = max(peak_held, held)
                    if first is None and stats.sent:
                        first = time.perf_counter() - started
                    if ticks % 50 == 0:
                        peak_rss = max(peak_rss, rss_bytes())
                    ticks += 1
                    await asyncio.sleep(0.001)

            async with buffer:
                watcher = asyncio.create_task(watch())
                await buffer.flush()
                elapsed = time.perf_counter() - started
                watcher.cancel()
            stats = buffer.stats
    assert stats.recovered == n, stats
    assert stats.sent == n, stats
    return {"events_per_s": n / elapsed, "first_batch_s": first, "peak_held": peak_held,
            "peak_rss_mb": (peak_rss - rss_before) / 1e6, "bytes_per_view": per_view,
            "delivered": delivered(sink, PRODUCT_VIEWS), "seconds": elapsed}


async def _recovery_off(sink: str, n: int) -> dict[str, Any]:
    import voyado_tracking as vt

    async with vt.TrackingClient(sink, API_KEY, max_requests_per_second=None) as client:
        started = time.perf_counter()
        async with vt.TrackingBuffer(client, vt.FlushSettings()) as buffer:
            put = buffer.put
            for i in range(n):
                await put(build_view(raw_view(i)))
            await buffer.flush()
            elapsed = time.perf_counter() - started
    return {"events_per_s": n / elapsed, "delivered": delivered(sink, PRODUCT_VIEWS),
            "seconds": elapsed}


async def _burst(sink: str, n: int, journal: bool) -> dict[str, Any]:
    import voyado_tracking as vt

    views = [build_view(raw_view(i)) for i in range(n)]
    settings = vt.FlushSettings(max_pending=n + CHUNK)
    ticks: list[tuple[float, float]] = []  # (start, lateness)
    full_gcs: list[tuple[float, float]] = []  # (start, end) of full collections in the window
    done = False

    async def ticker() -> None:
        perf = time.perf_counter
        while not done:
            t0 = perf()
            await asyncio.sleep(0.001)
            ticks.append((t0, perf() - t0 - 0.001))

    def on_gc(phase: str, info: dict[str, int]) -> None:
        # A full collection walks the whole heap (here 1M+ objects of the benchmark's own
        # views) on whichever thread allocates when it is due: reported beside the lateness.
        if info["generation"] == 2:
            if phase == "start":
                full_gcs.append((time.perf_counter(), float("inf")))
            elif full_gcs:
                full_gcs[-1] = (full_gcs[-1][0], time.perf_counter())

    with tempfile.TemporaryDirectory() as directory:
        async with vt.TrackingClient(sink, API_KEY, max_requests_per_second=None) as client:
            buffer = vt.TrackingBuffer(client, settings,
                                       journal=vt.Journal(directory) if journal else None)
            async with buffer:
                await buffer.flush()  # started (journal on: its recovery is over)
                for view in views:  # the burst: no await, nothing runs in between
                    buffer.enqueue(view)
                del views
                # Both sides start from a collected heap: a full collection left due by
                # building the views would otherwise land in the window of whichever side
                # allocates first (journal on, the views are freed later, on the writer).
                gc.collect()
                task = asyncio.create_task(ticker())
                gc.callbacks.append(on_gc)
                t0 = time.perf_counter()
                await buffer.flush()
                await buffer.sync()  # journal off: returns at once
                elapsed = time.perf_counter() - t0
                done = True
                await task
                gc.callbacks.remove(on_gc)
            stats = buffer.stats
    assert stats.sent == n, stats
    assert stats.journal_errors == 0, stats
    ms = sorted(late * 1e3 for _, late in ticks) or [elapsed * 1e3]
    clear = [late * 1e3 for start, late in ticks
             if not any(a < start + late + 0.001 and b > start for a, b in full_gcs)]
    return {"p99_ms": percentile(ms, 0.99), "max_ms": ms[-1], "ticks": len(ms),
            "max_outside_full_gc_ms": max(clear, default=ms[-1]),
            "full_gcs": len(full_gcs),
            "full_gc_ms": max((b - a for a, b in full_gcs), default=0.0) * 1e3,
            "seconds": elapsed, "delivered": delivered(sink, PRODUCT_VIEWS)}


def _with_journal(run: Callable[..., Coroutine[Any, Any, dict[str, Any]]],
                  **kwargs: Any) -> Trial:
    def trial(sink: str, n: int) -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as directory:
            return asyncio.run(run(sink, n, journal=_journal(directory), **kwargs))

    return trial


TRIALS: dict[tuple[str, str], Trial] = {
    ("journal", "enqueue-on"): _with_journal(voyado_caller, prebuilt=True),
    ("journal", "throughput-on"): _with_journal(voyado_throughput, prebuilt=False),
    ("journal", "recovery"): lambda sink, n: asyncio.run(_recovery(sink, n)),
    ("journal", "recovery-off"): lambda sink, n: asyncio.run(_recovery_off(sink, n)),
    ("journal", "burst-on"): lambda sink, n: asyncio.run(_burst(sink, n, journal=True)),
    ("journal", "burst-off"): lambda sink, n: asyncio.run(_burst(sink, n, journal=False)),
}
