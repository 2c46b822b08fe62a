"""FlushSettings: how a TrackingBuffer batches, bounds memory, retries and shuts down."""

from __future__ import annotations

from typing import Literal

import attrs

from ._retry import RetryPolicy
from ._validators import attrs_int_at_least, attrs_positive

__all__ = ["FlushSettings", "Overflow"]

Overflow = Literal["drop_oldest", "drop_newest", "raise"]
_OVERFLOW_POLICIES = ("drop_oldest", "drop_newest", "raise")


def _overflow(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if value not in _OVERFLOW_POLICIES:
        raise ValueError(f"overflow must be one of {', '.join(_OVERFLOW_POLICIES)}; got {value!r}")


def _retry(instance: object, attribute: attrs.Attribute[RetryPolicy], value: object) -> None:
    if not isinstance(value, RetryPolicy):
        raise TypeError(f"retry must be a RetryPolicy, got {type(value).__name__}")


def _default_retry() -> RetryPolicy:
    # Voyado's guidance for background jobs: back off late and long.
    return RetryPolicy(max_attempts=None, initial_backoff=1.0, max_backoff=60.0, max_elapsed=600.0)


@attrs.frozen(kw_only=True)
class FlushSettings:
    """How a :class:`TrackingBuffer` batches and delivers. Times are in seconds.

    A stream (carts, product views) is flushed when it holds ``max_batch_size`` events or about
    ``max_batch_bytes`` of JSON, or when its oldest event has waited ``flush_interval``.
    ``max_pending`` bounds the events held (pending, in flight and retrying); past it,
    ``overflow`` decides: ``"drop_oldest"`` drops the oldest pending event, ``"drop_newest"``
    the new one, ``"raise"`` raises :class:`BufferFullError`.
    """

    max_batch_size: int = attrs.field(default=500, validator=attrs_int_at_least(1))
    max_batch_bytes: int = attrs.field(default=1_000_000, validator=attrs_int_at_least(1024))
    flush_interval: float = attrs.field(default=5.0, validator=attrs_positive)
    max_pending: int = attrs.field(default=10_000, validator=attrs_int_at_least(1))
    overflow: Overflow = attrs.field(default="drop_oldest", validator=_overflow)
    max_concurrent_requests: int = attrs.field(default=2, validator=attrs_int_at_least(1))
    retry: RetryPolicy = attrs.field(factory=_default_retry, validator=_retry)
    shutdown_timeout: float = attrs.field(default=30.0, validator=attrs_positive)

    def __attrs_post_init__(self) -> None:
        if self.max_pending < self.max_batch_size:
            raise ValueError(
                f"max_pending ({self.max_pending}) must be >= max_batch_size "
                f"({self.max_batch_size}), or a full batch could never form"
            )
