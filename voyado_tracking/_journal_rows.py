"""The journal writer's bookkeeping of rows: which row holds which view, and one step's work.

Only the writer thread changes these (the loop reads ``Rows.seqs`` at close and ``Mark``
flags). A view's row is its number among the views the writer took; the map is keyed by
``id(view)``, which stays valid while the map holds it (see ``_journal_writer``). Everything
here is bulk work in C-level calls where it can be: the writer shares the GIL with the loop.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import repeat
from typing import TYPE_CHECKING, Any

from ._models import ProductView
from ._wire import Event

if TYPE_CHECKING:
    from ._journal_writer import Source

__all__ = ["Mark", "Rows", "Step"]


class Rows:
    """``id(view) -> row`` for the views of this process's file still in the buffer."""

    __slots__ = ("_repeats", "last", "seqs")

    def __init__(self) -> None:
        self.seqs: dict[int, int] = {}
        self._repeats: dict[int, list[int]] = {}  # more rows of a view object enqueued again
        self.last = 0  # the last row number given

    def number(self, views: list[ProductView]) -> None:
        """Give *views* the next rows (one dict update unless a view object repeats)."""
        first = self.last + 1
        self.last += len(views)
        seqs, keys = self.seqs, list(map(id, views))
        size = len(seqs)
        if seqs.keys().isdisjoint(keys):
            seqs.update(zip(keys, range(first, first + len(views)), strict=True))
            if len(seqs) == size + len(views):
                return
            for key in keys:  # a view appears twice in the run: undo, take the slow way
                seqs.pop(key, None)
        for key, seq in zip(keys, range(first, first + len(views)), strict=True):
            if key in seqs:
                self._repeats.setdefault(key, []).append(seq)
            else:
                seqs[key] = seq

    def forget(self, events: Iterable[Event]) -> list[int]:
        """The rows of *events* (views of this file; others are skipped), removed from the map."""
        seqs = self.seqs
        if not self._repeats:
            return list(filter(None, map(seqs.pop, map(id, events), repeat(None))))
        rows: list[int] = []
        for key in map(id, events):
            seq = seqs.pop(key, None)
            if seq is None:
                continue
            rows.append(seq)
            more = self._repeats.get(key)
            if more:
                seqs[key] = more.pop(0)
                if not more:
                    del self._repeats[key]
        return rows


class Mark:
    """A ``sync()`` marker: done once everything queued before it is committed (or lost)."""

    __slots__ = ("done", "lost")

    def __init__(self) -> None:
        self.done = False
        self.lost = 0  # events the journal had failed to keep when the mark was done


class Step:
    """What one drain of the queue asks of the files."""

    __slots__ = ("by_source", "carts", "events", "first", "marks", "own_deletes", "skipped",
                 "views")

    def __init__(self, first: int) -> None:
        self.first = first  # the row number of views[0]
        self.views: list[ProductView] = []  # to insert, numbered consecutively
        self.skipped: list[int] = []  # rows of views that left the buffer before this commit
        self.carts: list[tuple[str, Any]] = []  # in order: ("upsert", carts) | ("delete", pairs)
        self.own_deletes: list[int] = []
        self.by_source: dict[Source, list[int]] = {}
        self.marks: list[Mark] = []
        self.events = 0  # events taken

    def cart_deletes(self) -> list[list[tuple[str, int]]]:
        return [pairs for what, pairs in self.carts if what == "delete"]

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
