"""The sender on its own: a fake send and a fake clock, no network, no sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from conftest import cart, view

import voyado_tracking as vt
from voyado_tracking._outcomes import Outcomes
from voyado_tracking._sender import Sender
from voyado_tracking.testing import FakeClock
from voyado_tracking.testing._clock import settle


class FakeSend:
    """Records each request; *answer(path, ids)* returns an error to raise, or None."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, list[str]]] = []
        self.answer: Callable[[str, list[str]], vt.VoyadoError | None] = lambda p, ids: None
        self.gate: asyncio.Event | None = None  # when set up, requests wait for it
        self.active: dict[str, int] = {"carts": 0, "views": 0}
        self.peak: dict[str, int] = {"carts": 0, "views": 0}

    async def __call__(self, path: str, body: bytes) -> None:
        ids = [e.get("itemId") or e.get("cartReference") for e in orjson.loads(body)]
        kind = "carts" if "carts" in path else "views"
        self.requests.append((kind, ids))
        self.active[kind] += 1
        self.peak[kind] = max(self.peak[kind], self.active[kind])
        try:
            if self.gate is not None:
                await self.gate.wait()
            error = self.answer(path, ids)
            if error is not None:
                raise error
        finally:
            self.active[kind] -= 1


class Rig:
    def __init__(self, **overrides: Any) -> None:
        values: dict[str, Any] = {
            "flush_interval": 5.0,
            "retry": vt.RetryPolicy(max_attempts=None, initial_backoff=1.0, max_backoff=8.0,
                                    max_elapsed=60.0),
        }
        values.update(overrides)
        self.settings = vt.FlushSettings(**values)
        self.clock = FakeClock()
        self.send = FakeSend()
        self.final: list[tuple[str, type[vt.VoyadoError]]] = []
        self.outcomes = Outcomes(self.settings, self.clock, on_dead_letter=self._final)
        self.store = self.outcomes.store
        self.sender = Sender(self.outcomes, self.send, self.settings, clock=self.clock)

    def _final(self, event: Any, error: vt.VoyadoError) -> None:
        self.final.append((getattr(event, "item_id", None) or event.cart_reference,
                           type(error)))

    def add(self, *events: Any) -> None:
        for event in events:
            if self.store.add(event, self.clock.now()):
                self.sender.wake()

    def delivered(self) -> int:
        return self.store.sent


@pytest.fixture
async def rig() -> AsyncIterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(**overrides: Any) -> Rig:
        r = Rig(**overrides)
        r.sender.start()
        made.append(r)
        return r

    yield make
    for r in made:
        await r.sender.stop(0.1)


def server_error(status: int = 503, retry_after: float | None = None) -> vt.ApiError:
    return vt.ApiError(status, "down", retry_after=retry_after)


# -- triggers -----------------------------------------------------------------------------


async def test_a_partial_batch_waits_for_the_flush_interval(rig: Callable[..., Rig]) -> None:
    r = rig(max_batch_size=10, flush_interval=5.0)
    r.add(view("p1"))
    await r.clock.advance(4.9)
    assert r.send.requests == []
    await r.clock.advance(0.2)
    assert r.send.requests == [("views", ["p1"])]


async def test_a_full_batch_goes_at_once(rig: Callable[..., Rig]) -> None:
    r = rig(max_batch_size=3, flush_interval=60.0)
    r.add(view("p1"), view("p2"), view("p3"))
    await settle()
    assert r.send.requests == [("views", ["p1", "p2", "p3"])]


# -- concurrency --------------------------------------------------------------------------


async def test_views_use_at_most_max_concurrent_requests(rig: Callable[..., Rig]) -> None:
    r = rig(max_batch_size=2, max_concurrent_requests=3)
    r.send.gate = asyncio.Event()
    r.add(*(view(f"p{i}") for i in range(20)))
    await settle()
    assert r.send.peak["views"] == 3
    r.send.gate.set()
    r.sender.lanes.forcing += 1
    r.sender.wake()
    await settle(200)
    assert r.delivered() == 20
    assert r.send.peak["views"] == 3


async def test_cart_batches_are_sent_one_at_a_time(rig: Callable[..., Rig]) -> None:
    """So updates of one cart reach Voyado in arrival order, even at equal times."""
    r = rig(max_batch_size=2, max_concurrent_requests=4)
    r.send.gate = asyncio.Event()
    r.add(*(cart(f"c{i}") for i in range(10)))
    await settle()
    assert r.send.peak["carts"] == 1
    r.send.gate.set()
    r.sender.lanes.forcing += 1
    r.sender.wake()
    await settle(200)
    assert r.delivered() == 10
    assert r.send.peak["carts"] == 1


# -- retries ------------------------------------------------------------------------------


async def test_a_503_with_retry_after_delays_the_next_attempt(rig: Callable[..., Rig]) -> None:
    r = rig(max_batch_size=1)
    r.send.answer = lambda p, ids: server_error(503, retry_after=2.0) if len(
        r.send.requests) == 1 else None
    r.add(view("p1"))
    await settle()
    assert len(r.send.requests) == 1
    await r.clock.advance(1.99)  # the backoff draw alone would be at most 1 s
    assert len(r.send.requests) == 1
    await r.clock.advance(0.02)
    assert len(r.send.requests) == 2
    assert r.delivered() == 1


async def test_a_batch_that_keeps_failing_spends_its_own_retry_budget(
    rig: Callable[..., Rig],
) -> None:
    """Successes of other batches must not renew the budget of one that always fails."""
    r = rig(max_batch_size=1, retry=vt.RetryPolicy(
        max_attempts=None, initial_backoff=0.5, max_backoff=1.0, max_elapsed=10.0))
    r.send.answer = lambda p, ids: vt.TransportError("times out") if ids == ["poison"] else None
    r.add(view("poison"))
    for tick in range(40):
        r.add(view(f"good{tick}"))
        await r.clock.advance(0.5)
    assert r.final == [("poison", vt.TransportError)]
    assert r.delivered() == 40


async def test_a_5xx_poison_event_is_isolated_once_the_retry_budget_is_spent(
    rig: Callable[..., Rig],
) -> None:
    r = rig(max_batch_size=8, retry=vt.RetryPolicy(max_attempts=2, initial_backoff=0.1,
                                                    max_backoff=0.2))
    r.send.answer = lambda p, ids: server_error(500) if "p5" in ids else None
    r.add(*(view(f"p{i}") for i in range(8)))
    await r.clock.advance(1.0)
    assert r.final == [("p5", vt.ApiError)]
    assert r.delivered() == 7


async def test_an_outage_outlasting_the_retry_budget_costs_few_extra_requests(
    rig: Callable[..., Rig],
) -> None:
    r = rig(max_batch_size=500, retry=vt.RetryPolicy(max_attempts=2, initial_backoff=0.1,
                                                      max_backoff=0.2))
    r.send.answer = lambda p, ids: server_error(503)
    r.add(*(view(f"p{i}") for i in range(500)))
    await r.clock.advance(1.0)
    assert len(r.final) == 500
    assert len(r.send.requests) <= 2 + 2 * (500).bit_length() + 2


# -- rejected batches ---------------------------------------------------------------------


async def test_one_bad_event_in_500_costs_log_n_extra_requests(rig: Callable[..., Rig]) -> None:
    r = rig(max_batch_size=500)
    r.send.answer = lambda p, ids: vt.ApiError(400, "bad") if "p123" in ids else None
    r.add(*(view(f"p{i}") for i in range(500)))
    await settle(500)
    assert r.final == [("p123", vt.ApiError)]
    assert r.delivered() == 499
    assert len(r.send.requests) <= 1 + 2 * 9


async def test_authentication_failure_is_final_for_the_whole_batch(
    rig: Callable[..., Rig],
) -> None:
    r = rig(max_batch_size=4)
    r.send.answer = lambda p, ids: vt.AuthenticationError(401, "no")
    r.add(*(view(f"p{i}") for i in range(4)))
    await settle()
    assert len(r.final) == 4
    assert len(r.send.requests) == 1


async def test_a_closed_client_is_final_at_once_not_retried(rig: Callable[..., Rig]) -> None:
    from voyado_tracking._errors import ClientClosedError

    r = rig(max_batch_size=2)
    r.send.answer = lambda p, ids: ClientClosedError("this TrackingClient is closed")
    r.add(view("p1"), view("p2"))
    await settle()
    assert [kind for _, kind in r.final] == [ClientClosedError] * 2
    assert r.outcomes.retries == 0


# -- crashes and shutdown -----------------------------------------------------------------


async def test_a_bug_in_the_send_path_is_retried_not_lost(rig: Callable[..., Rig]) -> None:
    r = rig(max_batch_size=1)
    calls = 0

    def crash_once(path: str, ids: list[str]) -> vt.VoyadoError | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return None

    r.send.answer = crash_once
    r.add(view("p1"))
    await r.clock.advance(10.0)
    assert r.delivered() == 1
    assert r.sender.crashes == 1


async def test_stop_hands_back_a_batch_whose_send_had_not_started(
    rig: Callable[..., Rig],
) -> None:
    """Regression: a send task cancelled before its first step lost its batch."""
    r = rig(max_batch_size=1)
    r.add(view("p1"))  # the flusher has not run yet: no send task has started
    r.sender.lanes.forcing += 1
    r.sender.wake()
    await asyncio.sleep(0)  # the flusher starts the send task, which has not run
    await r.sender.stop(0.0)
    assert [v.item_id for v in r.store.drain()] == ["p1"]
    assert r.store.in_flight == 0
