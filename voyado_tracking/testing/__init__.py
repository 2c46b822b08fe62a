"""Test helpers: a loopback fake of Voyado's tracking API, and a pytest plugin around it."""

from ._fake import Chaos, FakeVoyado, Fault, RecordedRequest

__all__ = ["Chaos", "FakeVoyado", "Fault", "RecordedRequest"]
