"""The exception tree of voyado_tracking.

Every failure the library reports is one of these; aiohttp's exceptions are translated where
aiohttp is called, so callers never import aiohttp to catch our failures::

    VoyadoError
    ├── InvalidEventError        (also a ValueError) a model field failed validation
    ├── InvalidSoftLoginError    (also a ValueError) an ``eclub`` token that cannot be used
    ├── ApiError                 Voyado answered with a non-2xx status
    │   ├── AuthenticationError  401 / 403: the API key is wrong or lacks rights
    │   ├── RateLimitError       429: too many requests (``retry_after`` when Voyado said)
    │   └── MultipleMatchesError 409 from a contact lookup: several contacts match
    ├── TransportError           timeout, refused or dropped connection, broken response
    ├── ClientClosedError        the TrackingClient was closed, or its event loop was
    ├── BufferClosedError        the TrackingBuffer (or Tracker) no longer accepts events
    │   └── ForkedProcessError   (also a RuntimeError) a buffer used in a forked child
    └── BufferFullError          the TrackingBuffer is at ``max_pending`` (overflow="raise")

No message, attribute or repr carries the API key, nor a looked-up email, phone number or
personal number, nor a soft-login key or anything decrypted with it.
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "AuthenticationError",
    "BufferClosedError",
    "BufferFullError",
    "ClientClosedError",
    "ForkedProcessError",
    "InvalidEventError",
    "InvalidSoftLoginError",
    "MultipleMatchesError",
    "RateLimitError",
    "TransportError",
    "VoyadoError",
]

MAX_BODY_CHARS = 1024
_MAX_VALUE_CHARS = 60


def shorten(value: object, limit: int = _MAX_VALUE_CHARS) -> str:
    """A ``repr`` of *value* that never exceeds about *limit* characters."""
    try:
        text = repr(value)
    except ValueError:  # an int too large for str() (sys.get_int_max_str_digits)
        return f"<{type(value).__name__} too large to show>"
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} chars)"


class VoyadoError(Exception):
    """Base class of every error raised by voyado_tracking.

    ``retriable`` says whether the same request may succeed if tried again later.
    """

    retriable: bool = False


class InvalidEventError(VoyadoError, ValueError):
    """An event (or one of its parts) is invalid; ``field`` names the offending field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem

    def __reduce__(self) -> tuple[type[InvalidEventError], tuple[str, str]]:
        return (type(self), (self.field, self.problem))


class ApiError(VoyadoError):
    """Voyado answered with a non-success status.

    ``body`` holds the start of the response body (about 1 KB at most); ``retriable`` says
    whether the same request may succeed later (408, 429 and 5xx other than 501);
    ``retry_after`` is the pause Voyado asked for (``Retry-After``, in seconds), if any.
    ``endpoint`` is the full URL that answered (never the key).
    """

    def __init__(
        self,
        status: int,
        body: str = "",
        *,
        endpoint: str = "",
        retry_after: float | None = None,
    ) -> None:
        if len(body) > MAX_BODY_CHARS:
            body = body[:MAX_BODY_CHARS] + "…"
        self.status = status
        self.body = body
        self.endpoint = endpoint
        self.retry_after = retry_after
        self.retriable = is_retriable_status(status)
        where = f" from {endpoint}" if endpoint else ""
        detail = f": {body}" if body else ""
        super().__init__(f"HTTP {status}{where}{detail}")

    def __reduce__(self) -> tuple[object, ...]:
        # Exception's default re-calls __init__ with the message as the status.
        return (_restore, (type(self), self.args, self.__dict__))


class AuthenticationError(ApiError):
    """Voyado refused the API key (401 or 403). Never retried."""


class RateLimitError(ApiError):
    """Voyado answered 429. ``retry_after`` is the pause it asked for, in seconds, if any."""

    def __init__(
        self,
        status: int = 429,
        body: str = "",
        *,
        endpoint: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, body, endpoint=endpoint, retry_after=retry_after)


class MultipleMatchesError(ApiError):
    """A contact lookup matched more than one contact (Voyado's 409 ``MultipleMatches``)."""


class InvalidSoftLoginError(VoyadoError, ValueError):
    """An ``eclub`` soft-login token that is malformed, encrypted with another key, or stale.

    The message says which of these it is, never the key or any decrypted text; every
    failure of the decryption itself shares one message (distinct ones would be an oracle).
    """


class TransportError(VoyadoError):
    """The request did not get an HTTP answer: timeout, connection refused or dropped."""

    retriable = True


class ClientClosedError(VoyadoError):
    """The TrackingClient was closed, or the event loop it was used in is closed: nothing
    more can be sent through it. Final."""


class BufferClosedError(VoyadoError):
    """The TrackingBuffer is closed (or closing) and takes no more events."""


class ForkedProcessError(BufferClosedError, RuntimeError):
    """A sink (``TrackingBuffer``, ``RedisOutbox``) built before ``fork`` was used in the
    forked child: its loop, tasks and sockets belong to the parent. Build one in the child,
    or use a :class:`~voyado_tracking.Tracker`, which starts afresh in each process."""


class BufferFullError(VoyadoError):
    """The TrackingBuffer holds ``max_pending`` events and its overflow policy is "raise"."""


def _restore(cls: type[ApiError], args: tuple[object, ...], state: dict[str, object]) -> ApiError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


def is_retriable_status(status: int) -> bool:
    return status in (408, 429) or (500 <= status <= 599 and status != 501)


def api_error(status: int, body: str, endpoint: str, retry_after: float | None) -> ApiError:
    """The ApiError subclass for an HTTP status."""
    if status in (401, 403):
        return AuthenticationError(status, body, endpoint=endpoint)
    if status == 429:
        return RateLimitError(status, body, endpoint=endpoint, retry_after=retry_after)
    return ApiError(status, body, endpoint=endpoint, retry_after=retry_after)
