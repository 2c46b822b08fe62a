"""A sink's metrics in the Prometheus text format, rendered by the library itself (no
OpenTelemetry, no Prometheus client): what ``voyado-tracking forward --metrics-port`` serves.

A :class:`Registry` is a :class:`~voyado_tracking._observe.SinkObserver` that keeps the
numbers (the same observer path as ``vt.instrument()``); :meth:`Registry.render` writes
exactly these series (text format 0.0.4)::

    voyado_tracking_events_total{outcome,reason}
    voyado_tracking_requests_total{voyado_tracking_endpoint,http_response_status_code|error_type}
    voyado_tracking_retries_total
    voyado_tracking_pending{stream}
    voyado_tracking_in_flight
    voyado_tracking_oldest_pending_age_seconds
    voyado_tracking_stream_backlog                      (a forwarder, once its XLEN answered)
    voyado_tracking_delivery_delay_seconds_bucket{le} / _sum / _count
    voyado_tracking_batch_size_bucket{le} / _sum / _count
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Final

from ._intake import Lifecycle
from ._observe import BATCH_BUCKETS, DELAY_BUCKETS, SinkObserver

__all__ = ["CONTENT_TYPE", "Registry"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


class _Histogram:
    """Cumulative bucket counts, sum and count, over fixed upper bounds."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        lines, total = [], 0
        for bound, count in zip((*map(_number, self.bounds), "+Inf"), self.counts, strict=True):
            total += count
            lines.append(f'{name}_bucket{{le="{bound}"}} {total}')
        lines += [f"{name}_sum {_number(self.sum)}", f"{name}_count {self.count}"]
        return lines


class Registry(SinkObserver):
    """One sink's numbers, kept for :meth:`render`. Build it, then :meth:`attach` it."""

    __slots__ = ("_batch", "_delay", "_events", "_requests", "_retries")

    def __init__(self, sink: Lifecycle) -> None:
        super().__init__(sink)
        self._events: dict[tuple[str, str | None], int] = {}
        self._requests: dict[tuple[str, str, str], int] = {}
        self._retries = 0
        self._delay = _Histogram(DELAY_BUCKETS)
        self._batch = _Histogram(BATCH_BUCKETS)

    def count(self, outcome: str, reason: str | None, delta: int) -> None:
        key = (outcome, reason)
        self._events[key] = self._events.get(key, 0) + delta

    def count_retries(self, delta: int) -> None:
        self._retries += delta

    def request(self, endpoint: str, status: int | None, error_type: str | None) -> None:
        key = (endpoint, *(("http_response_status_code", str(status)) if status is not None
                           else ("error_type", str(error_type))))
        self._requests[key] = self._requests.get(key, 0) + 1

    def record_delay(self, seconds: float) -> None:
        self._delay.observe(seconds)

    def record_batch(self, events: int) -> None:
        self._batch.observe(events)

    def render(self) -> str:
        """The exposition, as of the last totals published (publish first for fresh ones)."""
        carts, views, in_flight, age = self.gauges()
        out: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            out.extend((f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"))

        family("voyado_tracking_events_total", "counter",
               "Events by outcome (dropped: by reason)")
        for (outcome, reason), value in self._events.items():
            labels = f'outcome="{outcome}"' + ("" if reason is None else f',reason="{reason}"')
            out.append(f"voyado_tracking_events_total{{{labels}}} {value}")
        family("voyado_tracking_requests_total", "counter",
               "Requests by endpoint and status, or error type when no answer came")
        for (endpoint, label, answer), count in sorted(self._requests.items()):
            out.append(f'voyado_tracking_requests_total{{voyado_tracking_endpoint="{endpoint}",'
                       f'{label}="{answer}"}} {count}')
        family("voyado_tracking_retries_total", "counter",
               "Failed requests whose events wait to be retried")
        out.append(f"voyado_tracking_retries_total {self._retries}")
        family("voyado_tracking_pending", "gauge", "Events pending or retrying, by stream")
        out += [f'voyado_tracking_pending{{stream="carts"}} {carts}',
                f'voyado_tracking_pending{{stream="product_views"}} {views}']
        family("voyado_tracking_in_flight", "gauge", "Events in requests under way")
        out.append(f"voyado_tracking_in_flight {in_flight}")
        family("voyado_tracking_oldest_pending_age_seconds", "gauge",
               "Seconds the oldest pending or retrying event has waited")
        out.append(f"voyado_tracking_oldest_pending_age_seconds {_number(age)}")
        if self.backlog is not None:
            family("voyado_tracking_stream_backlog", "gauge",
                   "Entries in the stream not yet delivered or dead-lettered, fleet-wide")
            out.append(f"voyado_tracking_stream_backlog {self.backlog}")
        family("voyado_tracking_delivery_delay_seconds", "histogram",
               "Seconds from enqueue to Voyado's 2xx, per delivered event")
        out += self._delay.lines("voyado_tracking_delivery_delay_seconds")
        family("voyado_tracking_batch_size", "histogram", "Events per request sent")
        out += self._batch.lines("voyado_tracking_batch_size")
        return "\n".join(out) + "\n"


def _number(value: float) -> str:
    return repr(float(value))
