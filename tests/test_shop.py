"""The shop-traffic simulator and the latest-per-cart oracle of voyado_tracking.testing."""

from __future__ import annotations

import itertools
from collections import Counter

from conftest import CONTACT, cart

import voyado_tracking as vt
from voyado_tracking.testing import latest_carts, shop_traffic


def test_the_same_seed_gives_the_same_events() -> None:
    assert shop_traffic(3, events=2_000, shoppers=40) == shop_traffic(3, events=2_000,
                                                                      shoppers=40)


def test_another_seed_gives_other_events() -> None:
    assert shop_traffic(3, events=500) != shop_traffic(4, events=500)


def test_traffic_has_exactly_the_requested_number_of_events() -> None:
    assert len(shop_traffic(1, events=1_234, shoppers=7)) == 1_234


def test_events_come_in_order_of_their_instant() -> None:
    events = shop_traffic(1, events=3_000, shoppers=50)
    assert all(a.time <= b.time for a, b in itertools.pairwise(events))
    assert len({e.time.utcoffset() for e in events}) > 1  # mixed offsets, compared by instant


def test_every_product_view_is_distinct() -> None:
    views = [e for e in shop_traffic(2, events=5_000, shoppers=30)
             if isinstance(e, vt.ProductView)]
    assert views
    assert max(Counter(views).values()) == 1


def test_checkouts_are_sent_as_emptied_carts() -> None:
    final = latest_carts(shop_traffic(1, events=5_000, shoppers=50))
    assert any(not c.items for c in final.values())
    assert any(c.items for c in final.values())  # and some carts are abandoned


def test_view_share_zero_gives_cart_updates_only() -> None:
    events = shop_traffic(1, events=1_000, shoppers=10, view_share=0.0)
    assert all(isinstance(e, vt.Cart) for e in events)


def test_latest_cart_is_chosen_by_instant_not_by_clock_reading() -> None:
    """10:00+02:00 is 08:00Z, earlier than 09:30Z."""
    later = cart("c-1", 0, "B", time="2026-11-27T09:30:00Z")
    earlier = cart("c-1", 0, "A", time="2026-11-27T10:00:00+02:00")
    assert latest_carts([later, earlier]) == {"c-1": later}


def test_of_equal_instants_the_later_update_in_sequence_wins() -> None:
    first = cart("c-1", 0, "A", time="2026-11-27T10:00:00+01:00")
    second = cart("c-1", 0, time="2026-11-27T09:00:00Z")
    assert latest_carts([first, second]) == {"c-1": second}


def test_the_oracle_ignores_product_views() -> None:
    assert latest_carts([vt.ProductView("SKU-1", CONTACT)]) == {}
