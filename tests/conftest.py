"""Shared fixtures and helpers of the test suite (``from conftest import view, cart, ...``)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import voyado_tracking as vt
from voyado_tracking.testing import FakeVoyado

CONTACT = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
AT = "2024-05-01T10:00:00Z"


def view(item: str, **fields: Any) -> vt.ProductView:
    """A product view at a fixed instant (so equal views compare equal)."""
    fields.setdefault("time", AT)
    return vt.ProductView(item, CONTACT, **fields)


def cart(ref: str, second: int = 0, *skus: str) -> vt.Cart:
    """A cart update at second *second* of a fixed minute, one of each SKU."""
    return vt.Cart(ref, CONTACT, [vt.CartItem(s, 1) for s in skus],
                   time=f"2024-05-01T10:00:{second:02d}Z")


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (polling) until *condition* holds; fail after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def free_port() -> int:
    """A loopback port nothing listens on (for a server started later, or a refused call)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def fake() -> AsyncIterator[FakeVoyado]:
    """A started FakeVoyado on 127.0.0.1 with the default test key."""
    async with FakeVoyado() as server:
        yield server


@pytest.fixture
async def client(fake: FakeVoyado) -> AsyncIterator[vt.TrackingClient]:
    """A client of *fake* without a rate limit and with quick retries."""
    async with vt.TrackingClient(fake.url, fake.api_key, max_requests_per_second=None,
                                 retry=vt.RetryPolicy(initial_backoff=0.01)) as c:
        yield c


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL where connections are refused."""
    return f"http://127.0.0.1:{free_port()}"
