"""voyado_tracking: send cart updates and product views to Voyado Engage, fast and safely.

``import voyado_tracking as vt``; everything public is listed in ``__all__``. The fleet-mode
names (``RedisOutbox``, ``Forwarder``, ``RedisRateLimiter``) need the ``redis`` extra: they load
on first use and are left out of ``__all__`` so that a star import never needs redis.
"""

from typing import TYPE_CHECKING, Any

from ._buffer import BufferStats, TrackingBuffer
from ._client import TrackingClient
from ._contacts import ContactCache
from ._eclub import SoftLogin, decode_eclub
from ._errors import (
    ApiError,
    AuthenticationError,
    BufferClosedError,
    BufferFullError,
    ClientClosedError,
    ForkedProcessError,
    InvalidEventError,
    InvalidSoftLoginError,
    MultipleMatchesError,
    RateLimitError,
    TransportError,
    VoyadoError,
)
from ._identity import Identity, identify, server_cookie_header
from ._journal import Journal
from ._metrics import instrument
from ._models import Cart, CartItem, ProductView, Utm
from ._retry import RetryPolicy
from ._settings import FlushSettings
from ._sink import EventSink
from ._tracker import Tracker
from ._version import __version__

__all__ = [
    "ApiError",
    "AuthenticationError",
    "BufferClosedError",
    "BufferFullError",
    "BufferStats",
    "Cart",
    "CartItem",
    "ClientClosedError",
    "ContactCache",
    "EventSink",
    "FlushSettings",
    "ForkedProcessError",
    "Identity",
    "InvalidEventError",
    "InvalidSoftLoginError",
    "Journal",
    "MultipleMatchesError",
    "ProductView",
    "RateLimitError",
    "RetryPolicy",
    "SoftLogin",
    "Tracker",
    "TrackingBuffer",
    "TrackingClient",
    "TransportError",
    "Utm",
    "VoyadoError",
    "__version__",
    "decode_eclub",
    "identify",
    "instrument",
    "server_cookie_header",
]

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = __name__
del _name, _obj

if TYPE_CHECKING:
    from .redis import Forwarder as Forwarder
    from .redis import RedisOutbox as RedisOutbox
    from .redis import RedisRateLimiter as RedisRateLimiter

_FLEET_NAMES = ("Forwarder", "RedisOutbox", "RedisRateLimiter")


def __getattr__(name: str) -> Any:
    """The fleet-mode names, imported on first use (they need the ``redis`` extra)."""
    if name in _FLEET_NAMES:
        from . import redis as fleet  # raises an ImportError naming the extra

        value = getattr(fleet, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_FLEET_NAMES})
