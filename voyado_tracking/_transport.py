"""The one aiohttp boundary: session, headers, rate gates, one POST, error translation.

Everything that reaches Voyado goes through :meth:`Transport.post`: awaited client calls,
buffers and forwarders alike, so they share one connection pool, one 429 pause and one request
rate. aiohttp's exceptions are translated here and nowhere else (``_translate``): callers see
only our exception tree. Response bodies are read with a bound: a huge answer, success or
error, never grows memory by its size.

A 2xx is a success whatever its body: Voyado's success bodies carry nothing we use, so they
are read only to keep the connection reusable, never decoded. Bodies are asked for and read
without content coding (``Accept-Encoding: identity``, aiohttp's decompression off), so a proxy
that labels a plain body ``gzip`` or ``br`` cannot turn a delivered batch into an error and a
retry (duplicates). An error body that comes compressed anyway is inflated for its message,
within the same bound, when it is gzip or deflate.

Contact lookups go through :meth:`Transport.get`, behind the same limiter and pause; their
query holds personal data, so no message or log line carries it.

Metrics hear every request that went out through :attr:`Transport.observers`
(:data:`Answered`): the path, then the status, or ``"timeout"`` / ``"connection"`` when no
answer came. A request not sent (a 429 pause the caller would not wait for, a closed client)
is not heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import re
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Final, Protocol
from urllib.parse import quote, quote_plus

import aiohttp
from yarl import URL

from ._errors import ClientClosedError, RateLimitError, TransportError, api_error
from ._retry import RateLimitGate, TokenBucket, parse_retry_after
from ._validators import check_positive
from ._version import __version__
from ._wire import CARTS, CARTS_BATCH, PRODUCT_VIEW, PRODUCT_VIEWS, USER_AGENT_PATTERN

__all__ = [
    "Answered",
    "LocalRateLimiter",
    "RateLimiter",
    "Send",
    "Transport",
    "check_api_key",
    "check_base_url",
    "check_user_agent",
    "fingerprint",
    "is_loopback",
    "scrub",
]

log = logging.getLogger("voyado_tracking")

DEFAULT_USER_AGENT: Final = f"voyado-tracking/{__version__}"
# A 429 without Retry-After still pauses every request of the client this long.
DEFAULT_RATE_LIMIT_PAUSE: Final = 1.0
_ERROR_BODY_BYTES: Final = 4096
# A success body is read (so the connection can be reused) up to this much, then dropped.
_SUCCESS_BODY_BYTES: Final = 64 * 1024
_HEADER_UNSAFE: Final = re.compile(r"[\x00-\x1f\x7f]")
LOOP_CLOSED: Final = (
    "this TrackingClient cannot be used: its event loop is closed; create the TrackingClient "
    "inside the loop that uses it"
)


# A request was answered: (path, status), or (path, "timeout" / "connection") without one.
Answered = Callable[[str, "int | str"], None]


class Send(Protocol):
    """What a sender needs of the network: one POST of an encoded body to an endpoint path.

    Raises :class:`ApiError` for a non-2xx answer, :class:`TransportError` when no answer came.
    """

    async def __call__(self, path: str, body: bytes) -> None: ...


class RateLimiter(Protocol):
    """Admits requests at a rate and holds them all during a 429 pause.

    A limiter shared between processes may also have ``bind(identity)``: a client calls it
    with the :func:`fingerprint` of its base URL and API key, to name the shared budget.
    """

    async def acquire(self, max_pause: float | None) -> None:
        """Wait for a request slot; raise RateLimitError at once if paused past *max_pause*."""

    async def pause(self, seconds: float) -> None:
        """Voyado answered 429: hold every request for *seconds*."""


class LocalRateLimiter:
    """The in-process limiter: a 429 gate and an optional token bucket (``rate=None``: none)."""

    __slots__ = ("_bucket", "_gate")

    def __init__(self, rate: float | None) -> None:
        self._gate = RateLimitGate()
        self._bucket = TokenBucket(rate) if rate else None

    async def acquire(self, max_pause: float | None) -> None:
        gate, bucket = self._gate, self._bucket
        paused = gate.remaining()
        if max_pause is not None and paused > max_pause:
            raise RateLimitError(
                429,
                "not sent: requests are paused by an earlier 429 from Voyado",
                retry_after=paused,
            )
        await gate.wait()
        if bucket is not None:
            await bucket.acquire()
            # A 429 may have closed the gate while we queued for a slot. That slot is stale
            # once the pause is over: take a new one, or everyone held by the pause would
            # fire at once when it ends.
            while gate.remaining() > 0:
                await gate.wait()
                await bucket.acquire()

    async def pause(self, seconds: float) -> None:
        self._gate.pause(seconds)


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_base_url(value: object) -> URL:
    """The tenant's base URL: https (plain http to loopback only), no path, query or user."""
    if not isinstance(value, (str, URL)):
        raise TypeError(f"base_url must be a str, got {type(value).__name__}")
    url = URL(str(value))
    if not url.is_absolute() or not url.host:
        # Not echoed without a scheme: swapped arguments would put the API key in the message.
        got = repr(str(value)) if "://" in str(value) else "a value without a scheme"
        raise ValueError(
            f"base_url must be an absolute URL such as https://<tenant>.voyado.com, got {got}"
        )
    if url.query_string or url.fragment or url.user or url.password:
        raise ValueError("base_url must not carry credentials, a query or a fragment")
    if url.path not in ("", "/"):
        raise ValueError(
            f"base_url must be the tenant's root such as https://<tenant>.voyado.com, without "
            f"a path (got path {url.path!r}; the client adds /api/v2/tracking/... itself)"
        )
    if url.scheme == "https" or (url.scheme == "http" and is_loopback(url.host)):
        return url.with_path("")
    raise ValueError(
        f"base_url must use https:// (plain http is only allowed to loopback hosts), got {url}"
    )


def check_api_key(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or _HEADER_UNSAFE.search(value):
        # Never echo the value: it may be a real key pasted in the wrong place.
        raise ValueError("api_key must be a non-empty string without control characters")
    return value


def fingerprint(base_url: str, api_key: str) -> str:
    """A short hash naming one tenant and API key, for shared state (never the key itself)."""
    return hashlib.sha256(f"{base_url}\n{api_key}".encode()).hexdigest()[:24]


def check_user_agent(value: object) -> str:
    if (
        not isinstance(value, str)
        or _HEADER_UNSAFE.search(value)
        or not USER_AGENT_PATTERN.fullmatch(value)
    ):
        raise ValueError(f"user_agent must look like 'System/Version', got {value!r}")
    return value


class Transport:
    """One pooled aiohttp session to one Voyado tenant, behind one rate limiter."""

    def __init__(
        self,
        base_url: URL,
        api_key: str,
        user_agent: str,
        *,
        session: aiohttp.ClientSession | None,
        timeout: float,
        limiter: RateLimiter,
        verify_tls: bool,
    ) -> None:
        self._headers: Final = {
            "apikey": api_key,
            "User-Agent": user_agent,
            "Content-Type": "application/json",
            "Accept": "application/json",
            # Bodies are never decoded (see the module docstring): ask for them plain.
            "Accept-Encoding": "identity",
        }
        self._base_url = str(base_url)
        self._urls: Final = {
            path: URL(str(base_url) + path)
            for path in (CARTS, CARTS_BATCH, PRODUCT_VIEW, PRODUCT_VIEWS)
        }
        self.timeout = check_positive("timeout", timeout)
        self._timeout = aiohttp.ClientTimeout(total=self.timeout)
        self._limiter = limiter
        self._verify_tls = verify_tls
        self._session = session
        self._owns_session = session is None
        self.closed = False
        self.observers: tuple[Answered, ...] = ()  # metrics, when a sink is watched

    def __repr__(self) -> str:
        return "<voyado_tracking transport api_key='***'>"

    def fingerprint(self, purpose: str) -> str:
        """A digest naming this tenant and key for *purpose*, which never reveals the key."""
        material = f"voyado_tracking {purpose}\n{self._base_url}\n{self._headers['apikey']}"
        return hashlib.sha256(material.encode()).hexdigest()

    async def aclose(self) -> None:
        self.closed = True
        session, self._session = self._session, None
        if session is not None and self._owns_session and not session.closed:
            await session.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self.closed:
            raise ClientClosedError("this TrackingClient is closed")
        session = self._session
        if session is not None:
            loop = getattr(session, "_loop", None)  # the loop its connections live in
            if loop is not None and loop.is_closed():
                raise ClientClosedError(LOOP_CLOSED)
        else:
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._verify_tls),
                timeout=self._timeout,
            )
        return session

    async def post(self, path: str, body: bytes, max_pause: float | None = None) -> None:
        """One POST through the rate limiter; raises ApiError or TransportError on failure.

        A caller that will not wait more than *max_pause* seconds for a 429 pause to end (an
        awaited call in a request handler) gets a RateLimitError at once instead, without a
        request being sent.
        """
        url = self._urls[path]
        try:
            await self._limiter.acquire(max_pause)
        except RateLimitError as error:
            error.endpoint = str(url)
            raise
        session = self._get_session()
        started = time.monotonic()
        with _translate(url, self.timeout, heard=self._heard(path)):
            async with session.post(
                url, data=body, headers=self._headers, timeout=self._timeout,
                allow_redirects=False, auto_decompress=False,
            ) as response:
                status = response.status
                if 200 <= status < 300:
                    await response.content.read(_SUCCESS_BODY_BYTES)
                else:
                    raw = await response.content.read(_ERROR_BODY_BYTES)
                    retry_after_header = response.headers.get("Retry-After")
                    coding = response.headers.get("Content-Encoding", "")
        log.debug("POST %s -> %d in %.1f ms", path, status, (time.monotonic() - started) * 1000)
        for observer in self.observers:
            observer(path, status)
        if 200 <= status < 300:
            return
        retry_after = parse_retry_after(retry_after_header)
        if status == 429:
            await self._limiter.pause(
                DEFAULT_RATE_LIMIT_PAUSE if retry_after is None else retry_after
            )
        # A gateway may echo request headers in its error page: never let the key through.
        text = _inflate(raw, coding).decode("utf-8", "replace")
        text = text.replace(self._headers["apikey"], "***")
        raise api_error(status, text, str(url), retry_after)


    async def get(
        self,
        path: str,
        params: Mapping[str, str],
        *,
        max_pause: float | None = None,
        slot_timeout: float | None = None,
        on_send: Callable[[], None] | None = None,
    ) -> bytes:
        """One GET of *path* with a query through the rate limiter; the 2xx body (bounded).

        The query may hold personal data (a contact lookup's email): errors, logs and
        ``ApiError.endpoint`` name the path without it, and an error body that echoes one of
        its values shows ``***``. *slot_timeout*: wait at most this long for a request slot
        (then RateLimitError, nothing sent). *on_send* is called when the request goes out.
        """
        url = URL(self._base_url + path)
        secrets = [value for value in params.values() if value]
        try:
            if slot_timeout is None:
                await self._limiter.acquire(max_pause)
            else:
                await asyncio.wait_for(self._limiter.acquire(max_pause), slot_timeout)
        except RateLimitError as error:
            error.endpoint = str(url)
            raise
        except asyncio.TimeoutError:
            raise RateLimitError(
                429, f"not sent: no request slot within {slot_timeout:g} s", endpoint=str(url)
            ) from None
        session = self._get_session()
        if on_send is not None:
            on_send()
        started = time.monotonic()
        with _translate(url, self.timeout, "GET", secrets, heard=self._heard(path)):
            async with session.get(
                url.with_query(params), headers=self._headers, timeout=self._timeout,
                allow_redirects=False, auto_decompress=False,
            ) as response:
                status = response.status
                ok = 200 <= status < 300
                raw = await response.content.read(_SUCCESS_BODY_BYTES if ok else _ERROR_BODY_BYTES)
                retry_after_header = response.headers.get("Retry-After")
                coding = response.headers.get("Content-Encoding", "")
        log.debug("GET %s -> %d in %.1f ms", path, status, (time.monotonic() - started) * 1000)
        for observer in self.observers:
            observer(path, status)
        if ok:
            return raw
        retry_after = parse_retry_after(retry_after_header)
        if status == 429:
            await self._limiter.pause(
                DEFAULT_RATE_LIMIT_PAUSE if retry_after is None else retry_after
            )
        text = _inflate(raw, coding).decode("utf-8", "replace")
        text = scrub(text.replace(self._headers["apikey"], "***"), secrets)
        raise api_error(status, text, str(url), retry_after)


    def _heard(self, path: str) -> Callable[[str], None] | None:
        """What tells the observers that a request to *path* got no answer (None: none)."""
        observers = self.observers
        if not observers:
            return None

        def heard(error_type: str) -> None:
            for observer in observers:
                observer(path, error_type)

        return heard


def scrub(text: str, secrets: Iterable[str]) -> str:
    """*text* with every value of *secrets* (in any case, raw or URL-encoded) as ``***``."""
    for secret in secrets:
        for form in dict.fromkeys((secret, quote(secret, safe=""), quote_plus(secret))):
            text = re.sub(re.escape(form), "***", text, flags=re.IGNORECASE)
    return text


def _inflate(raw: bytes, coding: str) -> bytes:
    """The first bytes of a gzip or deflate error body, inflated; any other body as it came."""
    coding = coding.strip().lower()
    # gzip (or zlib) headers are detected; "deflate" may also be sent raw, without one.
    for wbits in {"gzip": (47,), "x-gzip": (47,), "deflate": (47, -15)}.get(coding, ()):
        try:
            return zlib.decompressobj(wbits).decompress(raw, _ERROR_BODY_BYTES)
        except zlib.error:
            continue
    return raw


@contextlib.contextmanager
def _translate(
    url: URL, timeout: float, method: str = "POST", secrets: Iterable[str] = (),
    heard: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """aiohttp's and the OS's failures, as our exceptions (the only place that does this).

    *url* is named in messages, so it never carries a query; *secrets* are scrubbed from
    what aiohttp says (its messages may quote the full URL). *heard* is told ``"timeout"``
    or ``"connection"`` when no answer came."""
    try:
        yield
    except asyncio.TimeoutError:
        log.debug("%s %s timed out after %.1f s", method, url.path, timeout)
        if heard is not None:
            heard("timeout")
        raise TransportError(f"{method} {url} timed out after {timeout:g} s") from None
    except (aiohttp.ClientError, OSError) as error:
        log.debug("%s %s failed: %s", method, url.path, type(error).__name__)
        if heard is not None:
            heard("connection")
        raise TransportError(
            f"{method} {url} failed: {scrub(_describe(error), secrets)}"
        ) from None
    except RuntimeError as error:  # e.g. a borrowed session that its owner closed
        if "loop is closed" in str(error):
            raise ClientClosedError(LOOP_CLOSED) from None
        raise ClientClosedError(
            f"{method} {url} failed: {scrub(_describe(error), secrets)}"
        ) from None


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}"[:300]


