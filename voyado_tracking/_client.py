"""TrackingClient: awaited calls to Voyado's four tracking endpoints (and the contact lookup)
over one pooled session.

The client owns a :class:`~voyado_tracking._transport.Transport` (session, headers, the 429
pause and the token bucket, one POST) and wraps it in the retry loop of its
:class:`RetryPolicy`. Buffers send through the same transport (``client.transport``), once
per attempt, with their own retry budget: everything that uses one client shares one pause
and one request rate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from typing import TypeVar

import aiohttp

from ._contacts import find_contact_id, lookup_params
from ._errors import VoyadoError
from ._lifecycle import AsyncClosing
from ._models import Cart, ProductView
from ._retry import RetryPolicy
from ._transport import (
    DEFAULT_USER_AGENT,
    LocalRateLimiter,
    RateLimiter,
    Transport,
    check_api_key,
    check_base_url,
    check_user_agent,
    fingerprint,
)
from ._validators import check_int_at_least, check_positive
from ._wire import CARTS, CARTS_BATCH, PRODUCT_VIEW, PRODUCT_VIEWS, dumps, dumps_one

__all__ = ["TrackingClient"]

log = logging.getLogger("voyado_tracking")

_T = TypeVar("_T")


def _chunks(items: Sequence[_T], size: int) -> Iterable[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class TrackingClient(AsyncClosing):
    """An async client for Voyado Engage's cart and product-view tracking endpoints.

    Create one per process (it pools connections) and close it with ``await aclose()`` or
    ``async with``. A ``session`` you pass in is borrowed: it is used but never closed.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        user_agent: str | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        max_requests_per_second: float | None = 40.0,
        max_batch_size: int = 500,
        verify_tls: bool = True,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self._base_url = check_base_url(base_url)
        self.user_agent = check_user_agent(
            DEFAULT_USER_AGENT if user_agent is None else user_agent
        )
        if max_requests_per_second is not None:
            max_requests_per_second = check_positive(
                "max_requests_per_second", max_requests_per_second
            )
        self.max_requests_per_second = max_requests_per_second
        self.max_batch_size = check_int_at_least("max_batch_size", max_batch_size, 1)
        if retry is None:
            retry = RetryPolicy()
        elif not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
        self.retry = retry
        api_key = check_api_key(api_key)
        self._transport = Transport(
            self._base_url,
            api_key,
            self.user_agent,
            session=session,
            timeout=timeout,
            limiter=self._limiter(rate_limiter, max_requests_per_second, api_key),
            verify_tls=bool(verify_tls),
        )
        self.timeout = self._transport.timeout

    def _limiter(
        self, limiter: RateLimiter | None, rate: float | None, api_key: str
    ) -> RateLimiter:
        """The client's own token bucket, or a shared limiter told whose budget it keeps."""
        if limiter is None:
            return LocalRateLimiter(rate)
        if not (hasattr(limiter, "acquire") and hasattr(limiter, "pause")):
            raise TypeError(
                f"rate_limiter must have acquire() and pause(), got {type(limiter).__name__}"
            )
        bind = getattr(limiter, "bind", None)
        if callable(bind):
            bind(fingerprint(str(self._base_url), api_key))
        return limiter

    @property
    def base_url(self) -> str:
        return str(self._base_url)

    @property
    def transport(self) -> Transport:
        """The single-attempt path (``await transport.post(path, body)``) buffers send through."""
        return self._transport

    def __repr__(self) -> str:
        return f"voyado_tracking.TrackingClient(base_url={self.base_url!r}, api_key='***')"

    # -- lifecycle ----------------------------------------------------------------------------


    async def aclose(self) -> None:
        """Close the connection pool (a borrowed session is left open). Idempotent."""
        await self._transport.aclose()

    @property
    def closed(self) -> bool:
        return self._transport.closed

    # -- the four endpoints ------------------------------------------------------------------

    async def register_cart(self, cart: Cart) -> None:
        """Send one cart update (``POST /api/v2/tracking/carts``)."""
        if not isinstance(cart, Cart):
            raise TypeError(f"register_cart() takes a Cart, got {type(cart).__name__}")
        await self._post(CARTS, dumps_one(cart))

    async def register_carts(self, carts: Iterable[Cart]) -> None:
        """Send cart updates in batches of ``max_batch_size`` (``.../carts/batch``).

        Batches go in order; if one fails, the error is raised and later batches are not sent.
        """
        await self._post_batches(CARTS_BATCH, Cart, carts)

    async def register_product_view(self, view: ProductView) -> None:
        """Send one product view (``POST /api/v2/tracking/productview``)."""
        if not isinstance(view, ProductView):
            raise TypeError(
                f"register_product_view() takes a ProductView, got {type(view).__name__}"
            )
        await self._post(PRODUCT_VIEW, dumps_one(view))

    async def register_product_views(self, views: Iterable[ProductView]) -> None:
        """Send product views in batches of ``max_batch_size`` (``.../productviews``)."""
        await self._post_batches(PRODUCT_VIEWS, ProductView, views)

    # -- contact lookup -----------------------------------------------------------------------

    async def find_contact_id(
        self,
        *,
        email: str | None = None,
        mobile_phone: str | None = None,
        social_security_number: str | None = None,
        custom_key: str | None = None,
        any: str | None = None,
        contact_type: str | None = None,
    ) -> str | None:
        """The contact id for exactly one key (``GET /api/v3/contacts/id``), None if none.

        Raises MultipleMatchesError when several contacts match (409), ApiError for an
        invalid value (400) or an answer that is not a contact id, and otherwise what the
        tracking calls raise; it shares their rate limit, 429 pause and retries. The value
        looked up appears in no log, repr or message.
        """
        params = lookup_params(
            contact_type, email=email, mobile_phone=mobile_phone,
            social_security_number=social_security_number, custom_key=custom_key, any=any,
        )
        return await find_contact_id(self, params, max_pause=self.retry.max_backoff)

    async def _post_batches(
        self, path: str, kind: type[Cart] | type[ProductView], events: Iterable[object]
    ) -> None:
        batch = list(events)
        for index, event in enumerate(batch):
            if not isinstance(event, kind):
                raise TypeError(
                    f"element {index} must be a {kind.__name__}, got {type(event).__name__}"
                )
        for chunk in _chunks(batch, self.max_batch_size):
            await self._post(path, dumps(chunk))  # type: ignore[arg-type]

    async def _post(self, path: str, body: bytes) -> None:
        """POST with the client's retry policy, impatient: an awaited call never hangs on a
        pause longer than ``max_backoff`` (it raises RateLimitError instead)."""
        policy = self.retry
        started = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            try:
                await self._transport.post(path, body, max_pause=policy.max_backoff)
                return
            except VoyadoError as error:
                wait = policy.next_wait(
                    error, attempts, time.monotonic() - started, patient=False
                )
                if wait is None:
                    raise
                log.info("POST %s failed (%s); retry %d in %.2fs", path, error, attempts, wait)
                await asyncio.sleep(wait)
