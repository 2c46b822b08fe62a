"""What a FakeVoyado is told to do (scripted faults, random chaos) and what it records."""

from __future__ import annotations

import attrs

__all__ = ["Chaos", "Fault", "RecordedRequest"]


@attrs.frozen(kw_only=True)
class Fault:
    """One scripted answer: a status (with ``Retry-After`` and body), or a dropped connection.

    ``delay`` waits before answering. With ``process=True`` the request is applied first (the
    events are stored) and the fault is answered afterwards, like a gateway that timed out
    after the backend did the work. A 2xx fault stores the (valid) events like a real success,
    whatever body it answers with.
    """

    status: int = 503
    retry_after: str | float | None = None
    body: str | bytes | None = None
    content_type: str = "application/json"
    delay: float = 0.0
    drop: bool = False
    process: bool = False


@attrs.frozen(kw_only=True)
class Chaos:
    """Random faults for soak tests. Rates are probabilities per request."""

    seed: int = 0
    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 502, 503, 504)
    rate_limit_rate: float = 0.0
    retry_after: float = 0.05
    drop_rate: float = 0.0
    slow_rate: float = 0.0
    slow_delay: float = 1.0


@attrs.frozen
class RecordedRequest:
    """What the fake saw of one request. The API key itself is never stored.

    ``status`` 0 means the connection was dropped without an answer. ``at`` is the request's
    arrival on the :func:`time.monotonic` clock; ``rate_limited`` marks a 429 of the fake's
    ``rate_limit`` (not of a scripted or random fault).
    """

    path: str
    status: int
    events: int
    key_ok: bool
    user_agent: str | None
    content_type: str | None
    body: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    at: float = 0.0
    rate_limited: bool = False
