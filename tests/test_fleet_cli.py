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


async def test_forward_sends_the_user_agent_of_voyado_user_agent(
    fake: FakeVoyado, redis_url: str
) -> None:
    env = {**os.environ, "VOYADO_BASE_URL": fake.url, "VOYADO_API_KEY": fake.api_key,
           "VOYADO_USER_AGENT": "ShopFleet/2.1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voyado_tracking", "forward", "--redis", redis_url,
        "--flush-interval", "0.05", env=env, stderr=asyncio.subprocess.PIPE,
    )
    async with vt.RedisOutbox(redis_url) as outbox:
        outbox.enqueue(view("sku-1"))
    await eventually(lambda: len(fake.product_views) == 1, timeout=30)
    proc.send_signal(signal.SIGTERM)
    await proc.communicate()
    assert proc.returncode == 0
    assert {r.user_agent for r in fake.requests} == {"ShopFleet/2.1"}


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


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [("--rate", "fast", "not a number per second"), ("--rate", "0", "must be > 0"),
     ("--claim-idle", "-1", "must be > 0"), ("--flush-interval", "soon", "not a number"),
     ("--stats-interval", "nan", "must be > 0")],
)
async def test_forward_rejects_a_bad_number_as_a_usage_error(
    flag: str, value: str, message: str
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voyado_tracking", "forward", "--redis", "redis://127.0.0.1:1/0",
        flag, value, stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await proc.communicate()
    assert proc.returncode == 2
    assert f"argument {flag}: {message}" in stderr.decode()


# -- demo --fleet ----------------------------------------------------------------------------


async def run_demo(*args: str, python: tuple[str, ...] = ("-m", "voyado_tracking")
                   ) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *python, "demo", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_fleet_demo_delivers_through_workers_and_forwarders_and_its_checks_hold(
    redis_url: str,
) -> None:
    code, out, _ = await run_demo(
        "--fleet", "--redis", redis_url, "--workers", "2", "--shoppers", "10",
        "--events", "300", "--duration", "1", "--progress", "none",
    )
    assert code == 0, out
    checks = [line for line in out.splitlines() if line.startswith("CHECK")]
    assert len(checks) == 5  # delivery (3), no checked-out cart mails, the shared rate
    assert all(line.startswith("CHECK OK") for line in checks)
    assert any("no checked-out cart would mail" in line for line in checks)
    assert "busiest one-second window at Voyado" in checks[-1]
    assert "RESULT: OK" in out
    async with aioredis.from_url(redis_url) as r:
        assert await r.keys("voyado-tracking-demo-*") == []  # its stream is removed


async def test_fleet_demo_without_redis_is_a_usage_error() -> None:
    code, _, err = await run_demo("--fleet")
    assert code == 2
    assert "demo --fleet needs --redis URL" in err


async def test_fleet_demo_without_the_redis_extra_names_what_to_install() -> None:
    block_redis = ("-c", "import sys; sys.modules['redis'] = None; "
                   "from voyado_tracking.cli import main; sys.exit(main())")
    code, _, err = await run_demo("--fleet", "--redis", "redis://127.0.0.1:1/0",
                                  python=block_redis)
    assert code == 2
    assert "pip install 'voyado-tracking[redis]'" in err


async def _forward(fake: FakeVoyado, redis_url: str, *flags: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "VOYADO_BASE_URL": fake.url, "VOYADO_API_KEY": fake.api_key}
    env.pop("VOYADO_USER_AGENT", None)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voyado_tracking", "forward", "--redis", redis_url,
        "--flush-interval", "0.05", *flags, env=env, stderr=asyncio.subprocess.PIPE,
    )


async def test_forward_sends_the_user_agent_of_its_flag(fake: FakeVoyado, redis_url: str) -> None:
    proc = await _forward(fake, redis_url, "--user-agent", "ShopFleet/3.0")
    async with vt.RedisOutbox(redis_url) as outbox:
        outbox.enqueue(view("sku-1"))
    await eventually(lambda: len(fake.product_views) == 1, timeout=30)
    proc.send_signal(signal.SIGTERM)
    await proc.communicate()
    assert proc.returncode == 0
    assert {r.user_agent for r in fake.requests} == {"ShopFleet/3.0"}


async def test_forward_max_batch_size_bounds_every_request(
    fake: FakeVoyado, redis_url: str
) -> None:
    async with vt.RedisOutbox(redis_url) as outbox:  # a backlog before it starts
        for n in range(50):
            outbox.enqueue(view(f"sku-{n}"))
    proc = await _forward(fake, redis_url, "--max-batch-size", "7")
    await eventually(lambda: len(fake.product_views) == 50, timeout=30)
    proc.send_signal(signal.SIGTERM)
    await proc.communicate()
    assert proc.returncode == 0
    assert max(r.events for r in fake.requests) == 7


async def test_a_sigtermed_forward_exits_within_its_shutdown_timeout(
    fake: FakeVoyado, redis_url: str
) -> None:
    """Voyado holds every request: the stop releases what it holds after 1 s, not 30."""
    fake.hold()
    try:
        proc = await _forward(fake, redis_url, "--shutdown-timeout", "1")
        async with vt.RedisOutbox(redis_url) as outbox:
            outbox.enqueue(view("sku-1"))
        async with aioredis.from_url(redis_url) as r:

            async def read() -> bool:
                groups = await r.xinfo_groups("voyado-tracking")
                return bool(groups) and int(groups[0]["pending"]) == 1

            await eventually(read, timeout=30)
        proc.send_signal(signal.SIGTERM)
        # Well under the 30 s default, with room for a loaded machine.
        await asyncio.wait_for(proc.communicate(), 15)
    finally:
        fake.release()
    assert proc.returncode == 0
    async with aioredis.from_url(redis_url) as r:
        assert await r.xlen("voyado-tracking") == 1  # released, not lost
