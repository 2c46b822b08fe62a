"""The stats snapshots of the event sinks: plain frozen records, importable alone.

A forwarder process imports these without the buffer facade or the SQLite journal stack.
Each has ``as_dict()``: its fields by name, JSON-ready (ints, floats and None), e.g. for a
log line or a health endpoint.
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["BufferStats", "ForwarderStats", "OutboxStats"]


class _AsDict:
    __slots__ = ()

    def as_dict(self) -> dict[str, Any]:
        """The fields by name (JSON-ready: ``json.dumps(stats.as_dict())`` works)."""
        return attrs.asdict(self)  # type: ignore[arg-type]


@attrs.frozen
class BufferStats(_AsDict):
    """A snapshot of a buffer's counters (events, except ``requests`` and ``retries``) and
    delivery delays (seconds)."""

    enqueued: int
    collapsed: int
    sent: int
    requests: int
    retries: int
    dropped: int
    dead_lettered: int
    spooled: int
    pending_carts: int
    pending_product_views: int
    in_flight: int
    recovered: int = 0
    journal_errors: int = 0
    # Seconds: the age of the oldest pending or retrying event (not in flight), and the
    # enqueue-to-2xx delay of recently delivered events (None before the first delivery).
    oldest_pending_age: float = 0.0
    delivery_delay_p50: float | None = None
    delivery_delay_p99: float | None = None


@attrs.frozen
class ForwarderStats(BufferStats):
    """A forwarder's counters: those of a buffer (``enqueued`` counts entries read;
    ``spooled``, entries released to other forwarders at close) plus ``claimed``."""

    claimed: int = 0


@attrs.frozen
class OutboxStats(_AsDict):
    """A snapshot of an outbox's counters; ``sent`` counts entries written to the stream."""

    enqueued: int
    collapsed: int
    sent: int
    dropped: int
    spooled: int
    pending: int
