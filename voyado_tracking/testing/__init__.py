"""Test helpers: a loopback fake of Voyado's tracking API (and its contact lookup), a pytest
plugin around it, a seeded shop-traffic simulator with the oracle of what Voyado should end
up holding, and ``make_eclub`` for soft-login tokens (needs the ``eclub`` extra)."""

from ._clock import FakeClock
from ._eclub import make_eclub
from ._fake import FakeVoyado
from ._faults import Chaos, Fault, RecordedRequest
from ._shop import latest_carts, shop_traffic

__all__ = [
    "Chaos",
    "FakeClock",
    "FakeVoyado",
    "Fault",
    "RecordedRequest",
    "latest_carts",
    "make_eclub",
    "shop_traffic",
]
