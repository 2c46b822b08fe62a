"""A shop process for the checkout kill test: journals checkouts and late updates against a
failing Voyado, syncs, prints ``SYNCED``, then waits to be killed.

    python checkout_child.py URL API_KEY DIRECTORY

:func:`events` is imported by the test for the expectation.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime, timedelta, timezone

import voyado_tracking as vt

CONTACT = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
BASE = datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)  # the checkouts' base time


def late(ref: str, seconds: float) -> vt.Cart:
    """An update of *ref* stamped *seconds* after the checkout's base time (a worker whose
    clock runs ahead, or a shopper who came back)."""
    return vt.Cart(ref, CONTACT, [vt.CartItem("SKU-LATE", 1)],
                   time=BASE + timedelta(seconds=seconds))


def events() -> list[vt.Cart]:
    """Per cart: an update with items, the checkout, and for two of them a late update that
    arrives after the checkout (4 s: within the skew, 6 s: past it)."""
    out: list[vt.Cart] = []
    for ref in ("lost-4", "new-6", "later-4"):
        out.append(vt.Cart(ref, CONTACT, [vt.CartItem("SKU-1", 1)],
                           time=BASE - timedelta(minutes=1)))
        out.append(vt.Cart.checked_out(ref, CONTACT, time=BASE))
    out += [late("lost-4", 4), late("new-6", 6)]
    return out


async def main(url: str, key: str, directory: str) -> None:
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
            await buffer.sync()
            print("SYNCED", flush=True)
            await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
