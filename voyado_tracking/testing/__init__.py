"""Test helpers: a loopback fake of Voyado's tracking API (and its contact lookup), a pytest
plugin around it, the mails Engage would send for what it received (``fake.engage``,
``EngageMail``), a seeded shop-traffic simulator with the oracle of what Voyado should end
up holding, and ``make_eclub`` for soft-login tokens (needs the ``eclub`` extra)."""

from ._clock import FakeClock
from ._eclub import make_eclub
from ._engage import EngageMail
from ._fake import FakeVoyado
from ._faults import Chaos, Fault, RecordedRequest
from ._shop import latest_carts, shop_traffic

__all__ = [
    "Chaos",
    "EngageMail",
    "FakeClock",
    "FakeVoyado",
    "Fault",
    "RecordedRequest",
    "latest_carts",
    "make_eclub",
    "shop_traffic",
]
