"""The journal writer's bookkeeping and what the loop and the writer thread say to each other.

The loop talks to the writer through one deque (see ``_journal._writer``). On it: the events
to write (a ``ProductView`` or ``Cart`` itself), :class:`Mark` objects for ``sync()``, and
the frozen ops below (:class:`Delete`, :class:`Forget`, :class:`Recovered`, :class:`Want`),
which the writer tells apart with a ``match``. The writer answers with :class:`Loaded`
events read from a :class:`Source`.

Only the writer thread changes ``Rows``, ``Round`` and ``Step`` (the loop reads ``Rows.get``
at close and ``Mark`` flags). A view's row is its number among the views the writer took; the
map is keyed by ``id(view)``, which stays valid while the map holds it (see
``_journal._writer``).
Everything here is bulk work in C-level calls where it can be: the writer shares the GIL with
the loop. No module of the journal imports one that imports it back: this one needs only the
files (``_journal._db``) and the models.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Final, NamedTuple, TypeVar

from .._models import ProductView
from .._wire import Event
from ._db import JournalFile

__all__ = ["PART", "ROWS_PER_STEP", "Delete", "Forget", "Loaded", "Mark", "Recovered", "Round",
           "Rows", "Source", "Step", "Want", "in_steps", "pop_step"]

ROWS_PER_STEP: Final = 1000  # the most rows one writer step takes, numbers, encodes or writes
PART: Final = 16_384  # the most entries of one dict of Rows (growing one rehashes them all)
_T = TypeVar("_T")


def in_steps(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    """*items* in steps of at most :data:`ROWS_PER_STEP`, giving up the GIL after each one."""
    for start in range(0, len(items), ROWS_PER_STEP):
        yield items[start : start + ROWS_PER_STEP]
        yield_gil()


def yield_gil() -> None:
    """Give the GIL to the event loop's thread between two writer steps.

    ``time.sleep(0)`` releases the GIL but takes it straight back: the loop's thread, woken by
    the release, is rarely scheduled before the writer asks again, so the loop waited for the
    interpreter's switch interval (5 ms) instead. ``sched_yield`` releases the GIL and lets the
    OS run the woken thread first (where there is no ``sched_yield``, ``sleep(0)`` it is).
    """
    _sched_yield()


_sched_yield: Final[Callable[[], None]] = getattr(os, "sched_yield", lambda: time.sleep(0))


# -- what the loop asks of the writer ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delete:
    """*events* left the buffer (sent, dead-lettered, dropped): delete their rows."""

    events: list[Event]


@dataclass(frozen=True, slots=True)
class Forget:
    """*events* stay in the journal at close: drop their entries, keep their rows."""

    events: list[Event]


@dataclass(frozen=True, slots=True)
class Recovered:
    """Recovered views left the buffer: delete these rows of the files they came from."""

    by_source: dict[Source, list[int]]


@dataclass(frozen=True, slots=True)
class Want:
    """The loop has room for *count* more recovered events."""

    count: int


def pop_step(ops: deque[Any], todo: int) -> list[Any]:
    """At most :data:`ROWS_PER_STEP` rows' worth of the *todo* first items of *ops*, taken
    off it (an op counts the events it carries: freeing them is work too)."""
    items: list[Any] = []
    pop, add, room = ops.popleft, items.append, ROWS_PER_STEP
    while room > 0 and len(items) < todo:
        item = pop()
        add(item)
        room -= len(item.events) if type(item) in _CARRYING else 1
    return items


_CARRYING: Final = (Delete, Forget)  # the ops that carry events


# -- what the writer hands back ---------------------------------------------------------------


class Source:
    """A journal file adopted from a process that is gone, being recovered."""

    __slots__ = ("cart_after", "carts_done", "file", "open", "view_after")

    def __init__(self, file: JournalFile) -> None:
        self.file = file
        self.cart_after = 0
        self.view_after = 0
        self.carts_done = False
        self.open = True

    @property
    def exhausted(self) -> bool:
        return self.carts_done and self.view_after < 0


class Loaded(NamedTuple):
    """A recovered event, as recovery hands it to the loop."""

    event: Event
    source: Source  # the file it came from
    row: int  # its row there (a view's seq, a cart's rowid)
    written: float  # wall clock when it was journaled (Unix seconds)


# -- the writer's own bookkeeping -------------------------------------------------------------


class Rows:
    """``id(view) -> row`` for the views of this process's file still in the buffer.

    The map is a few dicts of at most :data:`PART` entries, newest last, not one dict: a dict
    grows by rehashing all it holds in one call, which at 200,000 pending views held the GIL
    for 10 ms. Views leave roughly in the order they came, so the oldest part empties first.
    """

    __slots__ = ("_parts", "_repeats", "last")

    def __init__(self) -> None:
        self._parts: list[dict[int, int]] = [{}]
        self._repeats: dict[int, list[int]] = {}  # more rows of a view object enqueued again
        self.last = 0  # the last row number given

    def get(self, key: int, default: int) -> int:
        """The row of the view with ``id`` *key* (read by the loop at close)."""
        for part in self._parts:
            row = part.get(key)
            if row is not None:
                return row
        return default

    def number(self, views: list[ProductView]) -> None:
        """Give *views* the next rows (one dict update unless a view object repeats)."""
        first = self.last + 1
        self.last += len(views)
        keys = list(map(id, views))
        if len(self._parts[-1]) >= PART:
            self._parts.append({})
        young = self._parts[-1]
        size = len(young)
        if all(part.keys().isdisjoint(keys) for part in self._parts):
            young.update(zip(keys, range(first, first + len(views)), strict=True))
            if len(young) == size + len(views):
                return
            for key in keys:  # a view appears twice in the run: undo, take the slow way
                young.pop(key, None)
        for key, seq in zip(keys, range(first, first + len(views)), strict=True):
            if any(key in part for part in self._parts):
                self._repeats.setdefault(key, []).append(seq)
            else:
                young[key] = seq

    def forget(self, events: Iterable[Event]) -> list[int]:
        """The rows of *events* (views of this file; others are skipped), removed from the map."""
        keys, rows = list(map(id, events)), list[int]()
        if not self._repeats:
            for part in self._parts:  # C-level pops, part by part, oldest first
                found: list[int | None] = list(map(part.pop, keys, repeat(None)))
                rows.extend(filter(None, found))
                if None not in found:
                    break
                keys = [key for key, row in zip(keys, found, strict=True) if row is None]
                if not keys:
                    break
        else:
            for key in keys:
                seq = next(filter(None, (part.pop(key, None) for part in self._parts)), None)
                if seq is None:
                    continue
                rows.append(seq)
                more = self._repeats.get(key)
                if more:
                    self._parts[-1][key] = more.pop(0)
                    if not more:
                        del self._repeats[key]
        if len(self._parts) > 1 and not self._parts[0]:
            self._parts = [part for part in self._parts if part] or [{}]
        return rows


class Mark:
    """A ``sync()`` marker: done once everything queued before it is committed (or lost)."""

    __slots__ = ("done", "lost")

    def __init__(self) -> None:
        self.done = False
        self.lost = 0  # events the journal had failed to keep when the mark was done


class Round:
    """What one round of the writer (one group commit) took, wrote and still asks of the files
    once it commits."""

    __slots__ = ("by_source", "cart_deletes", "events", "marks", "own_deletes", "written")

    def __init__(self) -> None:
        self.events = 0  # events taken
        self.written = 0  # rows inserted or upserted in this process's file (lost if it fails)
        self.own_deletes: list[int] = []  # rows deleted there (retried if the commit fails)
        self.cart_deletes: list[list[tuple[str, int]]] = []  # delivered carts, for every file
        self.by_source: dict[Source, list[int]] = {}
        self.marks: list[Mark] = []


class Step:
    """What one step (at most :data:`ROWS_PER_STEP` items off the queue) writes to this
    process's file; it is written before the next step is taken."""

    __slots__ = ("carts", "first", "own_deletes", "skipped", "views")

    def __init__(self, first: int) -> None:
        self.first = first  # the row number of views[0]
        self.views: list[ProductView] = []  # to insert, numbered consecutively
        self.skipped: list[int] = []  # rows of views that left the buffer before their write
        self.carts: list[tuple[str, Any]] = []  # in order: ("upsert", carts) | ("delete", pairs)
        self.own_deletes: list[int] = []

    def __bool__(self) -> bool:
        return bool(self.views or self.carts or self.own_deletes)

    def runs(self) -> list[tuple[int, list[ProductView]]]:
        """The views to insert as (first row, views) runs, without the skipped ones."""
        if not self.skipped:
            return [(self.first, self.views)] if self.views else []
        runs, start = [], self.first
        for seq in sorted(self.skipped):
            if seq > start:
                runs.append((start, self.views[start - self.first : seq - self.first]))
            start = seq + 1
        end = self.first + len(self.views)
        if end > start:
            runs.append((start, self.views[start - self.first :]))
        return runs
