"""The buffer's pure pending store: collapse, thresholds, overflow and accounting, no loop."""

from __future__ import annotations

from typing import Any

import pytest

import voyado_tracking as vt
from voyado_tracking._store import PendingStore

CONTACT = "3fa85f64-5717-4562-b3fc-2c963f66afa6"


def cart(ref: str, time: str, *skus: str) -> vt.Cart:
    return vt.Cart(ref, CONTACT, [vt.CartItem(s, 1) for s in skus], time=time)


def view(item: str) -> vt.ProductView:
    return vt.ProductView(item, CONTACT, time="2024-05-01T10:00:00Z")


def store(**settings: Any) -> tuple[PendingStore, list[tuple[Any, str]]]:
    drops: list[tuple[Any, str]] = []
    defaults: dict[str, Any] = {"max_batch_size": 3, "flush_interval": 5.0}
    defaults.update(settings)
    return PendingStore(vt.FlushSettings(**defaults), lambda e, r: drops.append((e, r))), drops


def pending_carts(s: PendingStore) -> dict[str, vt.Cart]:
    entries = {**s.carts, **s.retry_carts}
    return {ref: entry.cart for ref, entry in entries.items()}


def accounted(s: PendingStore) -> int:
    return s.collapsed + s.sent + s.dropped + s.dead_lettered + s.spooled + s.held


# -- collapse -----------------------------------------------------------------------------


def test_newer_cart_update_replaces_pending_one() -> None:
    s, _ = store()
    s.add(cart("c1", "2024-05-01T10:00:00Z", "a"), now=0)
    newer = cart("c1", "2024-05-01T10:05:00Z", "a", "b")
    s.add(newer, now=1)
    assert pending_carts(s) == {"c1": newer}


def test_older_cart_update_never_replaces_newer() -> None:
    s, _ = store()
    newer = cart("c1", "2024-05-01T10:05:00Z", "a", "b")
    s.add(newer, now=0)
    s.add(cart("c1", "2024-05-01T10:00:00Z", "a"), now=1)
    assert pending_carts(s) == {"c1": newer}


def test_equal_instant_later_arrival_wins() -> None:
    s, _ = store()
    s.add(cart("c1", "2024-05-01T10:00:00Z", "a"), now=0)
    later = cart("c1", "2024-05-01T12:00:00+02:00", "b")  # the same instant
    s.add(later, now=1)
    assert pending_carts(s)["c1"].items == later.items


def test_cart_updates_compare_by_instant_not_wall_clock() -> None:
    """10:00+02:00 is 08:00Z, earlier than 09:30Z, although its wall clock reads later."""
    s, _ = store()
    utc = cart("c1", "2024-05-01T09:30:00Z", "utc")
    s.add(utc, now=0)
    s.add(cart("c1", "2024-05-01T10:00:00+02:00", "plus-two"), now=1)
    assert pending_carts(s)["c1"] == utc


def test_every_replaced_or_discarded_cart_update_counts_as_collapsed() -> None:
    s, _ = store()
    s.add(cart("c1", "2024-05-01T10:00:00Z"), now=0)
    s.add(cart("c1", "2024-05-01T10:01:00Z"), now=0)  # replaces
    s.add(cart("c1", "2024-05-01T09:00:00Z"), now=0)  # discarded
    assert (s.enqueued, s.collapsed, len(s.carts)) == (3, 2, 1)


def test_distinct_carts_do_not_collapse() -> None:
    s, _ = store()
    s.add(cart("c1", "2024-05-01T10:00:00Z"), now=0)
    s.add(cart("c2", "2024-05-01T10:00:00Z"), now=0)
    assert (len(s.carts), s.collapsed) == (2, 0)


def test_product_views_never_collapse() -> None:
    s, _ = store()
    s.add(view("p1"), now=0)
    s.add(view("p1"), now=0)
    assert (len(s.views), s.collapsed) == (2, 0)


# -- thresholds ---------------------------------------------------------------------------


def test_stream_is_due_when_it_reaches_max_batch_size() -> None:
    s, _ = store(max_batch_size=3)
    for i in range(2):
        s.add(view(f"p{i}"), now=0)
    assert not s.due("product_views", now=0)
    s.add(view("p2"), now=0)
    assert s.due("product_views", now=0)


def test_stream_is_due_when_it_reaches_max_batch_bytes() -> None:
    s, _ = store(max_batch_size=500, max_batch_bytes=2048)
    big = vt.ProductView("p", CONTACT, url="https://shop.example/" + "x" * 600)
    s.add(big, now=0)
    s.add(big, now=0)
    assert not s.due("product_views", now=0)
    s.add(big, now=0)
    assert s.due("product_views", now=0)


def test_stream_is_due_only_once_its_oldest_event_waited_flush_interval() -> None:
    s, _ = store(max_batch_size=500, flush_interval=5.0)
    s.add(view("p1"), now=100.0)
    s.add(view("p2"), now=104.0)
    assert not s.due("product_views", now=104.9)
    assert s.due("product_views", now=105.0)
    assert s.due_at("product_views", now=100.0) == 105.0


def test_collapsing_a_cart_does_not_reset_its_age() -> None:
    """A cart updated every second must still be flushed flush_interval after it appeared."""
    s, _ = store(max_batch_size=500, flush_interval=5.0)
    s.add(cart("c1", "2024-05-01T10:00:00Z"), now=0.0)
    for second in range(1, 5):
        s.add(cart("c1", f"2024-05-01T10:00:0{second}Z"), now=float(second))
    assert s.due("carts", now=5.0)


def test_empty_stream_is_never_due() -> None:
    s, _ = store()
    assert not s.due("carts", now=1e9, force=True)
    assert s.due_at("carts", now=0) is None


def test_forced_stream_is_due_below_thresholds() -> None:
    s, _ = store(max_batch_size=500)
    s.add(view("p1"), now=0)
    assert s.due("product_views", now=0, force=True)


def test_add_asks_for_a_wake_up_on_first_event_and_at_the_size_threshold() -> None:
    s, _ = store(max_batch_size=3)
    wakes = [s.add(view(f"p{i}"), now=0) for i in range(4)]
    assert wakes == [True, False, True, False]


# -- batches ------------------------------------------------------------------------------


def test_take_removes_oldest_events_up_to_max_batch_size() -> None:
    s, _ = store(max_batch_size=3)
    views = [view(f"p{i}") for i in range(5)]
    for v in views:
        s.add(v, now=0)
    batch = s.take("product_views", now=0)
    assert batch.events == views[:3]
    assert (len(s.views), s.in_flight) == (2, 3)


def test_take_orders_carts_by_first_arrival() -> None:
    s, _ = store(max_batch_size=2)
    s.add(cart("c1", "2024-05-01T10:00:00Z"), now=0)
    s.add(cart("c2", "2024-05-01T10:00:00Z"), now=1)
    s.add(cart("c1", "2024-05-01T10:09:00Z"), now=2)  # c1 keeps its place
    s.add(cart("c3", "2024-05-01T10:00:00Z"), now=3)
    taken = s.take("carts", now=0)
    assert [c.cart_reference for c in taken.events] == ["c1", "c2"]


def fail(s: PendingStore, batch: Any, *, attempts: int = 1, at: float = 0.0) -> None:
    s.failed(batch, batch.events, attempts=attempts, first_failure=at, not_before=at)


def test_failed_product_views_are_retried_first_and_as_they_were() -> None:
    """No newer event joins a failed batch, so its retry budget stays its own."""
    s, _ = store(max_batch_size=3)
    views = [view(f"p{i}") for i in range(5)]
    for v in views[:2]:
        s.add(v, now=0)
    batch = s.take("product_views", now=0)
    for v in views[2:]:
        s.add(v, now=1)
    s.failed(batch, batch.events, attempts=1, first_failure=1.0, not_before=2.0)
    retried = s.take("product_views", now=2.0)
    assert retried.events == views[:2]
    assert retried.attempts == 1
    assert s.take("product_views", now=2.0).events == views[2:]


def test_failed_batch_waits_for_its_backoff_while_fresh_events_flow() -> None:
    s, _ = store(max_batch_size=2)
    s.add(view("p0"), now=0)
    batch = s.take("product_views", now=0)
    s.failed(batch, batch.events, attempts=1, first_failure=0.0, not_before=10.0)
    s.add(view("p1"), now=1)
    assert [v.item_id for v in s.take("product_views", now=1).events] == ["p1"]
    assert s.take("product_views", now=5) is None
    assert s.due_at("product_views", now=5) == 10.0


def test_failed_cart_loses_to_a_newer_pending_update() -> None:
    s, _ = store()
    s.add(cart("c1", "2024-05-01T10:00:00Z", "old"), now=0)
    batch = s.take("carts", now=0)
    newer = cart("c1", "2024-05-01T10:05:00Z", "new")
    s.add(newer, now=1)
    fail(s, batch)
    assert pending_carts(s) == {"c1": newer}
    assert s.collapsed == 1


def test_failed_cart_loses_to_a_later_pending_update_at_the_same_instant() -> None:
    """Checkout (items=[]) in the same second as the add-to-cart must win when retried."""
    s, _ = store()
    s.add(cart("c1", "2024-05-01T10:00:00Z", "sku"), now=0)
    batch = s.take("carts", now=0)
    checkout = cart("c1", "2024-05-01T10:00:00Z")
    s.add(checkout, now=1)
    fail(s, batch)
    assert pending_carts(s) == {"c1": checkout}


def test_failed_cart_replaces_an_older_pending_update() -> None:
    s, _ = store()
    failed = cart("c1", "2024-05-01T10:05:00Z", "new")
    s.add(failed, now=0)
    batch = s.take("carts", now=0)
    s.add(cart("c1", "2024-05-01T10:00:00Z", "old"), now=1)
    fail(s, batch)
    assert pending_carts(s) == {"c1": failed}


def test_failed_carts_keep_their_retry_budget_and_are_batched_apart() -> None:
    s, _ = store(max_batch_size=10)
    s.add(cart("c1", "2024-05-01T10:00:00Z"), now=0)
    batch = s.take("carts", now=0)
    s.failed(batch, batch.events, attempts=2, first_failure=0.5, not_before=3.0)
    s.add(cart("c2", "2024-05-01T10:00:00Z"), now=1)
    fresh = s.take("carts", now=1)
    assert [c.cart_reference for c in fresh.events] == ["c2"]
    assert fresh.attempts == 0
    retried = s.take("carts", now=3.0)
    assert [c.cart_reference for c in retried.events] == ["c1"]
    assert (retried.attempts, retried.first_failure) == (2, 0.5)


def test_failed_events_keep_their_age() -> None:
    s, _ = store(max_batch_size=500, flush_interval=5.0)
    s.add(cart("c1", "2024-05-01T10:00:00Z"), now=10.0)
    batch = s.take("carts", now=10.0)
    s.add(cart("c1", "2024-05-01T10:01:00Z"), now=14.0)
    fail(s, batch, at=14.0)
    assert s.retry_carts["c1"].first_at == 10.0


def test_settled_tells_whether_events_before_a_mark_are_still_held() -> None:
    s, _ = store(max_batch_size=2)
    s.add(view("p0"), now=0)
    s.add(cart("c0", "2024-05-01T10:00:00Z"), now=0)
    marks = s.marks()
    s.add(view("p1"), now=0)
    assert not s.settled(marks)
    s.take("product_views", now=0)  # p0 and p1 in flight: no longer pending
    s.take("carts", now=0)
    assert s.settled(marks)
    s.add(view("p2"), now=0)
    assert s.settled(marks)  # arrived after the mark


# -- memory bound and overflow ------------------------------------------------------------


def test_drop_oldest_drops_a_product_view_before_an_older_cart() -> None:
    """A cart's latest state drives the abandoned-cart mail: views go first."""
    s, drops = store(max_batch_size=2, max_pending=2)
    first = cart("c1", "2024-05-01T10:00:00Z")
    s.add(first, now=0)
    oldest_view = view("p1")
    s.add(oldest_view, now=1)
    s.add(view("p2"), now=2)
    assert drops == [(oldest_view, "overflow")]
    assert (list(s.carts), [v.item_id for v in s.views], s.dropped) == (["c1"], ["p2"], 1)


def test_drop_oldest_drops_the_oldest_cart_only_when_no_view_is_pending() -> None:
    s, drops = store(max_batch_size=2, max_pending=2)
    first = cart("c1", "2024-05-01T10:00:00Z")
    s.add(first, now=0)
    s.add(cart("c2", "2024-05-01T10:00:00Z"), now=1)
    s.add(cart("c3", "2024-05-01T10:00:00Z"), now=2)
    assert drops == [(first, "overflow")]
    assert list(s.carts) == ["c2", "c3"]


def test_drop_newest_drops_the_incoming_event() -> None:
    s, drops = store(max_batch_size=2, max_pending=2, overflow="drop_newest")
    s.add(view("p1"), now=0)
    s.add(view("p2"), now=0)
    newest = view("p3")
    s.add(newest, now=0)
    assert drops == [(newest, "overflow")]
    assert [v.item_id for v in s.views] == ["p1", "p2"]


def test_raise_policy_raises_buffer_full_and_keeps_everything() -> None:
    s, drops = store(max_batch_size=2, max_pending=2, overflow="raise")
    s.add(view("p1"), now=0)
    s.add(view("p2"), now=0)
    with pytest.raises(vt.BufferFullError):
        s.add(view("p3"), now=0)
    assert (len(s.views), drops, s.enqueued) == (2, [], 2)


def test_in_flight_events_count_against_max_pending_and_are_never_dropped() -> None:
    s, drops = store(max_batch_size=2, max_pending=2)
    s.add(view("p1"), now=0)
    s.add(view("p2"), now=0)
    s.take("product_views", now=0)
    incoming = view("p3")
    s.add(incoming, now=1)
    assert drops == [(incoming, "overflow")]
    assert s.in_flight == 2


def test_update_of_a_pending_cart_never_counts_as_overflow() -> None:
    s, drops = store(max_batch_size=2, max_pending=2, overflow="raise")
    s.add(cart("c1", "2024-05-01T10:00:00Z"), now=0)
    s.add(cart("c2", "2024-05-01T10:00:00Z"), now=0)
    s.add(cart("c1", "2024-05-01T10:01:00Z"), now=0)  # full, but an update: no raise
    assert (drops, len(s.carts)) == ([], 2)


def test_every_event_is_accounted_for_exactly_once() -> None:
    s, _ = store(max_batch_size=3, max_pending=5)
    for i in range(8):
        s.add(view(f"p{i}"), now=float(i))
        s.add(cart(f"c{i % 3}", f"2024-05-01T10:00:0{i}Z"), now=float(i))
    batch = s.take("product_views", now=0)
    assert batch is not None
    s.resolved(len(batch.events) - 1, "sent")
    s.resolved(1, "dead_lettered")
    fail(s, s.take("carts", now=0))
    assert s.dropped > 0
    assert s.collapsed > 0
    assert accounted(s) == s.enqueued == 16


def test_drop_oldest_never_drops_a_retrying_cart() -> None:
    s, drops = store(max_batch_size=2, max_pending=3)
    s.add(cart("c1", "2024-05-01T10:00:00Z"), now=0)
    fail(s, s.take("carts", now=0), at=100.0)  # waits to retry until t=100
    s.add(view("p1"), now=1)
    s.add(view("p2"), now=2)
    s.add(view("p3"), now=3)  # full: the oldest *fresh* event goes
    assert [e.item_id for e, _ in drops] == ["p1"]  # type: ignore[union-attr]
    assert "c1" in s.retry_carts


def test_an_update_of_a_retrying_cart_collapses_into_it() -> None:
    s, _ = store(max_batch_size=1, max_pending=1, overflow="raise")
    s.add(cart("c1", "2024-05-01T10:00:00Z", "old"), now=0)
    fail(s, s.take("carts", now=0), at=100.0)
    newer = cart("c1", "2024-05-01T10:05:00Z", "new")
    s.add(newer, now=1)  # full, but an update of a pending cart: no raise
    assert pending_carts(s) == {"c1": newer}
    assert (s.collapsed, len(s.carts)) == (1, 0)
