"""``vt.instrument(sink)``: OpenTelemetry metrics of a sink (the ``otel`` extra:
``opentelemetry-api`` only, imported on the first call, never by ``import voyado_tracking``).

The instruments, on the meter ``voyado_tracking`` of *meter_provider* (the global one by
default)::

    voyado_tracking.events              counter {event}     outcome (+ reason for dropped)
    voyado_tracking.requests            counter {request}   voyado_tracking.endpoint,
                                                            http.response.status_code | error.type
    voyado_tracking.retries             counter {request}
    voyado_tracking.pending             gauge   {event}     stream
    voyado_tracking.in_flight           gauge   {event}
    voyado_tracking.oldest_pending_age  gauge   s
    voyado_tracking.stream_backlog      gauge   {event}     (forwarders only)
    voyado_tracking.delivery_delay      histogram s         advised buckets DELAY_BUCKETS
    voyado_tracking.batch_size          histogram {event}   advised buckets BATCH_BUCKETS

They are fed by the sink's :class:`~voyado_tracking._observe.SinkObserver` (see there: per
batch and outcome, never per ``enqueue``; gauges from a snapshot the sink publishes on its own
loop). The instruments are made once per meter provider; several sinks on one provider add
to the same counters and histograms, and the gauges show their sum (``oldest_pending_age``
and ``stream_backlog``: the largest).

A sink that builds its buffers itself, the ``Tracker`` (one per process, a new one in each
forked child), is followed through a hook it provides::

    tracker._follow_sinks(hook)

where the Tracker calls ``hook(sink)`` on its loop thread with the sink it has now, if any,
and with each sink it builds later, before that sink takes its first event. ``hook`` watches
that sink (a sink already instrumented is left as it is). The Tracker should let go of a
sink it inherited through ``fork``, so that its last numbers leave the gauges.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ._intake import Lifecycle
from ._observe import BATCH_BUCKETS, DELAY_BUCKETS, SinkObserver
from ._version import __version__

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

__all__ = ["instrument"]

_groups: weakref.WeakKeyDictionary[Any, _Instruments] = weakref.WeakKeyDictionary()
_followed: weakref.WeakSet[Any] = weakref.WeakSet()
_lock = threading.Lock()


def instrument(sink: object, *, meter_provider: MeterProvider | None = None) -> None:
    """Export *sink*'s counters, gauges and histograms as OpenTelemetry metrics.

    *sink*: a ``TrackingBuffer``, ``RedisOutbox``, ``Forwarder`` or ``Tracker``. The counters
    start at the sink's current totals, so they agree with ``stats`` from the start.
    Raises ``ValueError`` if the sink is already instrumented, ``TypeError`` for anything
    else, ``ImportError`` (naming the extra) without ``opentelemetry-api``.
    """
    follow: Callable[[Callable[[Any], None]], None] | None = getattr(
        sink, "_follow_sinks", None)
    if not isinstance(sink, Lifecycle) and follow is None:
        raise TypeError(
            "instrument() takes a TrackingBuffer, RedisOutbox, Forwarder or Tracker, got "
            f"{type(sink).__name__}"
        )
    try:
        from opentelemetry import metrics
    except ImportError as error:
        raise ImportError(
            "vt.instrument() needs the 'otel' extra: pip install 'voyado-tracking[otel]' "
            f"({error})"
        ) from error
    provider = metrics.get_meter_provider() if meter_provider is None else meter_provider
    with _lock:
        if _is_instrumented(sink):
            raise ValueError(f"this {type(sink).__name__} is already instrumented")
        group = _groups.get(provider)
        if group is None:
            group = _groups[provider] = _Instruments(provider.get_meter(
                "voyado_tracking", __version__))
        if follow is not None:
            _followed.add(sink)
    if follow is not None:
        def watch(child: Any) -> None:
            if isinstance(child, Lifecycle) and not _is_instrumented(child):
                group.watch(child)

        follow(watch)
    else:
        assert isinstance(sink, Lifecycle)
        group.watch(sink)


def _is_instrumented(sink: object) -> bool:
    if not isinstance(sink, Lifecycle):
        return sink in _followed
    return any(isinstance(o, _OtelObserver) for o in sink._outcomes.observers)


class _Instruments:
    """The instruments of one meter, and the sinks that feed them."""

    def __init__(self, meter: Meter) -> None:
        from opentelemetry.metrics import Observation

        self._observation = Observation
        self.events = meter.create_counter(
            "voyado_tracking.events", unit="{event}",
            description="Events by outcome: enqueued, recovered, collapsed, sent (written, "
            "for an outbox), dropped (with reason), dead_lettered, spooled (released, for a "
            "forwarder)")
        self.requests = meter.create_counter(
            "voyado_tracking.requests", unit="{request}",
            description="Requests of the sink's client by endpoint and status, or error type "
            "when no answer came")
        self.retries = meter.create_counter(
            "voyado_tracking.retries", unit="{request}",
            description="Failed requests whose events wait to be retried")
        self.delay = meter.create_histogram(
            "voyado_tracking.delivery_delay", unit="s",
            description="Seconds from enqueue to Voyado's 2xx, one value per delivered event",
            explicit_bucket_boundaries_advisory=DELAY_BUCKETS)
        self.batch = meter.create_histogram(
            "voyado_tracking.batch_size", unit="{event}",
            description="Events per request the sink sends",
            explicit_bucket_boundaries_advisory=BATCH_BUCKETS)
        meter.create_observable_gauge(
            "voyado_tracking.pending", [self._pending], unit="{event}",
            description="Events pending or retrying (not in flight), by stream")
        meter.create_observable_gauge(
            "voyado_tracking.in_flight", [self._in_flight], unit="{event}",
            description="Events in requests under way")
        meter.create_observable_gauge(
            "voyado_tracking.oldest_pending_age", [self._oldest], unit="s",
            description="Seconds the oldest pending or retrying event has waited")
        meter.create_observable_gauge(
            "voyado_tracking.stream_backlog", [self._backlog], unit="{event}",
            description="Entries in the forwarder's stream (not yet delivered or "
            "dead-lettered, fleet-wide)")
        # Replaced, never changed in place: the SDK's reader thread iterates it.
        self._sinks: tuple[weakref.ref[_OtelObserver], ...] = ()

    def watch(self, sink: Lifecycle) -> None:
        observer = _OtelObserver(sink, self)
        with _lock:
            self._sinks = (*(r for r in self._sinks if r() is not None), weakref.ref(observer))
        observer.attach()

    def _observers(self) -> list[_OtelObserver]:
        return [o for o in (r() for r in self._sinks) if o is not None and o.alive]

    # -- gauge callbacks (the SDK's reader thread: they read published snapshots only) --------

    def _pending(self, options: CallbackOptions) -> Iterable[Observation]:
        gauges = [o.gauges() for o in self._observers()]
        if not gauges:
            return []
        return [self._observation(sum(g[0] for g in gauges), {"stream": "carts"}),
                self._observation(sum(g[1] for g in gauges), {"stream": "product_views"})]

    def _in_flight(self, options: CallbackOptions) -> Iterable[Observation]:
        gauges = [o.gauges() for o in self._observers()]
        return [self._observation(sum(g[2] for g in gauges))] if gauges else []

    def _oldest(self, options: CallbackOptions) -> Iterable[Observation]:
        gauges = [o.gauges() for o in self._observers()]
        return [self._observation(max(g[3] for g in gauges))] if gauges else []

    def _backlog(self, options: CallbackOptions) -> Iterable[Observation]:
        known = [o.backlog for o in self._observers() if o.backlog is not None]
        return [self._observation(max(known))] if known else []


class _OtelObserver(SinkObserver):
    """One sink's numbers, into the instruments of one meter."""

    __slots__ = ("_attributes", "_instruments")

    def __init__(self, sink: Lifecycle, instruments: _Instruments) -> None:
        super().__init__(sink)
        self._instruments = instruments
        self._attributes: dict[tuple[str, object, object], dict[str, Any]] = {}

    def count(self, outcome: str, reason: str | None, delta: int) -> None:
        key = ("events", outcome, reason)
        attributes = self._attributes.get(key)
        if attributes is None:
            attributes = {"outcome": outcome}
            if reason is not None:
                attributes["reason"] = reason
            self._attributes[key] = attributes
        self._instruments.events.add(delta, attributes)

    def count_retries(self, delta: int) -> None:
        self._instruments.retries.add(delta)

    def request(self, endpoint: str, status: int | None, error_type: str | None) -> None:
        key = (endpoint, status, error_type)
        attributes = self._attributes.get(key)
        if attributes is None:
            attributes = {"voyado_tracking.endpoint": endpoint}
            if status is not None:
                attributes["http.response.status_code"] = status
            else:
                attributes["error.type"] = error_type
            self._attributes[key] = attributes
        self._instruments.requests.add(1, attributes)

    def record_delay(self, seconds: float) -> None:
        self._instruments.delay.record(seconds)

    def record_batch(self, events: int) -> None:
        self._instruments.batch.record(events)
