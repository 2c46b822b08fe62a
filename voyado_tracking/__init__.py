"""voyado_tracking: send cart updates and product views to Voyado Engage, fast and safely.

``import voyado_tracking as vt``; everything public is listed in ``__all__``.
"""

from ._buffer import BufferStats, TrackingBuffer
from ._client import TrackingClient
from ._errors import (
    ApiError,
    AuthenticationError,
    BufferClosedError,
    BufferFullError,
    InvalidEventError,
    RateLimitError,
    TransportError,
    VoyadoError,
)
from ._journal import Journal
from ._models import Cart, CartItem, ProductView, Utm
from ._retry import RetryPolicy
from ._settings import FlushSettings
from ._version import __version__

__all__ = [
    "ApiError",
    "AuthenticationError",
    "BufferClosedError",
    "BufferFullError",
    "BufferStats",
    "Cart",
    "CartItem",
    "FlushSettings",
    "InvalidEventError",
    "Journal",
    "ProductView",
    "RateLimitError",
    "RetryPolicy",
    "TrackingBuffer",
    "TrackingClient",
    "TransportError",
    "Utm",
    "VoyadoError",
    "__version__",
]

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = __name__
del _name, _obj
