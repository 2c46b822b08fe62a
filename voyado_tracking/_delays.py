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
    """The delays (seconds) of the last *size* delivered events."""

    __slots__ = ("_delays", "_size")

    def __init__(self, size: int = WINDOW) -> None:
        self._size = size
        self._delays: deque[float] = deque(maxlen=size)

    def record(self, arrivals: list[float], now: float) -> None:
        """Events that arrived at *arrivals* were delivered at *now*."""
        if len(arrivals) > self._size:
            arrivals = arrivals[-self._size:]
        self._delays.extend([now - at for at in arrivals])

    def percentiles(self) -> tuple[float | None, float | None]:
        """(p50, p99) of the window; (None, None) before the first delivery."""
        if not self._delays:
            return None, None
        ordered = sorted(self._delays)
        return percentile(ordered, 0.5), percentile(ordered, 0.99)
