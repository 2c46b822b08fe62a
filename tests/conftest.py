"""Shared fixtures of the test suite."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from voyado_tracking.testing import FakeVoyado


@pytest.fixture
async def fake() -> AsyncIterator[FakeVoyado]:
    """A started FakeVoyado on 127.0.0.1 with the default test key."""
    async with FakeVoyado() as server:
        yield server
