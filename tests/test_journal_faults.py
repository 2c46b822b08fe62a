"""The journal under faults, on real files: a damaged page, a failing writer thread, a buffer
never closed, a cart superseded in the journal, a bulk burst (the writer's step bound)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import cart, fast_settings, view

import voyado_tracking as vt
from voyado_tracking._journal._body import encode_cart, encode_views
from voyado_tracking._journal._db import JournalFile, instant_of
from voyado_tracking._journal._ops import ROWS_PER_STEP, Delete
from voyado_tracking._journal._writer import Writer
from voyado_tracking.testing import FakeVoyado

WRITER_THREAD = "voyado_tracking journal"


def buffer(client: vt.TrackingClient, directory: Path, **overrides: Any) -> vt.TrackingBuffer:
    settings = fast_settings(**{"shutdown_timeout": 2.0, **overrides})
    return vt.TrackingBuffer(client, settings,
                             journal=vt.Journal(directory, commit_interval=0.01))


def accounted(stats: vt.BufferStats) -> bool:
    return stats.enqueued + stats.recovered == (
        stats.collapsed + stats.sent + stats.dropped + stats.dead_lettered + stats.spooled
        + stats.pending_carts + stats.pending_product_views + stats.in_flight
    )


def owner(client: vt.TrackingClient) -> str:
    return client.transport.fingerprint("journal")


def gone_journal(directory: Path, client: vt.TrackingClient, *,
                 views: Sequence[vt.ProductView] = (), carts: Sequence[vt.Cart] = (),
                 age: float = 0.0) -> Path:
    """A journal file of a process that is gone, holding *views* and *carts*; its mtime
    *age* seconds back (recovery reads the oldest file first)."""
    file = JournalFile.create(directory, owner(client), synchronous="NORMAL", max_bytes=10**9)
    now = time.time()
    file.begin()
    if views:
        file.add_views(1, now, encode_views(list(views)))
    if carts:
        file.add_carts([(c.cart_reference, instant_of(c), now, encode_cart(c)) for c in carts])
    file.commit()
    path = file.path
    file.release()
    os.utime(path, (now - age, now - age))
    return path


def damage_a_page(path: Path) -> None:
    """Overwrite a leaf page in the middle of the views table: the file opens and its meta
    reads, but reading the views fails with ``sqlite3.DatabaseError``."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        size = db.execute("PRAGMA page_size").fetchone()[0]
        try:
            leaves = [p for (p,) in db.execute(
                "SELECT pageno FROM dbstat WHERE name = 'views' AND pagetype = 'leaf' "
                "ORDER BY pageno")]
        except sqlite3.OperationalError:  # SQLite built without dbstat
            leaves = [db.execute("PRAGMA page_count").fetchone()[0] // 2 + 1]
    with open(path, "r+b") as f:
        f.seek((leaves[len(leaves) // 2] - 1) * size)
        f.write(b"\xde\xad\xbe\xef" * (size // 4))
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT key FROM meta").fetchall() == [("owner",)]
        with pytest.raises(sqlite3.DatabaseError):
            db.execute("SELECT count(*) FROM views").fetchall()


def journal_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("journal-*.sqlite3"))


def views(prefix: str, n: int) -> list[vt.ProductView]:
    return [view(f"{prefix}-{i:04d}") for i in range(n)]


# -- a damaged page ---------------------------------------------------------------------------


async def test_a_file_with_a_damaged_page_is_set_aside_and_the_rest_is_delivered(
    fake: FakeVoyado, client: vt.TrackingClient, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    damaged = gone_journal(tmp_path, client, views=views("lost", 2000), age=60)
    damage_a_page(damaged)
    gone_journal(tmp_path, client, views=views("good", 20), age=30)
    with caplog.at_level(logging.ERROR, "voyado_tracking"):
        async with buffer(client, tmp_path) as b:
            b.enqueue(view("new"))
            await b.flush(timeout=10)
            await b.sync(timeout=10)
    assert sorted(v.item_id for v in fake.product_views) == [
        *(v.item_id for v in views("good", 20)), "new"]
    assert not damaged.exists()
    assert damaged.with_name(damaged.name + ".corrupt").exists()
    assert b.stats.journal_errors == 1
    assert any(damaged.name in r.getMessage() and "set aside" in r.getMessage()
               for r in caplog.records)
    assert accounted(b.stats), b.stats


async def test_a_start_after_a_damaged_file_was_set_aside_runs_clean(
    fake: FakeVoyado, client: vt.TrackingClient, tmp_path: Path
) -> None:
    damage_a_page(gone_journal(tmp_path, client, views=views("lost", 2000)))
    async with buffer(client, tmp_path) as first:
        await first.flush(timeout=10)
    async with buffer(client, tmp_path) as second:
        second.enqueue(view("new"))
        await second.flush(timeout=10)
    assert second.stats.journal_errors == 0
    assert [v.item_id for v in fake.product_views] == ["new"]


# -- a writer thread that fails ---------------------------------------------------------------


@pytest.fixture
def failing_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer thread dies in its first round (a bug), before recovery said anything."""

    def fail(self: Writer) -> None:
        raise RuntimeError("a bug in the writer")

    monkeypatch.setattr(Writer, "_round", fail)


@pytest.mark.usefixtures("failing_writer")
async def test_flush_returns_when_the_writer_thread_fails(
    fake: FakeVoyado, client: vt.TrackingClient, tmp_path: Path
) -> None:
    gone_journal(tmp_path, client, views=views("old", 5))
    async with buffer(client, tmp_path) as b:
        b.enqueue(view("new"))
        await b.flush(timeout=10)
        assert [v.item_id for v in fake.product_views] == ["new"]
        assert accounted(b.stats), b.stats


@pytest.mark.usefixtures("failing_writer")
async def test_sync_raises_at_once_when_the_writer_thread_fails(
    fake: FakeVoyado, client: vt.TrackingClient, tmp_path: Path
) -> None:
    async with buffer(client, tmp_path) as b:
        b.enqueue(view("new"))
        with pytest.raises(TimeoutError, match="stopped writing"):
            await b.sync(timeout=10)
        await b.flush(timeout=10)


# -- a buffer never closed --------------------------------------------------------------------


def writer_threads(besides: frozenset[threading.Thread] = frozenset()) -> list[threading.Thread]:
    """The journal writer threads running, except those in *besides*."""
    return [t for t in threading.enumerate() if t.name == WRITER_THREAD and t not in besides]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def abandon(client: vt.TrackingClient, directory: Path,
                  earlier: frozenset[threading.Thread] = frozenset()) -> None:
    """A journaled buffer holding 3 committed views, dropped without being closed."""

    async def forget_to_close() -> None:
        b = buffer(client, directory, flush_interval=3600)
        for i in range(3):
            b.enqueue(view(f"p{i}"))
        await b.sync(timeout=10)

    async def forget_then_collect() -> None:
        await forget_to_close()
        gc.collect()

    with pytest.warns(ResourceWarning, match="3 undelivered events"):
        await forget_then_collect()
    for _ in range(500):  # the writer commits, closes and ends on its own thread
        if not writer_threads(earlier):
            return
        await asyncio.sleep(0.01)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
async def test_a_collected_buffer_logs_its_count_and_releases_its_journal(
    fake: FakeVoyado, client: vt.TrackingClient, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gc.collect()  # what earlier tests left for the collector is not counted
    earlier = frozenset(writer_threads())  # another test's journal may still be ending
    fds = open_fds()
    with caplog.at_level(logging.ERROR, "voyado_tracking"):
        await abandon(client, tmp_path, earlier)
    assert any("garbage-collected with 3 undelivered events" in r.getMessage()
               for r in caplog.records)
    assert writer_threads(earlier) == []
    assert open_fds() <= fds  # an earlier test's writer may have ended meanwhile


async def test_the_next_buffer_in_the_process_recovers_a_collected_buffers_events(
    fake: FakeVoyado, client: vt.TrackingClient, tmp_path: Path
) -> None:
    await abandon(client, tmp_path)
    async with buffer(client, tmp_path) as b:
        await b.flush(timeout=10)
    assert b.stats.recovered == 3
    assert sorted(v.item_id for v in fake.product_views) == ["p0", "p1", "p2"]


# -- a cart superseded in the journal ---------------------------------------------------------


async def test_a_cart_superseded_in_the_journal_counts_as_recovered_and_collapsed(
    fake: FakeVoyado, client: vt.TrackingClient, tmp_path: Path
) -> None:
    """The older file's newer update of "c" is delivered before the newer file is read: the
    delivery deletes the stale row there, which the journal held and so was recovered."""
    gone_journal(tmp_path, client, carts=[cart("c", 2), cart("a", 1), cart("b", 1),
                                          cart("d", 1)], age=60)
    gone_journal(tmp_path, client, carts=[cart("c", 1)], age=30)
    async with buffer(client, tmp_path, max_pending=4, max_batch_size=4) as b:
        await b.flush(timeout=10)
    stats = b.stats
    assert fake.carts["c"] == cart("c", 2)
    assert (stats.recovered, stats.collapsed, stats.sent) == (5, 1, 4)
    assert accounted(stats), stats
    assert journal_files(tmp_path) == []  # both recovered, then removed


# -- the writer's steps -----------------------------------------------------------------------


def test_no_writer_step_takes_or_writes_more_than_1000_rows(tmp_path: Path) -> None:
    """A burst is taken, encoded and written in steps, the GIL given up between them."""
    writer = Writer(tmp_path, "owner", synchronous="NORMAL", commit_interval=1.0,
                    max_bytes=10**9, post=lambda callback, *args: None,
                    on_loaded=lambda loaded, done: None, on_commit=lambda: None,
                    on_closed=lambda: None, on_superseded=lambda count: None)
    writer._open()
    own = writer._own
    assert own is not None
    steps: list[tuple[str, int]] = []

    def record(name: str, method: Any, size: Any) -> Any:
        def call(*args: Any) -> Any:
            steps.append((name, size(*args)))
            return method(*args)
        return call

    take, add_views = writer._take, own.add_views
    writer._take = record("take", take, lambda items, *_: len(items))  # type: ignore[method-assign]
    own.add_views = record(  # type: ignore[method-assign]
        "views", add_views, lambda first, now, bodies: bodies.count(b'"item_id"'))
    own.add_carts = record("carts", own.add_carts, len)  # type: ignore[method-assign]
    own.delete_views = record("deletes", own.delete_views, len)  # type: ignore[method-assign]
    burst = views("v", 5500)
    writer.ops.extend([*burst, *(cart(f"c{i}", 1) for i in range(2500))])
    writer._round()
    writer.ops.append(Delete(burst[:2500]))
    writer._round()
    assert max(size for _, size in steps) <= ROWS_PER_STEP == 1000
    totals = {name: sum(size for n, size in steps if n == name) for name, _ in steps}
    assert totals == {"take": 8001, "views": 5500, "carts": 2500, "deletes": 2500}
    writer._close_files()


def test_the_row_map_finds_every_view_across_its_parts() -> None:
    """Rows keeps several bounded dicts (growing one big dict stalls the loop): a view is
    found in whichever part holds it, and emptied parts go."""
    from voyado_tracking._journal._ops import PART, Rows

    rows = Rows()
    many = views("v", 3 * PART)
    for start in range(0, len(many), ROWS_PER_STEP):
        rows.number(many[start : start + ROWS_PER_STEP])
    assert len(rows._parts) == 3
    assert rows.get(id(many[-1]), 0) == 3 * PART
    assert sorted(rows.forget([many[5], many[-5], many[PART + 5]])) == [
        6, PART + 6, 3 * PART - 4]
    assert sorted(rows.forget(many[: 2 * PART])) == [
        seq for seq in range(1, 2 * PART + 1) if seq not in (6, PART + 6)]
    assert len(rows._parts) == 2  # the oldest emptied and went
    assert len(rows.forget(many[2 * PART :])) == PART - 1
    assert len(rows._parts) == 1
    assert rows.get(id(many[5]), 0) == 0
