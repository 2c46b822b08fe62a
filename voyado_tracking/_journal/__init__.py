"""The durable journal: what a buffer holds survives ``kill -9`` (opt-in, stdlib sqlite3).

:class:`Journal` is the configuration a user passes to ``TrackingBuffer(..., journal=...)``;
this module holds only that, so importing the library (a forwarder process, say) never loads
SQLite. The buffer's side of a journal, :class:`~voyado_tracking._journal._journaling.Journaling`,
and the writer thread, files and rows below it load when a buffer is given a journal.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final, Literal

import attrs

from .._validators import attrs_int_at_least, attrs_positive

__all__ = ["SYNCHRONOUS", "Durability", "Journal"]

Durability = Literal["process", "machine"]
SYNCHRONOUS: Final[dict[str, str]] = {"process": "NORMAL", "machine": "FULL"}


def _durability(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if value not in SYNCHRONOUS:
        raise ValueError(f"durability must be 'process' or 'machine', got {value!r}")


def _directory(value: object) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"directory must be a path, got {type(value).__name__}")
    return Path(value)


@attrs.frozen
class Journal:
    """Where and how a buffer journals its events (see README, "Durable journal").

    ``durability="process"`` survives the process dying (SQLite ``synchronous=NORMAL``);
    ``"machine"`` also survives power loss (``synchronous=FULL``). Commits are grouped at
    most ``commit_interval`` seconds apart. Past ``max_bytes`` the buffer falls back to
    memory only. Recovered events written more than ``max_age`` seconds ago are dropped.
    """

    directory: Path = attrs.field(converter=_directory)
    durability: Durability = attrs.field(default="process", kw_only=True, validator=_durability)
    commit_interval: float = attrs.field(default=0.05, kw_only=True, validator=attrs_positive)
    max_bytes: int = attrs.field(
        default=1_000_000_000, kw_only=True, validator=attrs_int_at_least(65_536)
    )
    max_age: float = attrs.field(default=86_400.0, kw_only=True, validator=attrs_positive)
