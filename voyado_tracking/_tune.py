"""Flush settings under simulated traffic, in virtual time (behind ``voyado-tracking tune``).

One worker's share of the shop's traffic goes through the real :class:`PendingStore` (the
same collapse, triggers and batches as a live buffer), driven the way the :class:`Sender`
drives it: the store's own ``plan`` decides what goes when (product views use up to
``max_concurrent_requests`` requests at a time and carts one batch at a time), and every
request takes a fixed ``service_time``. No sleeping, no event loop: hundreds of thousands of
events per second of wall time. A fleet of W workers behind a load balancer is W such
workers, each seeing every active cart at 1/W of its update rate, so fleet requests/s are W
times one worker's.

Pure and deterministic: the same arguments give the same numbers.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import ClassVar, Final

import attrs

from ._clock import MonotonicClock
from ._delays import percentile
from ._models import Cart, CartItem, ProductView
from ._outcomes import Outcomes
from ._records import KINDS, Batch, Kind, Lanes
from ._settings import FlushSettings
from ._wire import Event

__all__ = [
    "BATCH_SIZES", "BYTES_PER_EVENT", "FLUSH_INTERVALS", "Outcome", "Stream", "Traffic",
    "Limits", "recommend", "reason", "settings_text", "simulate", "sweep", "unmet",
]

BATCH_SIZES: Final = (50, 100, 250, 500)
FLUSH_INTERVALS: Final = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
# Memory per held event: the benchmarks' bound for a buffered product view.
BYTES_PER_EVENT: Final = 800
SERVICE_TIME: Final = 0.05  # seconds per request, Voyado's answer included
CART_GAP: Final = 30.0  # default: each active cart is updated about every 30 s
UPDATES_PER_CART: Final = 8  # mean updates before a cart is checked out or abandoned

_START: Final = datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc)
_CONTACT: Final = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
_VIEW_POOL: Final = 512  # distinct product views, reused (the store never compares them)


@attrs.frozen(kw_only=True)
class Traffic:
    """A shop's traffic: events/s over the whole fleet, the share that are cart updates,
    the active carts they spread over (default: each updated about every 30 s) and the
    workers (processes, each with its own buffer) a load balancer spreads them over."""

    events_per_second: float = attrs.field(validator=attrs.validators.gt(0))
    cart_share: float = attrs.field(
        default=0.3, validator=[attrs.validators.ge(0), attrs.validators.le(1)]
    )
    carts: int | None = None
    workers: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    seed: int = 0

    @property
    def active_carts(self) -> int:
        if self.carts is not None:
            return self.carts
        return max(1, round(self.events_per_second * self.cart_share * CART_GAP))


@attrs.frozen
class Stream:
    """One worker's events and their arrival times (seconds from the start)."""

    times: list[float]
    events: list[Event]
    duration: float

    @property
    def cart_updates(self) -> int:
        return sum(1 for event in self.events if type(event) is Cart)


def stream(traffic: Traffic, duration: float) -> Stream:
    """One worker's share of *traffic* for *duration* seconds: Poisson arrivals; each cart
    update goes to a random active cart, which is replaced by a new one after about
    ``UPDATES_PER_CART`` updates (checked out or abandoned)."""
    rng = random.Random(f"tune-{traffic.seed}")
    rate = traffic.events_per_second / traffic.workers
    views = [ProductView(f"SKU-{n:04d}", _CONTACT, time=_START) for n in range(_VIEW_POOL)]
    active = traffic.active_carts
    slots = [f"cart-{n}" for n in range(active)]
    items: dict[str, int] = {}
    next_cart = active
    times: list[float] = []
    events: list[Event] = []
    t = rng.expovariate(rate)
    while t < duration:
        times.append(t)
        if rng.random() < traffic.cart_share:
            slot = rng.randrange(active)
            reference = slots[slot]
            count = items[reference] = items.get(reference, 0) + 1
            events.append(Cart(reference, _CONTACT, [CartItem("SKU-0001", count)],
                               time=_START + timedelta(seconds=t)))
            if rng.random() < 1 / UPDATES_PER_CART:
                slots[slot] = f"cart-{next_cart}"
                next_cart += 1
                del items[reference]
        else:
            events.append(views[len(times) % _VIEW_POOL])
        t += rng.expovariate(rate)
    return Stream(times, events, duration)


@attrs.frozen(kw_only=True)
class Outcome:
    """What one setting did with the traffic of a measured window (events that arrived in
    its first ``duration`` seconds; traffic goes on after it, so no tail is measured).
    Requests/s are the whole fleet's; the rest is one worker's."""

    settings: FlushSettings
    workers: int
    duration: float
    requests: dict[str, int]  # by stream
    sent: dict[str, int]  # events, by stream
    events: int  # arrived in the window
    partial: int  # requests with fewer than max_batch_size events (sent on time, not size)
    cart_updates: int
    collapsed: int
    delay_p50: float
    delay_p99: float
    delay_max: float
    peak_pending: int  # pending and in flight
    peak_pending_carts: int = 0  # carts waiting (not in flight)
    # Requests go out as fast as events come: at the window's end, the oldest pending event
    # has waited at most an interval (and a second), and the connections were not all busy.
    keeps_up: bool = True

    @property
    def requests_per_second(self) -> float:
        return self.workers * sum(self.requests.values()) / self.duration

    @property
    def memory_bytes(self) -> int:
        return self.peak_pending * BYTES_PER_EVENT

    @property
    def collapsed_share(self) -> float:
        return self.collapsed / self.cart_updates if self.cart_updates else 0.0

    def batch_size(self, kind: Kind) -> float:
        """The mean events per request of a stream (0.0 if it sent nothing)."""
        requests = self.requests[kind]
        return self.sent[kind] / requests if requests else 0.0


class _VirtualTime(MonotonicClock):
    """The simulation's clock: the time of the step being simulated (nothing waits on it)."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at = 0.0

    def now(self) -> float:
        return self.at


class _Flusher:
    """A live sender's scheduling in virtual time: the store plans what to send
    (:meth:`PendingStore.plan`, the rule every driver uses), requests take
    ``service_time`` and always succeed. Counts what starts before ``window``."""

    def __init__(self, settings: FlushSettings, service_time: float, window: float) -> None:
        self.service_time = service_time
        self.window = window
        self.time = _VirtualTime()
        self.outcomes = Outcomes(settings, self.time)
        self.store = self.outcomes.store
        self.lanes = Lanes.for_settings(settings)
        self.limit = self.lanes.limit
        self.wake_at = math.inf  # when the store said to look again
        self.in_flight: list[tuple[float, int, Batch]] = []  # (done at, order, batch)
        self.started = 0
        self.requests: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.sent: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.partial = 0
        self.delays: list[float] = []
        self.peak = self.peak_carts = 0

    def next_done(self) -> float:
        return self.in_flight[0][0] if self.in_flight else math.inf

    def step(self, now: float) -> None:
        """Finish the requests done by *now*, then start what the store plans."""
        store, lanes = self.store, self.lanes
        self.time.at = now
        if now < self.window:
            self.peak = max(self.peak, store.held)
            self.peak_carts = max(self.peak_carts, store.pending_carts)
        while self.in_flight and self.in_flight[0][0] <= now:
            done_at, _, batch = heapq.heappop(self.in_flight)
            self.outcomes.sent(batch, batch.events)
            window = self.window
            self.delays.extend([done_at - at for at in batch.times_of(batch.events)
                                if at < window])
            lanes.done(batch.kind)
            store.landed(batch)
        batches, wake_at = store.plan(now, lanes)
        for batch in batches:
            self._start(batch, now)
        self.wake_at = math.inf if wake_at is None else wake_at

    def _start(self, batch: Batch, now: float) -> None:
        self.started += 1
        heapq.heappush(self.in_flight, (now + self.service_time, self.started, batch))
        if now < self.window:
            self.requests[batch.kind] += 1
            self.sent[batch.kind] += len(batch.events)
            self.partial += len(batch.events) < self.store.settings.max_batch_size


def simulate(
    settings: FlushSettings, traffic: Stream, *, duration: float | None = None,
    workers: int = 1, service_time: float = SERVICE_TIME,
) -> Outcome:
    """Run one worker's *traffic* through a store with *settings*, until all is delivered;
    measure the events that arrive in the first *duration* seconds (default: all of them).

    ``max_pending`` is lifted (the peak is measured, not bounded) so nothing is dropped.
    """
    window = traffic.duration if duration is None else duration
    flusher = _Flusher(attrs.evolve(settings, max_pending=2**62), service_time, window)
    store = flusher.store
    times = traffic.times
    in_window = bisect.bisect_left(times, window)
    _run(flusher, times, traffic.events, 0, in_window, drain=False)
    collapsed, oldest = store.collapsed, store.oldest_pending_at()
    # Traffic goes on for two intervals, so the window's last events leave as they would in
    # the middle of the day (not alone, by the time trigger); then everything is delivered.
    end = bisect.bisect_left(times, window + 2 * settings.flush_interval + 1)
    _run(flusher, times, traffic.events, in_window, end, drain=True)
    delays = sorted(flusher.delays)
    return Outcome(
        settings=settings, workers=workers, duration=window,
        requests=flusher.requests, sent=flusher.sent, events=in_window,
        partial=flusher.partial,
        cart_updates=sum(1 for e in traffic.events[:in_window] if type(e) is Cart),
        collapsed=collapsed,
        delay_p50=percentile(delays, 0.5) if delays else 0.0,
        delay_p99=percentile(delays, 0.99) if delays else 0.0,
        delay_max=delays[-1] if delays else 0.0,
        peak_pending=flusher.peak, peak_pending_carts=flusher.peak_carts,
        keeps_up=_keeps_up(flusher, window, oldest),
    )


def _keeps_up(flusher: _Flusher, window: float, oldest: float | None) -> bool:
    busy = sum(flusher.requests.values()) * flusher.service_time / (window * flusher.limit)
    waited = 0.0 if oldest is None else window - oldest
    return busy < 0.97 and waited <= flusher.store.settings.flush_interval + 1.0


def _run(
    flusher: _Flusher, times: list[float], events: list[Event], i: int, end: int, *,
    drain: bool,
) -> None:
    """Add events ``i:end`` at their times, with the flusher's decisions in between; with
    *drain*, then run on until everything is delivered."""
    add = flusher.store.add
    while True:
        until = min(flusher.wake_at, flusher.next_done())
        while i < end and times[i] < until:  # the hot loop: intake between decisions
            at = times[i]
            wake = add(events[i], at)
            i += 1
            if wake:  # a new stream or a threshold: the sender looks at once
                flusher.step(at)
                until = min(flusher.wake_at, flusher.next_done())
        if i >= end and not drain:
            return
        if until == math.inf:
            return
        flusher.step(until)


def duration_for(traffic: Traffic, flush_interval: float) -> float:
    """Measured seconds of traffic: a few intervals, fewer at very high rates."""
    rate = traffic.events_per_second / traffic.workers
    return max(4 * flush_interval + 2, min(60.0, max(5.0, 150_000 / rate)))


def sweep(
    traffic: Traffic,
    *,
    base: FlushSettings | None = None,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    flush_intervals: Sequence[float] = FLUSH_INTERVALS,
    service_time: float = SERVICE_TIME,
) -> list[Outcome]:
    """Every combination of *batch_sizes* and *flush_intervals* over the same traffic.

    A setting whose batches were all full (the size trigger always came first) behaves the
    same with any longer interval; those are not simulated again.
    """
    base = FlushSettings() if base is None else base
    intervals = sorted(flush_intervals)
    events = stream(traffic, 0.0)
    outcomes = []
    for size in batch_sizes:
        full: Outcome | None = None
        for interval in intervals:
            settings = attrs.evolve(base, max_batch_size=size, flush_interval=interval,
                                    max_pending=max(base.max_pending, size))
            if full is not None:
                outcomes.append(attrs.evolve(full, settings=settings))
                continue
            duration = duration_for(traffic, interval)
            if events.duration < duration + 2 * interval + 1:
                # The same seed gives the same events: a longer stream extends a shorter one.
                events = stream(traffic, duration + 2 * interval + 1)
            outcome = simulate(settings, events, duration=duration, workers=traffic.workers,
                               service_time=service_time)
            if outcome.partial == 0:
                full = outcome
            outcomes.append(outcome)
    return outcomes


@attrs.frozen(kw_only=True)
class Limits:
    """What a shop asks of its settings: a p99 delivery delay and the API key's budget of
    requests/s for the whole fleet, each met with ``HEADROOM`` (at most 0.9x: retries, bursts)."""

    HEADROOM: ClassVar[float] = 0.9
    max_delay: float = 10.0
    max_requests_per_second: float = 40.0

    def problems(self, outcome: Outcome) -> list[str]:
        """What *outcome* breaks: ``"saturated"`` (the connections cannot keep up with the
        events, or only just), ``"requests/s"``, ``"delay"``; empty when it meets the
        limits."""
        problems = []
        if not outcome.keeps_up:
            problems.append("saturated")
        if outcome.requests_per_second > self.HEADROOM * self.max_requests_per_second:
            problems.append("requests/s")
        if outcome.delay_p99 > self.HEADROOM * self.max_delay:
            problems.append("delay")
        return problems


def recommend(outcomes: Sequence[Outcome], limits: Limits) -> Outcome | None:
    """The setting to use, or None when none meets *limits*.

    Of the settings that meet the limits: the fewest requests/s (within 10%: headroom for
    retries and bursts), then the shortest p99 delay, then the smaller batch and interval
    (the same numbers with less waiting when traffic is lighter than simulated).
    """
    meeting = [o for o in outcomes if not limits.problems(o)]
    if not meeting:
        return None
    fewest = min(o.requests_per_second for o in meeting)
    close = [o for o in meeting if o.requests_per_second <= fewest * 1.1]
    return min(close, key=lambda o: (o.delay_p99, o.settings.max_batch_size,
                                     o.settings.flush_interval))


def settings_text(outcome: Outcome, base: FlushSettings | None = None) -> str:
    """``FlushSettings(...)`` for *outcome*, with ``max_pending`` when the default's
    headroom (twice the peak) is not enough."""
    base = FlushSettings() if base is None else base
    s = outcome.settings
    text = f"FlushSettings(max_batch_size={s.max_batch_size}, flush_interval={s.flush_interval:g}"
    if 2 * outcome.peak_pending > base.max_pending:
        text += f", max_pending={_round_up(2 * outcome.peak_pending):_}"
    return text + ")"


def _round_up(n: int) -> int:
    step = int(10 ** max(0, len(str(n)) - 2))
    return -(-n // step) * step


def reason(outcome: Outcome, limits: Limits) -> str:
    """One line: why *outcome* is recommended."""
    share = outcome.requests_per_second / limits.max_requests_per_second
    return (
        f"the fewest requests ({outcome.requests_per_second:.1f}/s, {share:.0%} of the "
        f"{limits.max_requests_per_second:g}/s budget) with the shortest p99 delay among "
        f"them ({outcome.delay_p99:.2f} s; limit {limits.max_delay:g} s, 10% headroom)"
    )


def unmet(
    outcomes: Sequence[Outcome], limits: Limits, fleet: Sequence[Outcome] | None,
    service_time: float = SERVICE_TIME,
) -> str:
    """Why no setting meets *limits*, and what would (fleet mode, a longer delay).

    *fleet* is the sweep of the same traffic through one process (fleet mode: the workers
    write to Redis, a forwarder sends for all), or None with a single worker.
    """
    budget, delay = limits.max_requests_per_second, limits.max_delay
    fewest = min(outcomes, key=lambda o: (o.requests_per_second, o.delay_p99))
    under = [o for o in outcomes if not {"saturated", "requests/s"} & set(limits.problems(o))]
    if not any(o.keeps_up for o in outcomes):
        what = (
            f"throughput: with requests taking {service_time:g} s and "
            f"max_concurrent_requests={fewest.settings.max_concurrent_requests}, no setting "
            "sends as fast as events arrive (a backlog grows without end)."
        )
        size = max(o.settings.max_batch_size for o in outcomes)
        needed = (fewest.events - fewest.collapsed) * fewest.workers / fewest.duration / size
        what += (
            f" Full batches of {size} would take about {needed:.0f} requests/s: "
            + ("raise max_concurrent_requests." if needed <= budget
               else f"more than the {budget:g}/s budget of one API key.")
        )
    elif not under:
        what = (
            f"requests/s: no setting keeps the fleet under {budget:g} requests/s with 10% "
            f"headroom; the fewest "
            f"is {fewest.requests_per_second:.1f}/s with {settings_text(fewest)}."
        )
    else:
        best = min(under, key=lambda o: o.delay_p99)
        what = (
            f"delay: no setting under {budget:g} requests/s delivers within {delay:g} s "
            f"(p99, with 10% headroom); the shortest is {best.delay_p99:.1f} s with "
            f"{settings_text(best)}. --max-delay "
            f"{math.ceil(best.delay_p99 / limits.HEADROOM):d} would allow it."
        )
    if fleet is None:
        return what
    chosen = recommend(fleet, limits)
    if chosen is not None:
        return (
            f"{what} Fleet mode (workers write to a RedisOutbox, a Forwarder sends full "
            f"batches for all) would meet the limits: {chosen.requests_per_second:.1f} "
            f"requests/s, p99 {chosen.delay_p99:.2f} s with {settings_text(chosen)}."
        )
    least = min(fleet, key=lambda o: o.requests_per_second)
    return (
        f"{what} Even fleet mode would need {least.requests_per_second:.1f} requests/s "
        f"(p99 {least.delay_p99:.1f} s)."
    )
