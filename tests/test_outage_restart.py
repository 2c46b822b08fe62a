"""Outage and restart: Voyado is down for a buffer's whole life; the spool carries everything
over, and ``voyado-tracking send`` delivers it once Voyado is back."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from pathlib import Path

from conftest import CONTACT, free_port

import voyado_tracking as vt
from voyado_tracking._eventfile import line_to_event
from voyado_tracking.testing import FakeVoyado

SECRET = "outage-secret-key-abcdef"


async def test_outage_spools_everything_and_send_replays_it_after_restart(
    tmp_path: Path,
) -> None:
    rng = random.Random(5)
    port = free_port()
    spool = tmp_path / "spool.jsonl"
    views = [vt.ProductView(f"sku-{i}", CONTACT, session_id=f"s{i}") for i in range(2_000)]
    carts = [
        vt.Cart(f"cart-{rng.randrange(200)}", CONTACT, [vt.CartItem(f"sku-{i}", 1)],
                time=f"2024-05-01T{rng.randrange(24):02d}:{rng.randrange(60):02d}:{i % 60:02d}Z")
        for i in range(1_000)
    ]
    latest: dict[str, vt.Cart] = {}
    for c in carts:
        if c.cart_reference not in latest or c.time >= latest[c.cart_reference].time:
            latest[c.cart_reference] = c

    # Voyado is down: every request is refused.
    async with vt.TrackingClient(f"http://127.0.0.1:{port}", SECRET,
                                 max_requests_per_second=None) as client:
        buffer = vt.TrackingBuffer(
            client,
            vt.FlushSettings(flush_interval=0.05, retry=vt.RetryPolicy(
                max_attempts=None, initial_backoff=0.01, max_backoff=0.1, max_elapsed=600)),
            spool_path=spool,
        )
        for event in [*views, *carts]:
            buffer.enqueue(event)
        await asyncio.sleep(0.2)  # let it fail and retry a few times
        started = time.monotonic()
        await buffer.aclose(timeout=1.0)
        closing_took = time.monotonic() - started
    stats = buffer.stats
    assert closing_took < 3.0
    assert stats.spooled == len(views) + len(latest)
    assert stats.dropped == stats.dead_lettered == stats.sent == 0
    assert SECRET.encode() not in spool.read_bytes()
    assert len([line_to_event(line) for line in spool.read_bytes().splitlines()]) == stats.spooled

    # Voyado is back, on the same address: replay the spool with the CLI.
    async with FakeVoyado(api_key=SECRET, port=port) as fake:
        env = {**os.environ, "VOYADO_BASE_URL": fake.url, "VOYADO_API_KEY": SECRET}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voyado_tracking", "send", str(spool),
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode == 0, err.decode()
        assert fake.carts == latest
        assert sorted(fake.product_views, key=lambda v: v.session_id or "") == sorted(
            views, key=lambda v: v.session_id or ""
        )
    assert SECRET not in out.decode() + err.decode()
