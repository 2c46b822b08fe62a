"""Test helpers: a loopback fake of Voyado's tracking API, a pytest plugin around it, and a
seeded shop-traffic simulator with the oracle of what Voyado should end up holding."""

from ._clock import FakeClock
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
    "shop_traffic",
]
