"""Watching a sink for metrics: what both exports share (``vt.instrument()``'s OpenTelemetry
instruments and the forwarder's own ``/metrics``), without OpenTelemetry.

A :class:`SinkObserver` is one sink's :class:`~voyado_tracking._outcomes.Observer`. It hears:

- the :class:`Totals` the sink's :class:`Outcomes` publishes after each batch and at close,
  and once a second from the watcher task (so gauges move while nothing is sent: Voyado
  down, a retry hold). Counters advance by what changed since the last totals, so they are
  updated per batch and per outcome, never per ``enqueue``; the first totals seed them with
  what the sink counted before it was watched;
- each request that the sink's client sent (its :class:`Transport`'s observers: lookups
  included), with the status or why no answer came;
- each request the sink sends (``batch_size``) and each delivered chunk (``delivery_delay``,
  one value per event).

Gauges read the last totals, an immutable tuple published from the sink's own loop: a
reader on another thread (the OpenTelemetry SDK's) never touches the store.
``oldest_pending_age`` is computed when read, from the oldest arrival published, so it grows
between publications as it does in the store. For a forwarder the watcher also refreshes
``stream_backlog`` (``XLEN``) once a second.

The instruments (names, units, attributes, buckets) are listed once, here: :data:`EVENTS`,
:data:`DELAY_BUCKETS`, :data:`BATCH_BUCKETS`, :data:`ENDPOINTS`.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, Final, cast

from ._contacts import LOOKUP
from ._intake import Lifecycle, State
from ._outcomes import Observer, Outcomes, Totals
from ._wire import CARTS, CARTS_BATCH, PRODUCT_VIEW, PRODUCT_VIEWS

__all__ = [
    "BATCH_BUCKETS", "DELAY_BUCKETS", "ENDPOINTS", "TICK", "SinkObserver", "event_series",
]

log = logging.getLogger("voyado_tracking")

TICK: Final = 1.0  # seconds between the watcher's publications (and backlog refreshes)
DELAY_BUCKETS: Final = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0)
BATCH_BUCKETS: Final = (1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0)
ENDPOINTS: Final = {
    CARTS: "carts", CARTS_BATCH: "carts", PRODUCT_VIEW: "product_views",
    PRODUCT_VIEWS: "product_views", LOOKUP: "contacts",
}
# The events counter's series: (field of Totals, outcome, reason); see event_series.
EVENTS: Final = (
    ("enqueued", "enqueued", None),
    ("recovered", "recovered", None),
    ("collapsed", "collapsed", None),
    ("sent", "sent", None),
    ("dropped_overflow", "dropped", "overflow"),
    ("dropped_shutdown", "dropped", "shutdown"),
    ("dropped_expired", "dropped", "expired"),
    ("dead_lettered", "dead_lettered", None),
    ("spooled", "spooled", None),
)
_RENAMED: Final = {"outbox": {"sent": "written"}, "forwarder": {"spooled": "released"}}


def event_series(sink_name: str) -> list[tuple[int, str, str | None]]:
    """The events counter's series of a sink ("buffer", "outbox", "forwarder"): the index
    of the field in :class:`Totals`, the ``outcome``, the ``reason`` (drops only). An outbox
    reports ``written`` instead of ``sent``, a forwarder ``released`` instead of ``spooled``."""
    renamed = _RENAMED.get(sink_name, {})
    return [(Totals._fields.index(field), renamed.get(outcome, outcome), reason)
            for field, outcome, reason in EVENTS]


class SinkObserver(Observer):
    """One watched sink; subclasses say where the numbers go (see the module docstring).

    Build it, then :meth:`attach` it (once per sink and export).
    """

    __slots__ = ("__weakref__", "_backlog_task", "_clock", "_last", "_outcomes", "_series",
                 "_sink", "_task", "backlog")

    def __init__(self, sink: Lifecycle) -> None:
        outcomes: Outcomes = sink._outcomes
        self._outcomes = outcomes
        self._sink = weakref.ref(sink)  # the watcher never keeps a sink alive
        self._clock = sink._clock
        self._series = event_series(outcomes.name)
        self._last: Totals | None = None
        self._task: asyncio.Task[None] | None = None
        self._backlog_task: asyncio.Task[None] | None = None
        self.backlog: int | None = None  # a forwarder's stream length, refreshed by the watcher

    def attach(self) -> None:
        """Start hearing the sink, its client's requests and the watcher; seed the counters."""
        sink = self._sink()
        assert sink is not None
        self._outcomes.observers += (self,)
        client = getattr(sink, "client", None)  # an outbox has none
        if client is not None:
            client.transport.observers += (self.answered,)
        self.published(self._outcomes.totals())  # seeds; starts the watcher inside a loop

    # -- what subclasses implement ------------------------------------------------------------

    def count(self, outcome: str, reason: str | None, delta: int) -> None:
        """Add *delta* events to the events counter's series (seeding adds zeros too)."""

    def count_retries(self, delta: int) -> None:
        """Add *delta* to the retries counter."""

    def request(self, endpoint: str, status: int | None, error_type: str | None) -> None:
        """One request of the sink's client got *status*, or no answer (*error_type*)."""

    def record_delay(self, seconds: float) -> None:
        """One delivered event waited *seconds* from arrival."""

    def record_batch(self, events: int) -> None:
        """The sink sent a request of *events* events."""

    # -- the observer ---------------------------------------------------------------------------

    def published(self, totals: Totals) -> None:
        last = self._last
        for index, outcome, reason in self._series:
            delta = cast(int, totals[index]) - (0 if last is None else cast(int, last[index]))
            if delta or last is None:
                self.count(outcome, reason, delta)
        retries = totals.retries - (0 if last is None else last.retries)
        if retries or last is None:
            self.count_retries(retries)
        self._last = totals
        if self._task is None:
            self._start_watcher()

    def delivered(self, arrivals: list[float], now: float) -> None:
        record = self.record_delay
        for at in arrivals:
            record(now - at)

    def batched(self, events: int) -> None:
        self.record_batch(events)

    def answered(self, path: str, answer: int | str) -> None:
        endpoint = ENDPOINTS.get(path, "other")
        if isinstance(answer, int):
            self.request(endpoint, answer, None)
        else:
            self.request(endpoint, None, answer)

    # -- the gauges (any thread) ----------------------------------------------------------------

    def gauges(self) -> tuple[int, int, int, float]:
        """``(pending carts, pending product views, in flight, oldest pending age)`` as last
        published, the age as of now."""
        last = self._last
        if last is None:
            return 0, 0, 0, 0.0
        oldest = last.oldest_pending_at
        age = 0.0 if oldest is None else max(0.0, self._clock.now() - oldest)
        return last.pending_carts, last.pending_product_views, last.in_flight, age

    @property
    def alive(self) -> bool:
        """Whether the sink still exists (a collected one is left out of the gauges)."""
        return self._sink() is not None

    # -- the watcher ----------------------------------------------------------------------------

    def _start_watcher(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # instrumented outside a loop: starts with the first batch
        self._task = loop.create_task(self._watch(), name="voyado_tracking metrics")

    async def _watch(self) -> None:
        """Publish once a second (and refresh a forwarder's backlog) until the sink closes."""
        loop = asyncio.get_running_loop()
        while True:
            sink = self._sink()
            if sink is None or sink._state is State.CLOSED:
                return
            length: Callable[[], Coroutine[Any, Any, int]] | None = getattr(
                sink, "_stream_length", None)
            del sink
            if length is not None and (self._backlog_task is None or self._backlog_task.done()):
                # Its own task: a Redis that does not answer must not stop the publications.
                self._backlog_task = loop.create_task(self._refresh_backlog(length))
            self._outcomes.publish()
            await self._clock.sleep(TICK)

    async def refresh_backlog(self) -> None:
        """Read a forwarder's stream length now (nothing for other sinks)."""
        length = getattr(self._sink(), "_stream_length", None)
        if length is not None:
            await self._refresh_backlog(length)

    async def _refresh_backlog(self, length: Callable[[], Coroutine[Any, Any, int]]) -> None:
        try:
            self.backlog = await length()
        except Exception as error:  # Redis down: the last value stays
            log.debug("could not read the stream length for metrics: %s", error)
