"""Test helpers: a loopback fake of Voyado's tracking API, and a pytest plugin around it."""

from ._clock import FakeClock
from ._fake import Chaos, FakeVoyado, Fault, RecordedRequest

__all__ = ["Chaos", "FakeClock", "FakeVoyado", "Fault", "RecordedRequest"]
