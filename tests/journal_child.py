"""A shop process for the kill tests: journals events against a failing Voyado, then waits.

    python journal_child.py URL API_KEY DIRECTORY {sync|nosync}

Prints ``SYNCED`` once ``sync()`` returned (mode ``sync``) or ``ENQUEUED`` (mode ``nosync``),
then sleeps until it is killed. :func:`events` is imported by the tests for the expectation.
"""

from __future__ import annotations

import asyncio
import random
import sys
from datetime import datetime, timedelta, timezone

import voyado_tracking as vt

CONTACT = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
BASE = datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)


def events() -> list[vt.Cart | vt.ProductView]:
    """300 views and 40 carts of 5 updates each, interleaved, with some updates out of order."""
    rng = random.Random(7)
    out: list[vt.Cart | vt.ProductView] = [
        vt.ProductView(f"SKU-{i:04d}", CONTACT, time=BASE + timedelta(seconds=i))
        for i in range(300)
    ]
    for ref in range(40):
        for update in rng.sample(range(5), 5):  # arrival order is not time order
            out.append(vt.Cart(f"cart-{ref:02d}", CONTACT, [vt.CartItem(f"SKU-{update}", 1)],
                               time=BASE + timedelta(minutes=update)))
    rng.shuffle(out)
    return out


async def main(url: str, key: str, directory: str, mode: str) -> None:
    retry = vt.RetryPolicy(max_attempts=None, initial_backoff=0.05, max_backoff=0.2,
                           max_elapsed=600.0)
    async with vt.TrackingClient(url, key, max_requests_per_second=None) as client:
        buffer = vt.TrackingBuffer(
            client, vt.FlushSettings(flush_interval=0.05, retry=retry),
            journal=vt.Journal(directory, commit_interval=0.02),
        )
        async with buffer:
            for event in events():
                buffer.enqueue(event)
            if mode == "sync":
                await buffer.sync()
                print("SYNCED", flush=True)
            else:
                print("ENQUEUED", flush=True)
            await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
