"""RetryPolicy, Retry-After parsing and the two request gates, with injected clocks and sleeps."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from email.utils import format_datetime

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import voyado_tracking as vt
from voyado_tracking._retry import MAX_RETRY_AFTER, RateLimitGate, TokenBucket, parse_retry_after


class FakeTime:
    """A manual clock whose sleep advances it (and records what was asked)."""

    def __init__(self) -> None:
        self.at = 1000.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.at

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        await self.sleep(timeout)
        return event.is_set()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.at += seconds


# -- RetryPolicy -----------------------------------------------------------------------------


def test_retry_policy_defaults_match_the_design() -> None:
    assert vt.RetryPolicy() == vt.RetryPolicy(
        max_attempts=3, initial_backoff=0.2, max_backoff=5.0, max_elapsed=None
    )
    assert vt.RetryPolicy().max_attempts == 3


def test_retry_policy_is_frozen_and_keyword_only() -> None:
    policy = vt.RetryPolicy()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        policy.max_attempts = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        vt.RetryPolicy(3)  # type: ignore[call-arg]


def test_unbounded_attempts_need_max_elapsed() -> None:
    with pytest.raises(ValueError, match="max_elapsed"):
        vt.RetryPolicy(max_attempts=None)
    assert vt.RetryPolicy(max_attempts=None, max_elapsed=60).max_attempts is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_attempts": True},
        {"max_attempts": 2.0},
        {"initial_backoff": 0},
        {"initial_backoff": float("nan")},
        {"max_backoff": -1},
        {"max_elapsed": 0},
        {"max_backoff": float("inf")},
        {"max_attempts": None, "max_elapsed": float("inf")},
        {"initial_backoff": 2.0, "max_backoff": 1.0},
    ],
)
def test_bad_retry_policy_values_are_value_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"max_|initial_"):
        vt.RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_backoff_ceiling_doubles_up_to_max_backoff() -> None:
    policy = vt.RetryPolicy(initial_backoff=0.5, max_backoff=3.0)
    assert [policy.backoff(n, rng=lambda: 1.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_backoff_is_full_jitter() -> None:
    """The wait is a uniform draw in [0, ceiling]: the rng scales the ceiling."""
    policy = vt.RetryPolicy(initial_backoff=1.0, max_backoff=10.0)
    assert policy.backoff(3, rng=lambda: 0.0) == 0.0
    assert policy.backoff(3, rng=lambda: 0.25) == 1.0


def test_backoff_of_a_huge_retry_number_does_not_overflow() -> None:
    assert vt.RetryPolicy().backoff(10_000, rng=lambda: 1.0) == 5.0


def test_max_attempts_counts_the_first_try() -> None:
    policy = vt.RetryPolicy(max_attempts=3)
    assert policy.allows(1, 0.0, 0.0)
    assert policy.allows(2, 0.0, 0.0)
    assert not policy.allows(3, 0.0, 0.0)


def test_max_elapsed_includes_the_coming_wait() -> None:
    policy = vt.RetryPolicy(max_attempts=None, max_elapsed=10.0)
    assert policy.allows(50, 9.0, 1.0)
    assert not policy.allows(1, 9.0, 1.5)


# -- Retry-After -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("7", 7.0), (" 1.5 ", 1.5), ("0", 0.0), ("-3", 0.0), ("100000", MAX_RETRY_AFTER)],
)
def test_retry_after_delta_seconds(header: str, seconds: float) -> None:
    assert parse_retry_after(header) == seconds


def test_retry_after_http_date_is_relative_to_now() -> None:
    moment = datetime(2030, 1, 1, 12, 0, 30, tzinfo=timezone.utc)
    header = format_datetime(moment, usegmt=True)
    assert parse_retry_after(header, now=moment.timestamp() - 30) == pytest.approx(30.0)


def test_retry_after_date_in_the_past_means_now() -> None:
    header = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert parse_retry_after(header, now=datetime(2030, 1, 1, tzinfo=timezone.utc).timestamp()) == 0


@pytest.mark.parametrize("header", [None, "", "   ", "soon", "nan", "Wed, 99 Foo 2015", "1e"])
def test_unparseable_retry_after_is_none(header: str | None) -> None:
    assert parse_retry_after(header) is None


def test_infinite_retry_after_is_capped() -> None:
    assert parse_retry_after("inf") == MAX_RETRY_AFTER


# -- RateLimitGate ---------------------------------------------------------------------------


async def test_open_gate_does_not_sleep() -> None:
    t = FakeTime()
    await RateLimitGate(t).wait()
    assert t.sleeps == []


async def test_paused_gate_waits_out_the_pause() -> None:
    t = FakeTime()
    gate = RateLimitGate(t)
    gate.pause(2.5)
    assert gate.remaining() == 2.5
    await gate.wait()
    assert sum(t.sleeps) == 2.5
    assert gate.remaining() == 0


async def test_shorter_pause_never_shortens_a_longer_one() -> None:
    t = FakeTime()
    gate = RateLimitGate(t)
    gate.pause(5.0)
    gate.pause(1.0)
    assert gate.remaining() == 5.0


async def test_pause_extended_while_waiting_is_waited_out() -> None:
    t = FakeTime()

    plain_sleep = t.sleep

    async def sleep(seconds: float) -> None:
        await plain_sleep(seconds)
        if len(t.sleeps) == 1:
            gate.pause(3.0)  # another 429 arrives during the wait

    t.sleep = sleep  # type: ignore[method-assign]
    gate = RateLimitGate(t)
    gate.pause(1.0)
    await gate.wait()
    assert t.sleeps == [1.0, 3.0]


def test_pause_is_capped() -> None:
    t = FakeTime()
    gate = RateLimitGate(t)
    gate.pause(10_000)
    assert gate.remaining() == MAX_RETRY_AFTER


async def test_one_pause_holds_every_waiter() -> None:
    gate = RateLimitGate()
    gate.pause(0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.gather(*(gate.wait() for _ in range(5)))
    assert loop.time() - started >= 0.04


# -- TokenBucket -----------------------------------------------------------------------------


def test_bucket_allows_a_burst_of_one_seconds_worth() -> None:
    t = FakeTime()
    bucket = TokenBucket(5, t)
    assert [bucket.reserve() for _ in range(5)] == [0.0] * 5
    assert bucket.reserve() > 0


def test_bucket_spaces_requests_after_the_burst() -> None:
    t = FakeTime()
    bucket = TokenBucket(4, t)
    waits = [bucket.reserve() for _ in range(8)]
    assert waits[:4] == [0.0] * 4
    assert waits[4:] == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_bucket_refills_with_time() -> None:
    t = FakeTime()
    bucket = TokenBucket(2, t)
    bucket.reserve()
    bucket.reserve()
    assert bucket.reserve() > 0
    t.at += 10
    assert [bucket.reserve(), bucket.reserve()] == [0.0, 0.0]


def test_idle_time_never_banks_more_than_one_second_of_burst() -> None:
    t = FakeTime()
    bucket = TokenBucket(3, t)
    t.at += 3600
    assert sum(1 for _ in range(10) if bucket.reserve() == 0.0) == 3


def test_slow_rate_allows_no_burst() -> None:
    t = FakeTime()
    bucket = TokenBucket(0.5, t)
    assert bucket.reserve() == 0.0
    assert bucket.reserve() == pytest.approx(2.0)


async def test_bucket_keeps_the_rate_over_a_window() -> None:
    """N requests beyond the burst take (N / rate) seconds of virtual time."""
    t = FakeTime()
    bucket = TokenBucket(10, t)
    start = t.at
    for _ in range(30):
        await bucket.acquire()
    assert t.at - start == pytest.approx(2.0)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.text(max_size=40),
        st.from_regex(r"\A[A-Z][a-z]{2}, \d{1,2} [A-Z][a-z]{2} \d{1,5} \d\d:\d\d:\d\d [+-]\d{4}\Z"),
        st.floats().map(str),
    ),
    st.floats(min_value=0, max_value=4e9),
)
def test_retry_after_never_raises_and_stays_in_range(header: str, now: float) -> None:
    """A hostile or broken header can only mean "no advice" or a bounded pause."""
    seconds = parse_retry_after(header, now=now)
    assert seconds is None or 0.0 <= seconds <= MAX_RETRY_AFTER
