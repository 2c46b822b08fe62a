"""RedisOutbox with Redis down: the close takes at most its shutdown_timeout, and the loss log
counts what stats count (a retried event is not counted once per attempt)."""

from __future__ import annotations

import logging
import re
import time

import pytest
from conftest import view

import voyado_tracking as vt
from voyado_tracking.testing._redis import free_port

pytestmark = pytest.mark.fleet


def down_url() -> str:
    return f"redis://127.0.0.1:{free_port()}"  # nothing listens there


async def test_close_with_redis_down_takes_at_most_its_shutdown_timeout() -> None:
    outbox = vt.RedisOutbox(down_url(), shutdown_timeout=1.0)
    async with outbox:
        outbox.enqueue(view("sku-1"))
        started = time.monotonic()
    # An upper bound far under the old hard-coded 30 s, with room for a loaded machine.
    assert time.monotonic() - started < 10.0
    assert outbox.stats.dropped == 1


async def test_loss_log_counts_equal_stats_for_one_lost_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="voyado_tracking")
    outbox = vt.RedisOutbox(down_url(), shutdown_timeout=2.0)
    async with outbox:
        outbox.enqueue(view("sku-1"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    dropped = [int(m.group(1)) for line in warnings if (m := re.search(r"dropped (\d+)", line))]
    assert sum(dropped) == outbox.stats.dropped == 1
    assert not [line for line in warnings if "more event" in line]  # retries are not losses
