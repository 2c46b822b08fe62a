"""kill -9 of a process with a journal: a new buffer on the directory delivers what it committed.

Each test runs ``journal_child.py`` in a real child process against a FakeVoyado that fails
every request (so the child delivers nothing), kills it with SIGKILL and recovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

import voyado_tracking as vt
from voyado_tracking.testing import Chaos, FakeVoyado

sys.path.insert(0, str(Path(__file__).parent))
from journal_child import events

CHILD = Path(__file__).with_name("journal_child.py")
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and flock are POSIX")


@pytest.fixture
def failing(fake: FakeVoyado) -> FakeVoyado:
    fake.chaos(Chaos(error_rate=1.0))
    return fake


async def child(fake: FakeVoyado, directory: Path, mode: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(CHILD), fake.url, fake.api_key, str(directory), mode,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    assert line.strip() in (b"SYNCED", b"ENQUEUED"), line
    return process


async def kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGKILL)
    await process.wait()


async def recover(fake: FakeVoyado, directory: Path) -> vt.BufferStats:
    fake.reset()  # no more faults, nothing received so far
    async with vt.TrackingClient(
        fake.url, fake.api_key, max_requests_per_second=None
    ) as client, vt.TrackingBuffer(
        client, vt.FlushSettings(flush_interval=0.05), journal=vt.Journal(directory)
    ) as buffer:
        await buffer.flush()
    return buffer.stats


def assert_everything_delivered(fake: FakeVoyado) -> None:
    expected = events()
    views = {e.item_id for e in expected if isinstance(e, vt.ProductView)}
    assert {v.item_id for v in fake.product_views} == views  # each at least once
    latest: dict[str, vt.Cart] = {}
    for e in expected:
        if isinstance(e, vt.Cart) and (
            e.cart_reference not in latest or e.time >= latest[e.cart_reference].time
        ):
            latest[e.cart_reference] = e
    assert fake.carts == latest


def journal_rows(directory: Path) -> int:
    total = 0
    for path in directory.glob("journal-*.sqlite3"):
        # suppress: the child may not have created the schema yet
        with contextlib.closing(sqlite3.connect(path)) as db, contextlib.suppress(
            sqlite3.OperationalError
        ):
            total += db.execute("SELECT (SELECT count(*) FROM views) + "
                                "(SELECT count(*) FROM carts)").fetchone()[0]
    return total


async def test_killed_after_sync_a_new_buffer_delivers_every_event(
    failing: FakeVoyado, tmp_path: Path
) -> None:
    process = await child(failing, tmp_path, "sync")
    await kill(process)
    stats = await recover(failing, tmp_path)
    assert_everything_delivered(failing)
    assert stats.recovered == 340  # 300 views and 40 carts (their updates collapsed)


async def test_killed_without_sync_what_was_committed_is_delivered(
    failing: FakeVoyado, tmp_path: Path
) -> None:
    process = await child(failing, tmp_path, "nosync")
    try:
        for _ in range(3000):  # group commits run on their own, commit_interval apart
            if journal_rows(tmp_path) == 340:
                break
            await asyncio.sleep(0.01)
    finally:
        await kill(process)
    assert journal_rows(tmp_path) == 340
    await recover(failing, tmp_path)
    assert_everything_delivered(failing)


async def test_the_journal_of_a_live_process_is_not_adopted(
    failing: FakeVoyado, tmp_path: Path
) -> None:
    process = await child(failing, tmp_path, "sync")
    try:  # Voyado keeps failing: an adopted event would make flush() time out retrying it
        async with vt.TrackingClient(failing.url, failing.api_key) as client, vt.TrackingBuffer(
            client, vt.FlushSettings(shutdown_timeout=0.2), journal=vt.Journal(tmp_path)
        ) as buffer:
            await buffer.flush(timeout=5.0)
        assert buffer.stats.recovered == 0
        assert journal_rows(tmp_path) == 340
    finally:
        await kill(process)
