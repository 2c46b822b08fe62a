"""TrackingBuffer with a journal, on real files and the loopback fake: keep, recover, fail safe."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _journal_v1 import write_v1_journal
from conftest import CONTACT, FAST_RETRY, cart, fast_settings, view

import voyado_tracking as vt
from voyado_tracking._journal._ops import Delete
from voyado_tracking.testing import Chaos, FakeVoyado


def settings(**overrides: Any) -> vt.FlushSettings:
    return fast_settings(**{"shutdown_timeout": 2.0, **overrides})


def buffer(client: vt.TrackingClient, directory: Path, **overrides: Any) -> vt.TrackingBuffer:
    journal = vt.Journal(directory, **{"commit_interval": 0.01, **overrides.pop("journal", {})})
    return vt.TrackingBuffer(client, settings(**overrides), journal=journal)


def accounted(stats: vt.BufferStats) -> bool:
    return stats.enqueued + stats.recovered == (
        stats.collapsed + stats.sent + stats.dropped + stats.dead_lettered + stats.spooled
        + stats.pending_carts + stats.pending_product_views + stats.in_flight
    )


def rows(directory: Path) -> int:
    total = 0
    for path in directory.glob("journal-*.sqlite3"):
        with contextlib.closing(sqlite3.connect(path)) as db:
            total += db.execute("SELECT (SELECT count(*) FROM views) + "
                                "(SELECT count(*) FROM carts)").fetchone()[0]
    return total


def files(directory: Path) -> list[Path]:
    return list(directory.iterdir())


def chmod(path: Path, mode: int) -> None:
    path.chmod(mode)


def age_rows(directory: Path, seconds: float) -> None:
    """Make every row look written *seconds* earlier."""
    for path in directory.glob("journal-*.sqlite3"):
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute("UPDATE views SET written = written - ?", (seconds,))
            db.execute("UPDATE carts SET written = written - ?", (seconds,))


async def leave_in_journal(fake: FakeVoyado, client: vt.TrackingClient, directory: Path,
                           events: list[vt.ProductView | vt.Cart]) -> vt.BufferStats:
    """Enqueue *events* while Voyado fails, close: they stay in the journal."""
    fake.chaos(Chaos(error_rate=1.0))
    async with buffer(client, directory, shutdown_timeout=0.2) as b:
        for event in events:
            b.enqueue(event)
        await b.sync()
    fake.chaos(None)
    fake.reset()
    return b.stats


async def test_events_left_at_close_stay_in_the_journal_counted_spooled(
    fake: FakeVoyado, client: vt.TrackingClient, tmp_path: Path
) -> None:
    stats = await leave_in_journal(fake, client, tmp_path, [view("a"), view("b"), cart("c", 1)])
    assert stats.spooled == 3
    assert stats.dropped == 0
    assert rows(tmp_path) == 3


async def test_next_buffer_recovers_and_delivers_what_the_journal_holds(
    fake: FakeVoyado, client: vt.TrackingClient, tmp_path: Path
) -> None:
    await leave_in_journal(fake, client, tmp_path, [view("a"), view("b"), cart("c", 1)])
    async with buffer(client, tmp_path) as b:
        await b.flush()
    assert sorted(v.item_id for v in fake.product_views) == ["a", "b"]
    assert fake.carts["c"] == cart("c", 1)
    assert b.stats.recovered == 3
    assert b.stats.enqueued == 0
    assert rows(tmp_path) == 0


async def test_delivered_events_leave_the_journal(
    fake: FakeVoyado, client: vt.TrackingClient, tmp_path: Path
) -> None:
    async with buffer(client, tmp_path) as b:
        for i in range(20):
            b.enqueue(view(f"v{i}"))
        b.enqueue(cart("c", 1))
        await b.flush()
        await b.sync()
        assert rows(tmp_path) == 0
    assert files(tmp_path) == []  # an empty journal file is removed at close


async def test_a_delivered_older_cart_update_does_not_delete_the_newer_pending_one(
    fake: FakeVoyado, client: vt.TrackingClient, tmp_path: Path
) -> None:
    fake.hold()
    async with buffer(client, tmp_path, shutdown_timeout=0.3) as b:
        b.enqueue(cart("c", 1))
        while b.stats.in_flight == 0:
            await fake_turn()
        b.enqueue(cart("c", 2))  # pending while the older update is in flight
        fake.release()
        while b.stats.sent == 0:
            await fake_turn()
        fake.hold()
        await b.sync()
    fake.release()
    fake.reset()
    async with buffer(client, tmp_path) as b:
        await b.flush()
    assert fake.carts["c"] == cart("c", 2)


async def fake_turn() -> None:
    await asyncio.sleep(0.005)


async def test_cart_updates_collapse_in_the_journal_to_the_latest_time(
    fake: FakeVoyado, client: vt.TrackingClient, tmp_path: Path
) -> None:
    await leave_in_journal(fake, client, tmp_path,
                           [cart("c", 3), cart("c", 5), cart("c", 4), cart("d", 1)])
    assert rows(tmp_path) == 2
    async with buffer(client, tmp_path) as b:
        await b.flush()
    assert fake.carts["c"] == cart("c", 5)
    assert b.stats.recovered == 2


async def test_accounting_holds_with_recovered_events(
    fake: FakeVoyado, client: vt.TrackingClient, tmp_path: Path
) -> None:
    await leave_in_journal(fake, client, tmp_path, [view("a"), cart("c", 1), cart("d", 1)])
    async with buffer(client, tmp_path) as b:
        await b.flush()
        b.enqueue(cart("c", 2))
        b.enqueue(view("b"))
        await b.flush()
        stats = b.stats
    assert stats.recovered == 3
    assert stats.enqueued == 2
    assert accounted(stats), stats
    assert accounted(b.stats), b.stats


async def test_recovery_streams_within_max_pending_and_drops_nothing(
    fake: FakeVoyado, client: vt.TrackingClient, tmp_path: Path
) -> None:
    await leave_in_journal(fake, client, tmp_path, [view(f"v{i}") for i in range(300)])
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            stats = b.stats
            peak = max(peak, stats.pending_product_views + stats.in_flight)
            await asyncio.sleep(0)

    fake.latency = 0.002
    b = buffer(client, tmp_path, max_pending=40, max_batch_size=20)
    async with b:
        watcher = asyncio.create_task(watch())
        await b.flush()
        watcher.cancel()
    assert b.stats.dropped == 0
    assert b.stats.recovered == 300
    assert len({v.item_id for v in fake.product_views}) == 300
    assert 0 < peak <= 40


async def test_a_buffer_recovers_every_event_of_a_format_1_journal_with_all_its_fields(
    fake: FakeVoyado, client: vt.TrackingClient, tmp_path: Path
) -> None:
    """Format-1 files (bodies as arrays in a frozen field order) are migrated, not set aside."""
    write_v1_journal(
        tmp_path / "journal-0123456789abcdef.sqlite3", client.transport.fingerprint("journal"),
        views=[
            ["SKU-1", CONTACT, "2024-05-01T10:00:00.123456+02:00", "shoes", "s1", True, "sv-SE",
             "https://shop.example/p/1", "https://ref.example/",
             [["utm_source", "mail"], ["utm_campaign", "spring"], ["utm_term", ""]]],
            ["SKU-2", CONTACT, "2024-05-01T10:00:01Z", None, None, False, None, None, None, []],
        ],
        carts=[
            ["c1", CONTACT, [["SKU-1", 2], ["SKU-3", 1]], "2024-05-01T10:00:02-05:00", "en-US",
             "https://shop.example/cart"],
            ["c2", CONTACT, [], "2024-05-01T10:00:03Z", None, None],  # emptied
        ],
    )
    async with buffer(client, tmp_path) as b:
        await b.flush()
    assert fake.product_views == [
        vt.ProductView("SKU-1", CONTACT, time="2024-05-01T10:00:00.123456+02:00",
                       category="shoes", session_id="s1", new_session=True, language="sv-SE",
                       url="https://shop.example/p/1", external_referrer="https://ref.example/",
                       utm=[vt.Utm("utm_source", "mail"), vt.Utm("utm_campaign", "spring"),
                            vt.Utm("utm_term", "")]),
        vt.ProductView("SKU-2", CONTACT, time="2024-05-01T10:00:01Z", new_session=False),
    ]
    assert fake.carts == {
        "c1": vt.Cart("c1", CONTACT, [vt.CartItem("SKU-1", 2), vt.CartItem("SKU-3", 1)],
                      time="2024-05-01T10:00:02-05:00", language="en-US",
                      url="https://shop.example/cart"),
        "c2": vt.Cart("c2", CONTACT, time="2024-05-01T10:00:03Z"),
    }
    assert b.stats.recovered == 4
    assert b.stats.journal_errors == 0
    assert rows(tmp_path) == 0
    assert files(tmp_path) == []  # recovered, then removed


async def test_flush_waits_for_recovery_to_finish(
    fake: FakeVoyado, client: vt.TrackingClient, tmp_path: Path
) -> None:
    await leave_in_journal(fake, client, tmp_path, [view(f"v{i}") for i in range(50)])
    async with buffer(client, tmp_path, max_pending=10, max_batch_size=5) as b:
        await b.flush()
        assert b.stats.sent == 50


async def test_expired_events_are_dropped_with_reason_expired(
    fake: FakeVoyado, client: vt.TrackingClient, tmp_path: Path
) -> None:
    await leave_in_journal(fake, client, tmp_path, [view("old"), cart("c", 1)])
    age_rows(tmp_path, 7200.0)
    dropped: list[tuple[str, str]] = []
    journal = vt.Journal(tmp_path, max_age=3600.0)
    async with vt.TrackingBuffer(client, settings(), journal=journal,
                                 on_drop=lambda e, r: dropped.append((type(e).__name__, r))) as b:
        await b.flush()
    assert sorted(dropped) == [("Cart", "expired"), ("ProductView", "expired")]
    assert b.stats.dropped == 2
    assert b.stats.recovered == 2
    assert fake.product_views == []
    assert rows(tmp_path) == 0


async def test_files_of_another_tenant_are_left_alone(
    fake: FakeVoyado, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeVoyado(api_key="other-key") as other, vt.TrackingClient(
        other.url, other.api_key, retry=FAST_RETRY
    ) as c:
        await leave_in_journal(other, c, tmp_path, [view("theirs")])
    async with vt.TrackingClient(fake.url, fake.api_key) as client:
        with caplog.at_level(logging.WARNING, "voyado_tracking"):
            async with buffer(client, tmp_path) as b:
                await b.flush()
    assert b.stats.recovered == 0
    assert rows(tmp_path) == 1
    assert any("another Voyado tenant or API key" in r.getMessage() for r in caplog.records)
    assert "other-key" not in caplog.text


async def test_a_corrupt_file_is_set_aside_and_the_buffer_keeps_journaling(
    fake: FakeVoyado, client: vt.TrackingClient, tmp_path: Path
) -> None:
    (tmp_path / "journal-00000000000000ff.sqlite3").write_bytes(b"garbage" * 1000)
    async with buffer(client, tmp_path) as b:
        b.enqueue(view("a"))
        await b.sync()
        await b.flush()
    assert b.stats.journal_errors == 1
    assert (tmp_path / "journal-00000000000000ff.sqlite3.corrupt").exists()
    assert [v.item_id for v in fake.product_views] == ["a"]


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0,
                    reason="root ignores directory permissions")
async def test_a_read_only_directory_falls_back_to_memory_and_counts_it(
    fake: FakeVoyado, client: vt.TrackingClient, tmp_path: Path
) -> None:
    chmod(tmp_path, 0o500)
    try:
        async with buffer(client, tmp_path) as b:
            b.enqueue(view("a"))
            await b.flush()
    finally:
        chmod(tmp_path, 0o700)
    assert b.stats.journal_errors >= 1
    assert [v.item_id for v in fake.product_views] == ["a"]


async def test_an_unusable_directory_falls_back_to_memory_and_counts_it(
    fake: FakeVoyado, client: vt.TrackingClient, tmp_path: Path
) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    async with buffer(client, not_a_directory) as b:
        b.enqueue(view("a"))
        await b.flush()
    assert b.stats.journal_errors == 1
    assert [v.item_id for v in fake.product_views] == ["a"]


async def test_max_bytes_reached_falls_back_to_memory_and_counts_it(
    fake: FakeVoyado, client: vt.TrackingClient, tmp_path: Path
) -> None:
    fake.hold()
    async with buffer(client, tmp_path, journal={"max_bytes": 65_536}, max_pending=5000,
                      shutdown_timeout=5.0) as b:
        for i in range(2000):
            b.enqueue(vt.ProductView(f"item-{i:05d}", CONTACT, url="https://shop.example/" +
                                     "x" * 200))
        with pytest.raises(TimeoutError, match="stopped writing"):
            await b.sync()
        fake.release()
        await b.flush()
    assert b.stats.journal_errors == 1
    assert b.stats.sent == 2000


async def test_sync_times_out_naming_what_is_not_committed(
    fake: FakeVoyado, client: vt.TrackingClient, tmp_path: Path
) -> None:
    async with buffer(client, tmp_path, journal={"commit_interval": 30.0}) as b:
        await b.flush()  # recovery is over: nothing else wakes the writer early
        b._journal._writer.wake = lambda: None  # type: ignore[union-attr]  # no early commit
        b.enqueue(view("a"))
        with pytest.raises(TimeoutError, match="1 events are not committed"):
            await b.sync(timeout=0.05)


async def test_a_refused_event_leaves_no_row(
    fake: FakeVoyado, client: vt.TrackingClient, tmp_path: Path
) -> None:
    fake.chaos(Chaos(error_rate=1.0))
    async with buffer(client, tmp_path, max_pending=1, max_batch_size=1, overflow="raise",
                      shutdown_timeout=0.2) as b:
        b.enqueue(view("kept"))
        with pytest.raises(vt.BufferFullError):
            b.enqueue(view("refused"))
        await b.sync()
    fake.reset()
    async with buffer(client, tmp_path) as b2:
        await b2.flush()
    assert [v.item_id for v in fake.product_views] == ["kept"]


async def test_spool_path_is_not_written_when_the_journal_keeps_the_events(
    fake: FakeVoyado, client: vt.TrackingClient, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.jsonl"
    fake.chaos(Chaos(error_rate=1.0))
    journal = vt.Journal(tmp_path / "journal")
    async with vt.TrackingBuffer(client, settings(shutdown_timeout=0.2), journal=journal,
                                 spool_path=spool) as b:
        b.enqueue(view("a"))
    assert b.stats.spooled == 1
    assert not spool.exists()


async def test_two_live_buffers_never_deliver_each_others_events(
    fake: FakeVoyado, client: vt.TrackingClient, tmp_path: Path
) -> None:
    fake.chaos(Chaos(error_rate=1.0))  # the first buffer keeps its event
    async with buffer(client, tmp_path, shutdown_timeout=0.2) as first:
        first.enqueue(view("first"))
        await first.sync()
        async with buffer(client, tmp_path, shutdown_timeout=0.2) as second:
            await second.flush(timeout=2.0)  # would time out retrying an adopted event
        assert second.stats.recovered == 0
        held = first.stats
        assert held.pending_product_views + held.in_flight == 1  # still the first's own


def test_journal_settings_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="durability"):
        vt.Journal(tmp_path, durability="disk")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="commit_interval"):
        vt.Journal(tmp_path, commit_interval=0)
    with pytest.raises(ValueError, match="max_bytes"):
        vt.Journal(tmp_path, max_bytes=10)
    with pytest.raises(TypeError, match="directory"):
        vt.Journal(3)  # type: ignore[arg-type]


_UNCLOSED = """
import asyncio, sys, voyado_tracking as vt
buffers = []

async def main(commit):
    client = vt.TrackingClient("http://127.0.0.1:9", "k")
    buffer = vt.TrackingBuffer(client, vt.FlushSettings(flush_interval=3600),
                               journal=vt.Journal(sys.argv[1], commit_interval=3600))
    await buffer.flush()  # recovery is over: nothing else wakes the writer early
    if not commit:
        buffer._journal._writer.wake = lambda: None
    for i in range(3):
        buffer.enqueue(vt.ProductView(f"p{i}", "3fa85f64-5717-4562-b3fc-2c963f66afa6"))
    if commit:
        await buffer.sync()
    buffers.append(buffer)  # kept alive, never closed, until the interpreter exits

asyncio.run(main(sys.argv[2] == "commit"))
"""


def exit_unclosed(directory: Path, commit: bool) -> str:
    """stderr of a process that exits holding 3 journaled views in a buffer never closed."""
    done = subprocess.run(
        [sys.executable, "-c", _UNCLOSED, str(directory), "commit" if commit else "no"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "never closed" in done.stderr
    assert "3 undelivered events" in done.stderr
    return done.stderr


def test_a_never_closed_buffer_says_its_committed_events_stay_in_the_journal(
    tmp_path: Path,
) -> None:
    stderr = exit_unclosed(tmp_path, commit=True)
    assert f"the journal in {tmp_path} has committed them" in stderr
    assert "they are lost" not in stderr
    assert rows(tmp_path) == 3


def test_a_never_closed_buffer_says_events_not_committed_yet_may_be_lost(
    tmp_path: Path,
) -> None:
    stderr = exit_unclosed(tmp_path, commit=False)
    assert "up to 3 not committed yet may be lost" in stderr
    assert "they are lost" not in stderr


def stepping_writer(directory: Path) -> Any:
    """The journal's writer, driven one step at a time on this thread (no thread started)."""
    from voyado_tracking._journal._writer import Writer

    writer = Writer(directory, "owner", synchronous="NORMAL", commit_interval=1.0,
                    max_bytes=10**9, post=lambda callback, *args: None,
                    on_loaded=lambda loaded, done: None, on_commit=lambda: None,
                    on_closed=lambda: None, on_superseded=lambda count: None)
    writer._open()
    return writer


def test_views_that_leave_the_buffer_before_their_commit_are_never_written(
    tmp_path: Path,
) -> None:
    writer = stepping_writer(tmp_path)
    delivered, pending = [view(f"d{i}") for i in range(5)], [view("p")]
    changes = writer._own.db.total_changes
    writer.ops.extend([*delivered, *pending, Delete(delivered)])
    writer._round()
    assert writer._own.db.total_changes - changes == 1  # one insert, no insert-then-delete
    assert rows(tmp_path) == 1
    writer.ops.append(Delete(pending))
    writer._round()
    assert rows(tmp_path) == 0
    writer._close_files()


def test_a_view_object_enqueued_twice_keeps_a_row_until_both_are_resolved(
    tmp_path: Path,
) -> None:
    writer = stepping_writer(tmp_path)
    twice = view("twice")
    writer.ops.extend([twice, view("other"), twice])
    writer._round()
    assert rows(tmp_path) == 3
    writer.ops.append(Delete([twice]))
    writer._round()
    assert rows(tmp_path) == 2
    writer.ops.append(Delete([twice]))
    writer._round()
    assert rows(tmp_path) == 1
    writer._close_files()


def test_the_writer_refuses_an_op_it_does_not_know(tmp_path: Path) -> None:
    """Ops are typed (Delete, Forget, Recovered, Want): an untyped one is a bug, said loudly."""
    writer = stepping_writer(tmp_path)
    writer.ops.append(("delete", [view("a")]))
    with pytest.raises(TypeError, match="unknown op"):
        writer._round()
    writer._close_files()


def test_no_module_of_the_journal_imports_one_that_imports_it_back() -> None:
    """Imports under TYPE_CHECKING or inside functions count too."""
    package = Path(vt.__file__).parent / "_journal"
    graph: dict[str, set[str]] = {}
    modules = {path.stem for path in package.glob("*.py")}
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text())
        graph[path.stem] = {node.module for node in ast.walk(tree)
                            if isinstance(node, ast.ImportFrom) and node.level == 1
                            and node.module in modules}

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for name in graph.get(start, ()):
            if name == target or (name not in seen and reaches(name, target, seen | {name})):
                return True
        return False

    assert len(graph) >= 5
    assert [name for name in graph if reaches(name, name, set())] == []
