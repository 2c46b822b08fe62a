"""The tuning simulation (``voyado_tracking._tune``): pure, in virtual time, no I/O."""

from __future__ import annotations

import attrs
import pytest
from conftest import cart, view

import voyado_tracking as vt
from voyado_tracking._tune import (
    Limits,
    Outcome,
    Stream,
    Traffic,
    recommend,
    settings_text,
    simulate,
    stream,
    sweep,
    unmet,
)


def views_only(rate: float, **fields: object) -> Traffic:
    return Traffic(events_per_second=rate, cart_share=0.0, **fields)  # type: ignore[arg-type]


def settings(size: int, interval: float) -> vt.FlushSettings:
    return vt.FlushSettings(max_batch_size=size, flush_interval=interval)


# -- traffic ------------------------------------------------------------------------------


def test_same_seed_gives_the_same_traffic_and_longer_runs_extend_shorter_ones() -> None:
    traffic = Traffic(events_per_second=200, seed=4)
    short, long = stream(traffic, 5.0), stream(traffic, 10.0)
    assert short == stream(traffic, 5.0)
    assert long.times[: len(short.times)] == short.times
    assert long.events[: len(short.events)] == short.events


def test_traffic_has_the_asked_rate_and_cart_share() -> None:
    events = stream(Traffic(events_per_second=500, cart_share=0.3), 40.0)
    assert len(events.events) == pytest.approx(500 * 40, rel=0.05)
    assert events.cart_updates / len(events.events) == pytest.approx(0.3, abs=0.02)


def test_each_worker_gets_its_share_of_the_traffic() -> None:
    alone = stream(Traffic(events_per_second=400), 20.0)
    quarter = stream(Traffic(events_per_second=400, workers=4), 20.0)
    assert len(quarter.events) == pytest.approx(len(alone.events) / 4, rel=0.1)


# -- the flush rules in virtual time ------------------------------------------------------


def test_one_event_waits_the_flush_interval_and_one_request() -> None:
    outcome = simulate(settings(500, 2.0), Stream([1.0], [view("p1")], 5.0), service_time=0.05)
    assert outcome.requests == {"carts": 0, "product_views": 1}
    assert outcome.delay_max == pytest.approx(2.05)


def test_batches_are_full_when_traffic_outpaces_the_interval() -> None:
    outcome = simulate(settings(100, 5.0), stream(views_only(1000), 20.0))
    assert outcome.batch_size("product_views") == pytest.approx(100, abs=1)
    assert outcome.requests_per_second == pytest.approx(1000 / 100, rel=0.05)
    assert outcome.delay_p99 < 0.2


def test_light_traffic_sends_once_per_flush_interval() -> None:
    outcome = simulate(settings(500, 2.0), stream(views_only(20), 60.0))
    assert outcome.requests_per_second == pytest.approx(1 / 2.0, rel=0.1)
    assert outcome.delay_max == pytest.approx(2.0 + 0.05, abs=0.01)
    assert outcome.partial > 0


def test_updates_of_a_pending_cart_are_collapsed() -> None:
    carts = Traffic(events_per_second=100, cart_share=1.0, carts=10)
    outcome = simulate(settings(500, 1.0), stream(carts, 30.0))
    # A hundred updates a second over ten active carts (each replaced by a new cart after
    # about eight updates), flushed once a second: few distinct carts per request.
    assert outcome.sent["carts"] / outcome.requests["carts"] < 30
    # Every update is sent or collapsed, but for the last second's, pending at the end.
    assert outcome.collapsed + outcome.sent["carts"] == pytest.approx(
        outcome.cart_updates, abs=40
    )
    assert outcome.collapsed_share > 0.7


def test_carts_go_one_batch_at_a_time_and_views_on_every_connection() -> None:
    slow = 0.1  # seconds per request: one connection carries at most 10 requests/s
    carts = simulate(settings(10, 0.5),
                     stream(Traffic(events_per_second=1000, cart_share=1.0), 10.0),
                     service_time=slow)
    views = simulate(settings(10, 0.5), stream(views_only(1000), 10.0), service_time=slow)
    assert carts.requests_per_second == pytest.approx(10, rel=0.05)
    assert views.requests_per_second == pytest.approx(20, rel=0.05)  # two connections
    assert not carts.keeps_up
    assert not views.keeps_up


def test_fleet_requests_are_the_workers_requests_together() -> None:
    one = simulate(settings(500, 1.0), stream(views_only(40), 60.0))
    four = simulate(settings(500, 1.0), stream(views_only(40, workers=4), 60.0), workers=4)
    # Light traffic: every worker sends about once per interval, so four send four times more.
    assert four.requests_per_second == pytest.approx(4 * one.requests_per_second, rel=0.15)


def test_peak_pending_counts_what_waits_for_the_interval() -> None:
    outcome = simulate(settings(500, 5.0), stream(views_only(50), 60.0))
    assert 200 <= outcome.peak_pending <= 330  # about 5 s of 50 events/s
    assert outcome.memory_bytes == outcome.peak_pending * 800


def test_sweep_covers_every_batch_size_and_interval() -> None:
    outcomes = sweep(views_only(100), batch_sizes=(50, 500), flush_intervals=(1.0, 5.0))
    assert [(o.settings.max_batch_size, o.settings.flush_interval) for o in outcomes] == [
        (50, 1.0), (50, 5.0), (500, 1.0), (500, 5.0)
    ]


def test_a_setting_with_only_full_batches_behaves_the_same_with_longer_intervals() -> None:
    fast = views_only(2000)
    swept = sweep(fast, batch_sizes=(100,), flush_intervals=(0.5, 10.0))
    alone = simulate(settings(100, 10.0), stream(fast, 60.0))
    assert swept[1].requests_per_second == pytest.approx(alone.requests_per_second, rel=0.02)
    assert swept[1].delay_p99 == pytest.approx(alone.delay_p99, abs=0.05)


# -- recommendation -------------------------------------------------------------------------


def outcome(size: int, interval: float, rps: float, p99: float, *, keeps_up: bool = True,
            peak: int = 100) -> Outcome:
    """An outcome of one worker over 100 s with *rps* requests/s and *p99* delay."""
    return Outcome(
        settings=settings(size, interval), workers=1, duration=100.0,
        requests={"carts": 0, "product_views": round(rps * 100)},
        sent={"carts": 0, "product_views": 1000}, events=1000, partial=0, cart_updates=0,
        collapsed=0, delay_p50=p99 / 2, delay_p99=p99, delay_max=p99, peak_pending=peak,
        keeps_up=keeps_up,
    )


def test_recommendation_takes_the_fewest_requests_then_the_shortest_delay() -> None:
    outcomes = [
        outcome(100, 1.0, rps=20.0, p99=0.5),
        outcome(500, 5.0, rps=4.0, p99=5.0),
        outcome(500, 1.0, rps=4.2, p99=1.0),  # within 10% of the fewest, and sooner
        outcome(500, 30.0, rps=1.0, p99=30.0),  # fewest, but too late
    ]
    assert recommend(outcomes, Limits(max_delay=10.0)) is outcomes[2]


def test_no_recommendation_when_every_setting_breaks_a_limit() -> None:
    outcomes = [outcome(500, 1.0, rps=50.0, p99=1.0), outcome(100, 1.0, rps=5.0, p99=20.0)]
    assert recommend(outcomes, Limits(max_delay=10.0, max_requests_per_second=40.0)) is None


def test_saturated_connections_are_never_recommended() -> None:
    outcomes = [outcome(50, 1.0, rps=10.0, p99=0.5, keeps_up=False)]
    assert recommend(outcomes, Limits()) is None
    assert "throughput" in unmet(outcomes, Limits(), None)


def test_unmet_budget_names_the_requests_limit_and_the_fewest() -> None:
    outcomes = [outcome(500, 1.0, rps=60.0, p99=1.0), outcome(100, 1.0, rps=90.0, p99=0.5)]
    text = unmet(outcomes, Limits(max_requests_per_second=40.0), None)
    assert text.startswith("requests/s: no setting keeps the fleet under 40 requests/s")
    assert "60.0/s with FlushSettings(max_batch_size=500, flush_interval=1)" in text


def test_unmet_delay_says_which_longer_delay_would_do() -> None:
    outcomes = [outcome(500, 30.0, rps=1.0, p99=29.2), outcome(500, 1.0, rps=45.0, p99=1.0)]
    text = unmet(outcomes, Limits(max_delay=10.0), None)
    assert text.startswith("delay: no setting under 40 requests/s delivers within 10 s")
    assert "--max-delay 33 would allow it" in text  # 29.2 s is within 0.9x of 33 s


def test_unmet_suggests_fleet_mode_when_one_process_would_meet_the_limits() -> None:
    fleet = [outcome(500, 1.0, rps=6.0, p99=1.2)]
    text = unmet([outcome(500, 1.0, rps=80.0, p99=1.0)], Limits(), fleet)
    assert "Fleet mode" in text
    assert "6.0 requests/s" in text


def test_recommended_settings_raise_max_pending_only_when_the_peak_needs_it() -> None:
    assert settings_text(outcome(500, 1.0, 1.0, 1.0, peak=4_000)) == (
        "FlushSettings(max_batch_size=500, flush_interval=1)"
    )
    assert settings_text(outcome(500, 1.0, 1.0, 1.0, peak=12_345)) == (
        "FlushSettings(max_batch_size=500, flush_interval=1, max_pending=25_000)"
    )


def test_simulation_drives_the_real_store_collapse_rule() -> None:
    # An older update after a newer one is discarded (and counted), as in a live buffer.
    events = Stream([0.0, 0.1, 0.2], [cart("c1", 5), cart("c1", 9), cart("c1", 7)], 5.0)
    outcome = simulate(settings(500, 1.0), events)
    assert (outcome.collapsed, outcome.sent["carts"]) == (2, 1)


def test_traffic_rejects_a_share_outside_0_to_1() -> None:
    with pytest.raises(ValueError, match="cart_share"):
        Traffic(events_per_second=10, cart_share=1.5)
    assert attrs.evolve(Traffic(events_per_second=10), cart_share=1.0).cart_share == 1.0


def test_a_setting_meets_the_limits_only_within_90_percent_of_each() -> None:
    limits = Limits(max_delay=10.0, max_requests_per_second=40.0)
    assert limits.problems(outcome(500, 10.0, rps=1.0, p99=9.96)) == ["delay"]
    assert limits.problems(outcome(500, 1.0, rps=37.0, p99=1.0)) == ["requests/s"]
    assert limits.problems(outcome(500, 5.0, rps=36.0, p99=9.0)) == []
