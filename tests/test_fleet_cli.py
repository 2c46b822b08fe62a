"""``voyado-tracking forward``: runs until SIGTERM, then stops cleanly; --replay-dead."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest
import redis.asyncio as aioredis
from conftest import eventually, view

import voyado_tracking as vt
from voyado_tracking.redis import dead_stream
from voyado_tracking.redis._stream import encode_entry
from voyado_tracking.testing import FakeVoyado

pytestmark = pytest.mark.fleet


async def test_forward_delivers_until_sigterm_and_exits_cleanly(
    fake: FakeVoyado, redis_url: str
) -> None:
    env = {**os.environ, "VOYADO_BASE_URL": fake.url, "VOYADO_API_KEY": fake.api_key}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voyado_tracking", "forward", "--redis", redis_url,
        "--flush-interval", "0.05", "--stats-interval", "0.2",
        env=env, stderr=asyncio.subprocess.PIPE,
    )
    async with vt.RedisOutbox(redis_url) as outbox:
        for n in range(30):
            outbox.enqueue(view(f"sku-{n}"))
    await eventually(lambda: len(fake.product_views) == 30, timeout=30)
    proc.send_signal(signal.SIGTERM)
    _, stderr = await proc.communicate()
    assert proc.returncode == 0
    assert b"stats sent=30" in stderr
    assert fake.api_key.encode() not in stderr


async def test_replay_dead_moves_dead_entries_back_to_the_stream(redis_url: str) -> None:
    async with aioredis.from_url(redis_url) as r:
        await r.xadd(dead_stream("voyado-tracking"),
                     {**encode_entry(view("sku-1")), b"error": b"400 bad"})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voyado_tracking", "forward", "--redis", redis_url,
            "--replay-dead", stderr=asyncio.subprocess.PIPE,
        )
        await proc.communicate()
        assert proc.returncode == 0
        assert await r.xlen(dead_stream("voyado-tracking")) == 0
        (entry,) = await r.xrange("voyado-tracking")
        assert entry[1] == encode_entry(view("sku-1"))
