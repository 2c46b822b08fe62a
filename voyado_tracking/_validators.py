"""Shared checks for settings and constructor arguments: one rule, one message, everywhere.

Each check raises ``ValueError`` (``TypeError`` for a value of the wrong kind where Python
code would expect it) naming the argument. ``bool`` is never accepted as a number: ``True``
is an ``int`` to Python but never what a user meant by "3 seconds".
"""

from __future__ import annotations

import math
from typing import Any

import attrs

__all__ = [
    "attrs_int_at_least",
    "attrs_optional_positive",
    "attrs_positive",
    "check_int_at_least",
    "check_positive",
]


def check_positive(name: str, value: object) -> float:
    """A finite number > 0 (infinity would make a wait or a budget endless)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_int_at_least(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def attrs_positive(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_positive(attribute.name, value)


def attrs_optional_positive(
    instance: object, attribute: attrs.Attribute[Any], value: object
) -> None:
    if value is not None:
        check_positive(attribute.name, value)


def attrs_int_at_least(minimum: int) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        check_int_at_least(attribute.name, value, minimum)

    return check
