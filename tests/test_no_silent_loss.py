"""No silent loss: every event that leaves a buffer undelivered is logged and counted."""

from __future__ import annotations

import functools
import logging
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import cart, fast_settings, run_then_collect, view

import voyado_tracking as vt
from voyado_tracking._eventfile import line_to_event
from voyado_tracking.testing import FakeVoyado

_COUNT = re.compile(r"(\d+) (?:more )?event\(s\)")


# The suite's fast settings, but no flush before close and two attempts per batch.
settings = functools.partial(
    fast_settings, flush_interval=3600,
    retry=vt.RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.02),
    shutdown_timeout=2.0,
)


def logged_count(caplog: pytest.LogCaptureFixture, what: str) -> int:
    """The events the warnings about *what* add up to."""
    total = 0
    for record in caplog.records:
        message = record.getMessage()
        if record.levelno >= logging.WARNING and what in message:
            match = _COUNT.search(message)
            assert match is not None, message
            total += int(match.group(1))
    return total


async def test_overflow_drops_are_logged_with_counts_that_add_up(
    fake: FakeVoyado, client: vt.TrackingClient, caplog: pytest.LogCaptureFixture
) -> None:
    fake.hold()  # a slow Voyado: nothing leaves the buffer
    buffer = vt.TrackingBuffer(client, settings(max_batch_size=10, max_pending=10))
    for i in range(40):
        buffer.enqueue(view(f"p{i}"))
    fake.release()
    await buffer.aclose()
    assert buffer.stats.dropped == 30
    assert logged_count(caplog, "buffer full") == 30


async def test_dead_letters_are_logged_with_counts_that_add_up(
    fake: FakeVoyado, client: vt.TrackingClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: six dead letters were logged as one, the rest swallowed by the rate limit."""
    bad = {f"p{i}" for i in (1, 5, 9, 12, 15, 18)}
    fake.reject_item_ids.update(bad)
    async with vt.TrackingBuffer(client, settings(max_batch_size=20)) as buffer:
        for i in range(20):
            buffer.enqueue(view(f"p{i}"))
        await buffer.flush(timeout=10)
    assert buffer.stats.dead_lettered == 6
    assert logged_count(caplog, "dead-lettered") == 6


def test_a_collected_buffer_that_was_never_closed_logs_an_error_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def forget_to_close() -> None:
        client = vt.TrackingClient("http://127.0.0.1:9", "k")
        buffer = vt.TrackingBuffer(client, settings())
        buffer.enqueue(view("p1"))
        buffer.enqueue(cart("c1", 1, "sku"))

    with pytest.warns(ResourceWarning):
        run_then_collect(forget_to_close())
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("never closed" in m and "2 undelivered events" in m for m in errors), errors


def test_a_process_exiting_with_an_unclosed_buffer_says_so_on_stderr() -> None:
    script = textwrap.dedent("""
        import asyncio, voyado_tracking as vt
        buffers = []

        async def main():
            client = vt.TrackingClient("http://127.0.0.1:9", "k")
            buffer = vt.TrackingBuffer(client, vt.FlushSettings(flush_interval=3600))
            for i in range(3):
                buffer.enqueue(vt.ProductView(f"p{i}", "3fa85f64-5717-4562-b3fc-2c963f66afa6"))
            buffers.append(buffer)  # kept alive until the interpreter exits

        asyncio.run(main())
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "never closed" in done.stderr
    assert "3 undelivered events" in done.stderr


async def test_closing_the_client_first_says_so_and_spools(
    fake: FakeVoyado, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool.jsonl"
    client = vt.TrackingClient(fake.url, fake.api_key)
    buffer = vt.TrackingBuffer(client, settings(), spool_path=spool)
    buffer.enqueue(view("p1"))
    await client.aclose()
    await buffer.aclose()
    assert buffer.stats.spooled == 1
    assert [line_to_event(line) for line in spool.read_bytes().splitlines()] == [view("p1")]
    assert "TrackingClient was closed before the TrackingBuffer" in caplog.text


async def test_a_buffer_on_a_closed_client_gives_up_at_once_instead_of_retrying(
    fake: FakeVoyado,
) -> None:
    client = vt.TrackingClient(fake.url, fake.api_key)
    await client.aclose()
    dead: list[tuple[Any, vt.VoyadoError]] = []
    default_retry = vt.FlushSettings().retry  # up to 600 s of retries
    async with vt.TrackingBuffer(
        client, settings(retry=default_retry), on_dead_letter=lambda e, err: dead.append((e, err))
    ) as buffer:
        buffer.enqueue(view("p1"))
        started = time.monotonic()
        await buffer.flush(timeout=3)
    assert time.monotonic() - started < 2
    assert buffer.stats.dead_lettered == 1
    assert buffer.stats.retries == 0
    assert "closed" in str(dead[0][1])


async def test_a_buffer_on_a_closed_client_spools_when_it_has_a_spool(
    fake: FakeVoyado, tmp_path: Path
) -> None:
    client = vt.TrackingClient(fake.url, fake.api_key)
    await client.aclose()
    spool = tmp_path / "spool.jsonl"
    async with vt.TrackingBuffer(client, settings(), spool_path=spool) as buffer:
        buffer.enqueue(view("p1"))
        await buffer.flush(timeout=3)
    assert (buffer.stats.spooled, buffer.stats.dead_lettered) == (1, 0)
    assert len(spool.read_bytes().splitlines()) == 1


async def test_flush_timeout_says_what_is_still_pending(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    fake.hold()
    buffer = vt.TrackingBuffer(client, settings())
    buffer.enqueue(view("p1"))
    buffer.enqueue(cart("c1", 1, "sku"))
    with pytest.raises(TimeoutError, match=r"did not finish in 0.1 s: .*events in flight"):
        await buffer.flush(timeout=0.1)
    fake.release()
    await buffer.aclose()


async def test_put_timeout_says_how_full_the_buffer_is(
    fake: FakeVoyado, client: vt.TrackingClient
) -> None:
    fake.hold()
    buffer = vt.TrackingBuffer(client, settings(max_batch_size=1, max_pending=1))
    buffer.enqueue(view("p1"))
    with pytest.raises(vt.BufferFullError, match="max_pending=1"):
        await buffer.put(view("p2"), timeout=0.05)
    fake.release()
    await buffer.aclose()


async def test_api_errors_name_the_full_url_but_never_the_key(fake: FakeVoyado) -> None:
    fake.script(404)
    async with vt.TrackingClient(fake.url, fake.api_key,
                                 retry=vt.RetryPolicy(max_attempts=1)) as client:
        with pytest.raises(vt.ApiError) as info:
            await client.register_product_view(view("p1"))
    assert f"{fake.url}/api/v2/tracking/productview" in str(info.value)
    assert fake.api_key not in str(info.value)
