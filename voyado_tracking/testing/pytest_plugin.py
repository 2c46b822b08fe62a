"""pytest plugin: fixtures that run your code against a loopback FakeVoyado.

Installed with the package (entry point ``pytest11``), so the fixtures are available in any
test suite that has voyado-tracking and pytest-asyncio installed:

``voyado_fake``
    a started :class:`~voyado_tracking.testing.FakeVoyado` on 127.0.0.1 (random port),
    closed after the test. Inspect ``fake.carts``, ``fake.product_views``, ``fake.requests``,
    and ``fake.engage.mails(now=...)`` for the mails Engage would send; inject faults with
    ``fake.script(...)`` / ``fake.chaos(...)``. Its keyword arguments come from the
    ``voyado_fake_options`` fixture (a dict, empty by default: override it in your
    ``conftest.py``, e.g. ``{"product_feeds": {"sv-SE": {"SKU-1"}}}``).
``voyado_client``
    a :class:`~voyado_tracking.TrackingClient` pointed at ``voyado_fake``, with short retry
    backoffs and no client-side rate limit (tests should not wait), closed after the test.
``voyado_buffer``
    a :class:`~voyado_tracking.TrackingBuffer` over ``voyado_client`` flushing every 50 ms,
    closed (drained) after the test. Its settings come from the ``voyado_flush_settings``
    fixture: override that fixture in your ``conftest.py`` to tune the buffer.

The fixtures are async (``pytest_asyncio.fixture``), so they work in pytest-asyncio's strict
and auto modes. Without pytest-asyncio the fixtures still exist, but fail with a message that
says what to install. Importing this plugin is cheap: the library is imported by the fixtures,
not when pytest starts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .. import FlushSettings, TrackingBuffer, TrackingClient
    from ._fake import FakeVoyado


_SHUTDOWN_TIMEOUT = 5.0


@pytest.fixture
def voyado_flush_settings() -> FlushSettings:
    """The FlushSettings of ``voyado_buffer``: quick flushes and retries, made for tests."""
    from .. import FlushSettings, RetryPolicy

    return FlushSettings(
        flush_interval=0.05,
        retry=RetryPolicy(max_attempts=None, initial_backoff=0.01, max_backoff=0.1,
                          max_elapsed=10.0),
        shutdown_timeout=_SHUTDOWN_TIMEOUT,
    )


@pytest.fixture
def voyado_fake_options() -> dict[str, Any]:
    """Keyword arguments of ``voyado_fake``'s FakeVoyado (``product_feeds``,
    ``abandon_after``, ``clock``, ``rate_limit``, ...)."""
    return {}


try:
    import pytest_asyncio
except ImportError:  # the fixtures need an async test runner; say so when one is used

    def _needs_pytest_asyncio(name: str) -> Any:
        @pytest.fixture(name=name)
        def fixture() -> None:
            pytest.fail(
                f"the {name} fixture of voyado_tracking needs pytest-asyncio "
                "(pip install pytest-asyncio)",
                pytrace=False,
            )

        return fixture

    _missing_fake = _needs_pytest_asyncio("voyado_fake")
    _missing_client = _needs_pytest_asyncio("voyado_client")
    _missing_buffer = _needs_pytest_asyncio("voyado_buffer")

else:

    @pytest_asyncio.fixture
    async def voyado_fake(voyado_fake_options: dict[str, Any]) -> AsyncIterator[FakeVoyado]:
        """A started FakeVoyado on 127.0.0.1, closed after the test."""
        from ._fake import FakeVoyado

        async with FakeVoyado(**voyado_fake_options) as fake:
            yield fake

    @pytest_asyncio.fixture
    async def voyado_client(voyado_fake: FakeVoyado) -> AsyncIterator[TrackingClient]:
        """A TrackingClient pointed at ``voyado_fake``."""
        from .. import RetryPolicy, TrackingClient

        client = TrackingClient(
            voyado_fake.url,
            voyado_fake.api_key,
            user_agent="voyado-tracking-tests/1.0",
            timeout=5.0,
            retry=RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.1),
            max_requests_per_second=None,
        )
        async with client:
            yield client

    @pytest_asyncio.fixture
    async def voyado_buffer(
        voyado_client: TrackingClient, voyado_flush_settings: FlushSettings
    ) -> AsyncIterator[TrackingBuffer]:
        """A TrackingBuffer over ``voyado_client``, drained and closed after the test."""
        from .. import TrackingBuffer

        buffer = TrackingBuffer(voyado_client, voyado_flush_settings)
        try:
            yield buffer
        finally:
            await buffer.aclose()
