"""TrackingClient: awaited calls to Voyado's four tracking endpoints over one pooled session.

Every request goes through the same path (:meth:`TrackingClient._send`): the shared 429 gate,
the token bucket, one POST, and translation of the outcome into our exception tree. Awaited
calls wrap that path in the client's :class:`RetryPolicy`; the buffer calls it once per attempt
and keeps its own retry budget, so both share one gate and one bucket.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Final, TypeVar

import aiohttp
from yarl import URL

from ._errors import RateLimitError, TransportError, VoyadoError, api_error
from ._models import Cart, ProductView
from ._retry import RateLimitGate, RetryPolicy, TokenBucket, parse_retry_after
from ._version import __version__
from ._wire import (
    CARTS,
    CARTS_BATCH,
    PRODUCT_VIEW,
    PRODUCT_VIEWS,
    USER_AGENT_PATTERN,
    dumps,
    dumps_one,
)

__all__ = ["CARTS", "CARTS_BATCH", "PRODUCT_VIEW", "PRODUCT_VIEWS", "TrackingClient"]

log = logging.getLogger("voyado_tracking")


DEFAULT_USER_AGENT: Final = f"voyado-tracking/{__version__}"
# A 429 without Retry-After still pauses every request of the client this long.
DEFAULT_RATE_LIMIT_PAUSE: Final = 1.0
_ERROR_BODY_BYTES: Final = 4096
_HEADER_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")

_T = TypeVar("_T")


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _base_url(value: object) -> URL:
    if not isinstance(value, (str, URL)):
        raise TypeError(f"base_url must be a str, got {type(value).__name__}")
    url = URL(str(value).rstrip("/"))
    if not url.is_absolute() or not url.host:
        # Not echoed without a scheme: swapped arguments would put the API key in the message.
        got = repr(str(value)) if "://" in str(value) else "a value without a scheme"
        raise ValueError(
            f"base_url must be an absolute URL such as https://<tenant>.voyado.com, got {got}"
        )
    if url.query_string or url.fragment or url.user or url.password:
        raise ValueError("base_url must not carry credentials, a query or a fragment")
    if url.scheme == "https" or (url.scheme == "http" and is_loopback(url.host)):
        return url
    raise ValueError(
        f"base_url must use https:// (plain http is only allowed to loopback hosts), got {url}"
    )


def _chunks(items: Sequence[_T], size: int) -> Iterable[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class TrackingClient:
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
    ) -> None:
        self._base_url = _base_url(base_url)
        if not isinstance(api_key, str) or not api_key.strip() or _HEADER_UNSAFE.search(api_key):
            # Never echo the value: it may be a real key pasted in the wrong place.
            raise ValueError("api_key must be a non-empty string without control characters")
        user_agent = DEFAULT_USER_AGENT if user_agent is None else user_agent
        if (
            not isinstance(user_agent, str)
            or _HEADER_UNSAFE.search(user_agent)
            or not USER_AGENT_PATTERN.fullmatch(user_agent)
        ):
            raise ValueError(f"user_agent must look like 'System/Version', got {user_agent!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        if max_requests_per_second is not None and (
            isinstance(max_requests_per_second, bool)
            or not isinstance(max_requests_per_second, (int, float))
            or not max_requests_per_second > 0
        ):
            raise ValueError(
                f"max_requests_per_second must be > 0 or None, got {max_requests_per_second!r}"
            )
        if (
            isinstance(max_batch_size, bool)
            or not isinstance(max_batch_size, int)
            or max_batch_size < 1
        ):
            raise ValueError(f"max_batch_size must be an int >= 1, got {max_batch_size!r}")
        if retry is None:
            retry = RetryPolicy()
        elif not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
        self._headers: Final = {
            "apikey": api_key,
            "User-Agent": user_agent,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        self._urls: Final = {
            path: URL(str(self._base_url) + path)
            for path in (CARTS, CARTS_BATCH, PRODUCT_VIEW, PRODUCT_VIEWS)
        }
        self._timeout = aiohttp.ClientTimeout(total=float(timeout))
        self.timeout = float(timeout)
        self.retry = retry
        self.max_batch_size = max_batch_size
        self.max_requests_per_second = max_requests_per_second
        self.user_agent = user_agent
        self._verify_tls = bool(verify_tls)
        self._session = session
        self._owns_session = session is None
        self._closed = False
        self._gate = RateLimitGate()
        self._bucket = (
            TokenBucket(float(max_requests_per_second)) if max_requests_per_second else None
        )

    @property
    def base_url(self) -> str:
        return str(self._base_url)

    def __repr__(self) -> str:
        return f"voyado_tracking.TrackingClient(base_url={self.base_url!r}, api_key='***')"

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> TrackingClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (a borrowed session is left open). Idempotent."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._owns_session and not session.closed:
            await session.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise VoyadoError("this TrackingClient is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._verify_tls),
                timeout=self._timeout,
            )
        return self._session

    # -- the four endpoints ------------------------------------------------------------------

    async def register_cart(self, cart: Cart) -> None:
        """Send one cart update (``POST /api/v2/tracking/carts``)."""
        if not isinstance(cart, Cart):
            raise TypeError(f"register_cart() takes a Cart, got {type(cart).__name__}")
        await self._post(CARTS, dumps_one(cart), self.retry)

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
        await self._post(PRODUCT_VIEW, dumps_one(view), self.retry)

    async def register_product_views(self, views: Iterable[ProductView]) -> None:
        """Send product views in batches of ``max_batch_size`` (``.../productviews``)."""
        await self._post_batches(PRODUCT_VIEWS, ProductView, views)

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
            await self._post(path, dumps(chunk), self.retry)  # type: ignore[arg-type]

    # -- one request, with and without retries -----------------------------------------------

    async def _post(self, path: str, body: bytes, policy: RetryPolicy) -> None:
        started = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            try:
                await self._send(path, body, max_pause=policy.max_backoff)
                return
            except VoyadoError as error:
                wait = self._retry_wait(error, policy, attempts, time.monotonic() - started)
                if wait is None:
                    raise
                log.info("POST %s failed (%s); retry %d in %.2fs", path, error, attempts, wait)
                await asyncio.sleep(wait)

    @staticmethod
    def _retry_wait(
        error: VoyadoError, policy: RetryPolicy, attempts: int, elapsed: float
    ) -> float | None:
        """Seconds to wait before the next attempt, or None when *error* is final."""
        if not getattr(error, "retriable", False):
            return None
        wait = policy.backoff(attempts)
        if isinstance(error, RateLimitError) and error.retry_after is not None:
            if error.retry_after > policy.max_backoff:
                return None  # longer than this caller is prepared to wait
            wait = max(wait, error.retry_after)
        return wait if policy.allows(attempts, elapsed, wait) else None

    async def _send(self, path: str, body: bytes, max_pause: float | None = None) -> None:
        """One POST through the shared gates; raises ApiError or TransportError on failure.

        A caller that will not wait more than *max_pause* seconds for a 429 pause to end (an
        awaited call in a request handler) gets a RateLimitError at once instead, without a
        request being sent.
        """
        paused = self._gate.remaining()
        if max_pause is not None and paused > max_pause:
            raise RateLimitError(
                429,
                "not sent: requests are paused by an earlier 429 from Voyado",
                endpoint=path,
                retry_after=paused,
            )
        await self._gate.wait()
        if self._bucket is not None:
            await self._bucket.acquire()
            # A 429 may have closed the gate while we queued for a slot. That slot is stale
            # once the pause is over: take a new one, or everyone held by the pause would
            # fire at once when it ends.
            while self._gate.remaining() > 0:
                await self._gate.wait()
                await self._bucket.acquire()
        session = self._get_session()
        started = time.monotonic()
        try:
            async with session.post(
                self._urls[path],
                data=body,
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                status = response.status
                if 200 <= status < 300:
                    await response.read()
                    log.debug("POST %s -> %d in %.1f ms", path, status,
                              (time.monotonic() - started) * 1000)
                    return
                raw = await response.content.read(_ERROR_BODY_BYTES)
                retry_after_header = response.headers.get("Retry-After")
        except asyncio.TimeoutError:
            log.debug("POST %s timed out after %.1f s", path, self.timeout)
            raise TransportError(f"POST {path} timed out after {self.timeout:g} s") from None
        except (aiohttp.ClientError, OSError) as error:
            log.debug("POST %s failed: %s", path, type(error).__name__)
            raise TransportError(f"POST {path} failed: {_describe(error)}") from None
        except RuntimeError as error:  # e.g. a borrowed session that its owner closed
            raise VoyadoError(f"POST {path} failed: {_describe(error)}") from None
        log.debug("POST %s -> %d in %.1f ms", path, status, (time.monotonic() - started) * 1000)
        retry_after = parse_retry_after(retry_after_header)
        if status == 429:
            self._gate.pause(DEFAULT_RATE_LIMIT_PAUSE if retry_after is None else retry_after)
        # A gateway may echo request headers in its error page: never let the key through.
        text = raw.decode("utf-8", "replace").replace(self._headers["apikey"], "***")
        raise api_error(status, text, path, retry_after)


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}"[:300]
