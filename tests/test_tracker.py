"""vt.Tracker, the synchronous facade: a loop thread started on first use, a deque hand-off,
awaited calls from sync code, bounded flush/sync/close. Against a FakeVoyado on its own
thread (the Tracker's callers block)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from conftest import CONTACT, cart, fast_settings, view, wait_for

import voyado_tracking as vt
from voyado_tracking.testing import FakeVoyado


def tracker_for(fake: FakeVoyado, **options: object) -> vt.Tracker:
    options.setdefault("settings", fast_settings())
    return vt.Tracker(fake.url, fake.api_key, **options)  # type: ignore[arg-type]


def tracker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "voyado_tracking tracker"]


def test_constructor_starts_no_thread(threaded_fake: FakeVoyado) -> None:
    before = len(tracker_threads())
    tracker = tracker_for(threaded_fake)
    assert len(tracker_threads()) == before
    tracker.close()


def test_enqueue_then_flush_delivers_every_event(threaded_fake: FakeVoyado) -> None:
    with tracker_for(threaded_fake) as tracker:
        for i in range(300):
            tracker.enqueue(view(f"p{i}"))
        tracker.enqueue(cart("c1", 1, "sku"))
        tracker.flush(10)
        assert len(threaded_fake.product_views) == 300
        assert set(threaded_fake.carts) == {"c1"}


def test_close_delivers_what_is_queued(threaded_fake: FakeVoyado) -> None:
    tracker = tracker_for(threaded_fake, settings=fast_settings(flush_interval=3600))
    for i in range(10):
        tracker.enqueue(view(f"p{i}"))
    tracker.close()
    assert len(threaded_fake.product_views) == 10
    assert tracker.closed


def test_enqueue_after_close_raises_buffer_closed(threaded_fake: FakeVoyado) -> None:
    tracker = tracker_for(threaded_fake)
    tracker.enqueue(view("p1"))
    tracker.close()
    with pytest.raises(vt.BufferClosedError):
        tracker.enqueue(view("p2"))
    tracker.close()  # idempotent


def test_enqueue_after_close_raises_even_if_never_started(threaded_fake: FakeVoyado) -> None:
    tracker = tracker_for(threaded_fake)
    tracker.close()
    with pytest.raises(vt.BufferClosedError):
        tracker.enqueue(view("p1"))


def test_enqueue_rejects_what_is_not_an_event(threaded_fake: FakeVoyado) -> None:
    with tracker_for(threaded_fake) as tracker, pytest.raises(TypeError, match="dict"):
        tracker.enqueue({"itemId": "p1"})  # type: ignore[arg-type]


def test_overflow_raise_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="overflow='raise'"):
        vt.Tracker("https://tenant.voyado.com", "key",
                   settings=vt.FlushSettings(overflow="raise"))


def test_a_session_in_client_options_is_refused() -> None:
    with pytest.raises(ValueError, match="session"):
        vt.Tracker("https://tenant.voyado.com", "key", client_options={"session": object()})


def test_a_bad_client_option_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="timeout"):
        vt.Tracker("https://tenant.voyado.com", "key", client_options={"timeout": -1})


def test_repr_never_shows_the_api_key() -> None:
    tracker = vt.Tracker("https://tenant.voyado.com", "s3cr3t-key")
    assert "s3cr3t" not in repr(tracker)
    assert repr(tracker).startswith("<voyado_tracking.Tracker not started")


def test_send_delivers_one_event_now(threaded_fake: FakeVoyado) -> None:
    with tracker_for(threaded_fake) as tracker:
        tracker.send(view("p1"))
        assert [v.item_id for v in threaded_fake.product_views] == ["p1"]
        tracker.send(cart("c1", 1, "a"))
        assert set(threaded_fake.carts) == {"c1"}


def test_send_raises_the_clients_typed_errors(threaded_fake: FakeVoyado) -> None:
    with vt.Tracker(threaded_fake.url, "wrong-key") as tracker, pytest.raises(
        vt.AuthenticationError
    ):
        tracker.send(view("p1"))


def test_send_past_its_timeout_raises_timeout_error(threaded_fake: FakeVoyado) -> None:
    threaded_fake.latency = 2.0
    with tracker_for(threaded_fake) as tracker, pytest.raises(TimeoutError, match="send"):
        tracker.send(view("p1"), timeout=0.2)


def test_flush_past_its_timeout_raises_timeout_error(threaded_fake: FakeVoyado) -> None:
    threaded_fake.latency = 2.0
    with tracker_for(threaded_fake) as tracker:
        tracker.enqueue(view("p1"))
        with pytest.raises(TimeoutError, match="flush"):
            tracker.flush(timeout=0.2)
        threaded_fake.latency = 0.0


def test_find_contact_id_from_sync_code(threaded_fake: FakeVoyado) -> None:
    threaded_fake.add_contact(CONTACT, email="a@example.com")
    with tracker_for(threaded_fake) as tracker:
        assert tracker.find_contact_id(email="a@example.com") == CONTACT
        assert tracker.find_contact_id(email="nobody@example.com") is None


def test_asend_and_afind_contact_id_from_another_event_loop(threaded_fake: FakeVoyado) -> None:
    threaded_fake.add_contact(CONTACT, email="a@example.com")

    async def async_view(tracker: vt.Tracker) -> str | None:
        await tracker.asend(view("p1"))
        return await tracker.afind_contact_id(email="a@example.com")

    with tracker_for(threaded_fake) as tracker:
        assert asyncio.run(async_view(tracker)) == CONTACT
        assert [v.item_id for v in threaded_fake.product_views] == ["p1"]


def test_stats_count_events_still_in_the_hand_off(threaded_fake: FakeVoyado) -> None:
    tracker = tracker_for(threaded_fake, settings=fast_settings(flush_interval=3600))
    for i in range(5):
        tracker.enqueue(view(f"p{i}"))
    stats = tracker.stats
    assert stats.enqueued == 5
    assert isinstance(stats, vt.BufferStats)
    assert stats.pending_product_views == 5
    tracker.close()


def test_stats_before_first_use_are_zero() -> None:
    tracker = vt.Tracker("https://tenant.voyado.com", "key")
    assert tracker.stats.enqueued == 0
    assert not tracker_threads() or all(t.is_alive() for t in tracker_threads())


def test_hand_off_past_max_pending_drops_newest_and_counts_it(
    closed_port_url: str,
) -> None:
    """With the loop unable to deliver, the deque plus the buffer hold at most max_pending."""
    dropped: list[str] = []
    settings = fast_settings(max_pending=10, max_batch_size=10, overflow="drop_newest",
                             flush_interval=3600)
    tracker = vt.Tracker(closed_port_url, "key", settings=settings,
                         on_drop=lambda event, reason: dropped.append(reason))
    for i in range(30):
        tracker.enqueue(view(f"p{i}"))
    stats = tracker.stats
    assert stats.enqueued == 30
    assert stats.dropped == 20
    assert stats.pending_product_views == 10
    wait_for(lambda: len(dropped) == 20)
    assert set(dropped) == {"overflow"}
    tracker.close(timeout=0.5)


def test_sync_without_journal_returns_at_once(threaded_fake: FakeVoyado) -> None:
    with tracker_for(threaded_fake) as tracker:
        tracker.enqueue(view("p1"))
        tracker.sync(timeout=1)


def test_sync_with_a_journal_returns_once_committed(
    threaded_fake: FakeVoyado, tmp_path: Path
) -> None:
    journal = vt.Journal(tmp_path / "journal")
    with tracker_for(threaded_fake, journal=journal,
                     settings=fast_settings(flush_interval=3600)) as tracker:
        for i in range(20):
            tracker.enqueue(view(f"p{i}"))
        tracker.sync(timeout=10)
        assert list((tmp_path / "journal").glob("*"))


def test_journal_and_redis_url_cannot_be_combined(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="journal and redis_url"):
        vt.Tracker("https://tenant.voyado.com", "key", journal=vt.Journal(tmp_path),
                   redis_url="redis://127.0.0.1:1")
