"""Fork: a Tracker built (and used) before fork starts afresh in the child; a TrackingBuffer
used in a forked child fails at once with ForkedProcessError. Real processes."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import sys
import warnings
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from conftest import fast_settings, view, wait_for

import voyado_tracking as vt
from voyado_tracking.testing import FakeVoyado

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def in_child(body: Callable[[], int]) -> int:
    """Run *body* in a forked child; its return value is the child's exit code."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads
        pid = os.fork()
    if pid == 0:
        code = 3
        try:
            code = body()
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_tracker_used_before_fork_delivers_from_the_child(threaded_fake: FakeVoyado) -> None:
    """The child's events arrive, through its own thread; the parent's arrive once."""
    tracker = vt.Tracker(threaded_fake.url, threaded_fake.api_key,
                         settings=fast_settings(flush_interval=3600))
    for i in range(5):
        tracker.enqueue(view(f"parent-{i}"))  # pending in the parent at the fork

    def child() -> int:
        for i in range(7):
            tracker.enqueue(view(f"child-{i}"))
        tracker.flush(10)
        tracker.close()
        return 0

    assert in_child(child) == 0
    tracker.close()
    items = sorted(v.item_id for v in threaded_fake.product_views)
    assert items == sorted([f"parent-{i}" for i in range(5)] + [f"child-{i}" for i in range(7)])


def _pool_task(arguments: tuple[vt.Tracker, int]) -> int:
    tracker, number = arguments
    tracker.enqueue(view(f"task-{number}"))
    return number


def test_multiprocessing_children_deliver_when_the_pool_is_closed(
    threaded_fake: FakeVoyado,
) -> None:
    """Built at import time in the parent, used in fork-pool workers that never close it:
    their exit hook delivers (``close(); join()``)."""
    tracker = vt.Tracker(threaded_fake.url, threaded_fake.api_key,
                         settings=fast_settings(flush_interval=3600))
    tracker.enqueue(view("parent"))
    process = multiprocessing.get_context("fork").Process(
        target=lambda: [tracker.enqueue(view(f"task-{n}")) for n in range(20)]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        process.start()
    process.join(30)
    assert process.exitcode == 0
    wait_for(lambda: len(threaded_fake.product_views) >= 20)
    tracker.close()
    assert sorted(v.item_id for v in threaded_fake.product_views) == sorted(
        ["parent"] + [f"task-{n}" for n in range(20)])


def _first_step(coroutine: Coroutine[Any, Any, Any]) -> BaseException | None:
    """What *coroutine* raises before it first waits (None if it waits or returns)."""
    try:
        coroutine.send(None)
    except StopIteration:
        return None
    except BaseException as error:
        return error
    coroutine.close()
    return None


async def test_a_forked_buffer_fails_through_every_entry_point(
    fake: FakeVoyado, tmp_path: Path
) -> None:
    """Each entry point raises ForkedProcessError (enqueue_threadsafe: a failed future), and
    the failure is logged once."""
    client = vt.TrackingClient(fake.url, fake.api_key)
    buffer = vt.TrackingBuffer(client, fast_settings(), journal=vt.Journal(tmp_path / "j"))
    buffer.enqueue(view("p1"))

    def child() -> int:
        records: list[logging.LogRecord] = []
        handler = logging.Handler()
        handler.emit = records.append  # type: ignore[method-assign]
        logging.getLogger("voyado_tracking").addHandler(handler)
        failures = []
        try:
            buffer.enqueue(view("p2"))
        except vt.ForkedProcessError as error:
            failures.append(error)
        future = buffer.enqueue_threadsafe(view("p3"))
        failures.append(future.exception(timeout=1))  # type: ignore[arg-type]
        for coroutine in (buffer.put(view("p4")), buffer.flush(), buffer.sync(),
                          buffer.aclose(), buffer.__aenter__()):
            failures.append(_first_step(coroutine))  # type: ignore[arg-type]
        ok = all(isinstance(f, vt.ForkedProcessError) and isinstance(f, RuntimeError)
                 and "forked child" in str(f) for f in failures)
        logged = [r for r in records if r.levelno >= logging.WARNING]
        print(len(failures), [type(f).__name__ for f in failures], len(logged), file=sys.stderr)
        return 0 if ok and len(failures) == 7 and len(logged) == 1 else 1

    assert in_child(child) == 0
    await buffer.aclose()
    await client.aclose()


async def test_a_client_used_after_its_loop_closed_says_so(fake: FakeVoyado) -> None:
    client = vt.TrackingClient(fake.url, fake.api_key)

    def in_a_new_loop() -> None:
        asyncio.run(client.register_product_view(view("p1")))

    await asyncio.to_thread(in_a_new_loop)
    with pytest.raises(vt.ClientClosedError, match="its event loop is closed; create the "
                       "TrackingClient inside the loop that uses it"):
        await asyncio.to_thread(in_a_new_loop)


def test_journal_keeps_what_sync_returned_for_across_kill_9(
    threaded_fake: FakeVoyado, tmp_path: Path
) -> None:
    """A child that synced and was SIGKILLed loses nothing: a new tracker delivers it all."""
    journal = vt.Journal(tmp_path / "journal")
    tracker = vt.Tracker(threaded_fake.url, threaded_fake.api_key, journal=journal,
                         settings=fast_settings())
    threaded_fake.latency = 60.0  # nothing gets through before the kill
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        try:
            for i in range(200):
                tracker.enqueue(view(f"p{i}"))
            tracker.sync(30)
            os.write(write, b"synced")
            signal.pause()
        finally:
            os._exit(1)
    os.close(write)
    assert os.read(read, 6) == b"synced"
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(read)
    tracker.close(timeout=0.5)
    threaded_fake.latency = 0.0
    with vt.Tracker(threaded_fake.url, threaded_fake.api_key, journal=journal,
                    settings=fast_settings()) as recovering:
        recovering.flush(30)
    assert {v.item_id for v in threaded_fake.product_views} == {f"p{i}" for i in range(200)}


def test_a_forked_child_closes_the_journal_lock_without_unlocking_it(
    threaded_fake: FakeVoyado, tmp_path: Path
) -> None:
    """flock belongs to the open file both processes share: the child closes its copy, and
    the parent still owns its journal file, during and after the child."""
    import fcntl

    journal = vt.Journal(tmp_path / "journal")
    tracker = vt.Tracker(threaded_fake.url, threaded_fake.api_key, journal=journal,
                         settings=fast_settings())
    tracker.enqueue(view("p1"))
    tracker.sync(10)
    (lock,) = (tmp_path / "journal").glob("*.lock")

    def lock_is_free() -> bool:
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        return True

    def child() -> int:
        from voyado_tracking._journal import _db

        return 0 if not _db._held_locks and not lock_is_free() else 1

    assert in_child(child) == 0
    assert not lock_is_free()
    tracker.close()


def test_children_forked_while_the_parent_delivers_start_their_own(
    threaded_fake: FakeVoyado, tmp_path: Path
) -> None:
    """Forks land while the parent's loop and journal writer are busy; each child starts its
    own thread and journal file and delivers its events."""
    import threading

    tracker = vt.Tracker(threaded_fake.url, threaded_fake.api_key,
                         journal=vt.Journal(tmp_path / "journal"), settings=fast_settings())
    stop = threading.Event()

    def produce() -> None:
        n = 0
        while not stop.is_set():
            tracker.enqueue(view(f"parent-{n}"))
            n += 1

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        for round_ in range(4):
            def child(round_: int = round_) -> int:
                for i in range(10):
                    tracker.enqueue(view(f"child{round_}-{i}"))
                tracker.sync(20)
                tracker.flush(20)
                tracker.close()
                return 0

            assert in_child(child) == 0
    finally:
        stop.set()
        producer.join()
    tracker.close()
    items = {v.item_id for v in threaded_fake.product_views}
    assert {f"child{r}-{i}" for r in range(4) for i in range(10)} <= items


@pytest.mark.fleet
def test_fleet_mode_writes_to_the_stream_and_sends_through_the_shared_limiter(
    threaded_fake: FakeVoyado, redis_url: str
) -> None:
    import redis

    with vt.Tracker(threaded_fake.url, threaded_fake.api_key, redis_url=redis_url,
                    settings=fast_settings()) as tracker:
        for i in range(30):
            tracker.enqueue(view(f"p{i}"))
        tracker.sync(10)  # in fleet mode: written to Redis
        stats = tracker.stats
        assert stats.sent == 30
        tracker.send(view("direct"))
    assert [v.item_id for v in threaded_fake.product_views] == ["direct"]
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.xlen("voyado-tracking") == 30
        assert client.keys("voyado-tracking:rate:*")  # the send took a shared slot
    finally:
        client.close()
