"""The durable journal's trials (``scenarios.py journal LIB``); the journal-off sides are the
ordinary caller and throughput trials of the same run.

- ``enqueue-on``: caller cost of ``enqueue()`` of pre-built views, journal on;
- ``throughput-on``: delivered events/s, views built in the loop, journal on;
- ``recovery``: a journal file of a process that is gone holds N views; a new buffer (default
  settings, ``max_pending=10_000``) starts on it: seconds to the first 2xx, delivered events/s,
  peak events held, peak RSS growth, and bytes on disk per journaled view;
- ``recovery-off``: the same N views built in the loop and handed over with ``await put()``
  under the same settings, journal off: the rate recovery is compared with.
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
    PRODUCT_VIEWS,
    build_view,
    delivered,
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
}
