"""Delivery delays: how long recent events waited, from enqueue to Voyado's 2xx.

The sender records each delivered chunk here; ``stats`` reads percentiles. The window is
bounded (the last :data:`WINDOW` delivered events), so memory stays constant and old
deliveries stop counting. A collapsed cart counts once, from the arrival of the first update
it replaced that was still pending (the store keeps that time per cart).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Final

__all__ = ["WINDOW", "DeliveryDelays", "percentile"]

WINDOW: Final = 4096  # delivered events the percentiles are computed over


def percentile(ordered: Sequence[float], share: float) -> float:
    """The nearest-rank percentile (*share* in 0..1) of a sorted, non-empty sequence."""
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


class DeliveryDelays:
    """The delays (seconds) of the last *size* or so delivered events.

    Recording is O(1) per delivered request (it keeps the arrival times and the delivery
    time); the delays are computed when :meth:`percentiles` is asked. Whole requests leave
    the window, oldest first, while the rest still hold *size* events.
    """

    __slots__ = ("_count", "_deliveries", "_size")

    def __init__(self, size: int = WINDOW) -> None:
        self._size = size
        self._deliveries: deque[tuple[float, list[float]]] = deque()
        self._count = 0

    def record(self, arrivals: list[float], now: float) -> None:
        """Events that arrived at *arrivals* were delivered at *now* (the list is kept:
        the caller must not change it afterwards)."""
        deliveries = self._deliveries
        deliveries.append((now, arrivals))
        self._count += len(arrivals)
        while self._count - len(deliveries[0][1]) >= self._size:
            self._count -= len(deliveries.popleft()[1])

    def percentiles(self) -> tuple[float | None, float | None]:
        """(p50, p99) of the window; (None, None) before the first delivery."""
        ordered = sorted(
            [now - at for now, arrivals in self._deliveries for at in arrivals]
        )
        if not ordered:
            return None, None
        return percentile(ordered, 0.5), percentile(ordered, 0.99)
