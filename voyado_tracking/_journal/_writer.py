"""The journal's writer thread: group commits, deletions and recovery reads, off the loop.

The event loop talks to it through one ``deque`` (appends are atomic, so ``enqueue`` never
takes a lock and does nothing else for the journal): events to write (a ``ProductView`` or
``Cart`` itself), :class:`Mark` objects for ``sync()``, and the ops of ``_journal._ops``:
deletions (:class:`Delete` for events that left the buffer, :class:`Recovered` for recovered
views that did), :class:`Forget` for events whose rows stay at close, and :class:`Want` for
recovered events. The thread drains it at most ``commit_interval`` apart, one round at a time:
a round takes what is queued when it begins and writes it in one transaction per file (one
group commit), then answers on the loop with ``call_soon_threadsafe``.

The thread owns the view-to-row map: it numbers the views in the order it takes them and
records ``id(view) -> row``. An id stays valid as long as the map holds it: the view is held
by the buffer until it is resolved, and the :class:`Delete` or :class:`Forget` op that ends
its entry carries the view itself.

Its work holds the GIL the event loop needs, so it is done in bulk and in steps: a step takes
at most ``ROWS_PER_STEP`` (1,000) rows off the queue, numbers its views with one dict update,
encodes and inserts them with one ``orjson.dumps`` and one statement, and frees what only it
held; the thread gives up the GIL between steps. A burst of 200,000 views is two hundred
short steps the loop runs between, and the round still commits once.

Carts are keyed by ``cart_reference``; their deletions compare instants and go to every open
file (a recovered cart and a fresh update of it may sit in two), and a row they delete there
before recovery read it counts as recovered and collapsed.

A file that fails while being read is set aside like a corrupt one; the thread never ends
without telling the loop (``on_closed``), which then stops waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

from .._forksafe import ForkGate, RealEvent, start_thread
from .._models import Cart, ProductView
from .._wire import Event
from . import _ops
from ._body import decode_cart, decode_view, encode_cart, encode_views
from ._db import (
    CorruptFile,
    ForeignFile,
    JournalFile,
    Row,
    instant_of,
    journal_files,
    private_directory,
)
from ._ops import Delete, Forget, Loaded, Mark, Recovered, Round, Rows, Source, Step, Want

__all__ = ["Writer", "post_to"]

log = logging.getLogger("voyado_tracking")


class Writer:
    """Owns the journal files of one buffer; :meth:`run` is the thread's body."""

    def __init__(
        self,
        directory: Path,
        owner: str,
        *,
        synchronous: str,
        commit_interval: float,
        max_bytes: int,
        post: Callable[..., None],
        on_loaded: Callable[[list[Loaded], bool], None],
        on_commit: Callable[[], None],
        on_closed: Callable[[], None],
        on_superseded: Callable[[int], None],
    ) -> None:
        self.ops: deque[Any] = deque()
        self.writing = True  # False once the journal fell back to memory only (loop reads it)
        self.rows = Rows()  # id(view) -> its row in this process's file (the loop reads it)
        self.committed_seq = 0  # views up to this row are committed (the loop reads it)
        self.lost = 0  # events taken while the journal could not write them
        self.taken = 0  # events taken from ops (the loop reads these two)
        self.settled = 0  # ... of which committed or lost
        self.finished = False  # the thread ended
        self.errors = 0  # faults: files set aside, write failures (loop reads it)
        self._directory = directory
        self._owner = owner
        self._synchronous = synchronous
        self._interval = commit_interval
        self._max_bytes = max_bytes
        self._post = post
        self._on_loaded = on_loaded
        self._on_commit = on_commit
        self._on_closed = on_closed
        self._on_superseded = on_superseded
        self._urgent = RealEvent()  # set by the loop's thread, real under gevent too
        self._gate = ForkGate()  # taken before a fork: never one inside an SQLite call
        self._stopping = False
        self._own: JournalFile | None = None
        self._sources: list[Source] = []
        self._wanted = 0
        self._end_posted = False  # the loop was told that recovery read everything

    def start(self) -> None:
        start_thread(self.run, "voyado_tracking journal")

    def wake(self) -> None:
        self._urgent.set()

    def close(self) -> None:
        """Commit what is queued, then close the files (the thread ends)."""
        self._stopping = True
        self._urgent.set()

    # -- the thread -------------------------------------------------------------------------

    def run(self) -> None:
        try:
            with self._gate:
                self._open()
            last = time.monotonic()
            while True:
                self._urgent.wait(max(0.0, last + self._interval - time.monotonic()))
                self._urgent.clear()
                stopping = self._stopping
                with self._gate:
                    self._round()
                last = time.monotonic()
                if stopping and not self.ops:
                    break
        except Exception:  # a bug: never let the thread die silently
            log.exception("the journal's writer thread failed; the journal stops writing")
            self._fail("an unexpected error")
        finally:
            try:
                with self._gate:
                    self._close_files()
            except Exception:
                log.exception("the journal could not close its files")
            finally:  # the loop stops waiting for this thread (flush, sync, recovery)
                self.finished = True
                self._post(self._on_closed)

    def _open(self) -> None:
        try:
            private_directory(self._directory)
            self._own = JournalFile.create(
                self._directory, self._owner, synchronous=self._synchronous,
                max_bytes=self._max_bytes,
            )
        except (OSError, sqlite3.Error) as error:
            self._fail(f"cannot create a journal file in {self._directory}: {error}")
        try:
            paths = journal_files(self._directory)
        except OSError as error:
            log.error("cannot read the journal directory %s: %s", self._directory, error)
            self.errors += 1
            paths = []
        for path in paths:
            if self._own is not None and path == self._own.path:
                continue
            self._adopt(path)

    def _adopt(self, path: Path) -> None:
        try:
            file = JournalFile.adopt(path, self._owner, synchronous=self._synchronous)
        except ForeignFile as why:
            log.warning("journal file %s left alone: %s", path, why)
            return
        except CorruptFile as error:
            self.errors += 1
            log.error("journal file %s is corrupt (%s); set aside", path, error)
            return
        except (OSError, sqlite3.Error) as error:
            self.errors += 1
            log.error("cannot open journal file %s: %s; left alone", path, error)
            return
        if file is not None:
            try:
                carts, views = file.counts()
            except sqlite3.Error as error:  # opened, but a damaged page fails the read
                self._set_aside(file, error)
                return
            log.info("recovering %d carts and %d product views from journal file %s",
                     carts, views, path.name)
            self._sources.append(Source(file))

    def _fail(self, why: str) -> None:
        """Fall back to memory only: new events are no longer written (deletions still are)."""
        if self.writing:
            self.writing = False
            self.errors += 1
            log.error(
                "journal: %s; new events are kept in memory only from now on (the events "
                "already committed stay in the journal)", why,
            )
        self._post(self._on_commit)  # sync() waiters must learn it

    # -- one round: write what is queued, then serve recovery ---------------------------------

    def _round(self) -> None:
        """One group commit: what is queued now (what arrives meanwhile waits for the next
        round), taken and written a step at a time in one transaction, committed once."""
        own, round_, begun, todo = self._own, Round(), False, len(self.ops)
        try:
            while todo:
                items = _ops.pop_step(self.ops, todo)
                todo -= len(items)
                step = Step(self.rows.last + 1)
                self._take(items, step, round_)
                if own is not None and step:
                    if not begun:
                        own.begin()
                        begun = True
                    self._write(own, step, round_)
                del items, step  # what only they held is freed here, a step's worth
                _ops.yield_gil()  # the event loop runs between steps
            if begun and own is not None:
                own.commit()
        except sqlite3.Error as error:
            assert own is not None  # only the file raises it
            own.rollback()
            self._fail(f"could not write to {own.path.name} ({error})")
            self.lost += round_.written
            if round_.own_deletes or round_.cart_deletes:
                self._retry_deletes(own, round_)
        if self.writing:
            self.committed_seq = self.rows.last
        self.settled = self.taken
        for mark in round_.marks:
            mark.lost, mark.done = self.lost, True
        if round_.marks:
            self._post(self._on_commit)
        for source in self._sources:
            self._delete_in(source, round_.by_source.get(source, ()), round_.cart_deletes)
        self._sources = [s for s in self._sources if s.open]
        if not self._end_posted:
            self._recover()

    def _take(self, items: list[Any], step: Step, round_: Round) -> None:
        """One step's items off the queue; runs of one type are handled together."""
        for kind, group in groupby(items, type):
            if kind is ProductView:
                views = list(group)
                self.taken += len(views)
                round_.events += len(views)
                if self.writing:
                    step.views.extend(views)
                    self.rows.number(views)
                else:
                    self.lost += len(views)
            elif kind is Cart:
                carts = list(group)
                self.taken += len(carts)
                round_.events += len(carts)
                if self.writing:
                    step.carts.append(("upsert", carts))
                else:
                    self.lost += len(carts)
            elif kind is Mark:
                round_.marks.extend(group)
            else:
                for op in group:
                    self._take_op(op, step, round_)

    def _take_op(self, op: Delete | Forget | Recovered | Want, step: Step, round_: Round) -> None:
        match op:
            case Delete(events):
                for part in _ops.in_steps(events):
                    self._delete(part, step, round_)
            case Forget(events):  # their rows stay for the next start
                for part in _ops.in_steps(events):
                    self.rows.forget(part)
            case Recovered(by_source):
                for source, seqs in by_source.items():
                    round_.by_source.setdefault(source, []).extend(seqs)
            case Want(count):
                self._wanted += count
            case _:  # a bug on the loop's side: say so rather than guess
                raise TypeError(f"the journal's writer got an unknown op {op!r}")

    def _delete(self, events: Sequence[Event], step: Step, round_: Round) -> None:
        """*events* left the buffer: their rows go (a view not written yet is never written)."""
        rows = self.rows.forget(events)
        found = len(rows)
        if rows and max(rows) >= step.first:
            step.skipped.extend(r for r in rows if r >= step.first)
            rows = [r for r in rows if r < step.first]
        step.own_deletes.extend(rows)
        round_.own_deletes.extend(rows)
        if found < len(events):  # carts, or views not journaled
            pairs = [(e.cart_reference, instant_of(e)) for e in events if type(e) is Cart]
            if pairs:
                step.carts.append(("delete", pairs))
                round_.cart_deletes.append(pairs)

    @staticmethod
    def _write(own: JournalFile, step: Step, round_: Round) -> None:
        """One step's inserts, deletions and cart upserts (in their order), in the round's
        transaction."""
        now = time.time()
        for first, views in step.runs():
            own.add_views(first, now, encode_views(views))
            round_.written += len(views)
        for seqs in _ops.in_steps(step.own_deletes):  # one Delete op may carry more
            own.delete_views(seqs)
        for what, op in step.carts:
            if what == "delete":
                own.delete_carts(op)
            else:
                own.add_carts([(c.cart_reference, instant_of(c), now, encode_cart(c)) for c in op])
                round_.written += len(op)

    def _retry_deletes(self, own: JournalFile, round_: Round) -> None:
        """After a failed commit: the round's deletions again, alone."""
        try:
            own.begin()
            for seqs in _ops.in_steps(round_.own_deletes):
                own.delete_views(seqs)
            for pairs in round_.cart_deletes:
                own.delete_carts(pairs)
            own.commit()
        except sqlite3.Error as error:
            own.rollback()
            log.debug("journal: deleting delivered events failed too: %s", error)

    def _delete_in(self, source: Source, seqs: list[int] | tuple[()],
                   carts: list[list[tuple[str, int]]]) -> None:
        file = source.file
        try:
            superseded = 0
            if seqs or carts:
                # Cart rows recovery has not read yet: a delivered newer update supersedes them.
                unread = None if source.carts_done else source.cart_after
                file.begin()
                if seqs:
                    file.delete_views(seqs)
                for pairs in carts:
                    superseded += file.delete_carts(pairs, unread_after=unread)
                file.commit()
            if superseded:
                self._post(self._on_superseded, superseded)
            if source.exhausted and file.is_empty():
                file.remove()
                source.open = False
                log.info("journal file %s fully recovered; removed", file.path.name)
        except sqlite3.Error as error:
            file.rollback()
            source.open = False
            self._set_aside(file, error)

    def _set_aside(self, file: JournalFile, error: BaseException) -> None:
        """*file* failed while being read or written: renamed aside (``.corrupt``), logged."""
        self.errors += 1
        try:
            target = file.set_aside().name
        except OSError as rename_error:  # it stays where it is, unlocked
            file.release()
            target = f"nothing (renaming failed: {rename_error}); left alone"
        log.error("journal file %s failed (%s); set aside as %s", file.path.name, error, target)

    # -- recovery -----------------------------------------------------------------------------

    def _recover(self) -> None:
        """Read up to the wanted number of events from the adopted files; post them."""
        loaded: list[Loaded] = []
        while self._wanted > len(loaded):
            source = next((s for s in self._sources if s.open and not s.exhausted), None)
            if source is None:
                break
            try:
                loaded.extend(self._read(source, self._wanted - len(loaded)))
            except sqlite3.Error as error:
                source.open = False
                self._set_aside(source.file, error)
        self._sources = [s for s in self._sources if s.open]
        self._wanted -= len(loaded)
        done = all(s.exhausted for s in self._sources)
        if loaded or done:
            self._end_posted = done
            self._post(self._on_loaded, loaded, done)

    def _read(self, source: Source, limit: int) -> list[Loaded]:
        file = source.file
        rows: list[Row]
        if not source.carts_done:
            rows = file.read_carts(source.cart_after, limit)
            if len(rows) < limit:
                source.carts_done = True
            if rows:
                source.cart_after = rows[-1].rowid
            return self._decode(source, decode_cart, rows)
        rows = file.read_views(source.view_after, limit)
        source.view_after = rows[-1].rowid if len(rows) == limit else -1
        return self._decode(source, decode_view, rows)

    def _decode(
        self, source: Source, decode: Callable[[bytes | str], Event], rows: list[Row]
    ) -> list[Loaded]:
        loaded: list[Loaded] = []
        bad: list[int] = []
        for row in rows:
            try:
                event = decode(row.body)
            except (ValueError, TypeError, IndexError) as error:  # InvalidEventError too
                log.error("journal file %s: an unreadable row was removed (%s)",
                          source.file.path.name, error)
                bad.append(row.rowid)
                continue
            loaded.append(Loaded(event, source, row.rowid, row.written))
        if bad:
            self.errors += len(bad)
            source.file.begin()
            if decode is decode_view:
                source.file.delete_views(bad)
            else:
                source.file.delete_cart_rows(bad)
            source.file.commit()
        return loaded

    # -- closing ------------------------------------------------------------------------------

    def _close_files(self) -> None:
        for file in [self._own, *(s.file for s in self._sources if s.open)]:
            if file is None:
                continue
            try:
                empty = file.is_empty()
            except sqlite3.Error:
                empty = False
            if empty:
                file.remove()
            else:
                file.release()
        self._own = None
        self._sources = []


def post_to(loop: asyncio.AbstractEventLoop) -> Callable[..., None]:
    """``call_soon_threadsafe`` on *loop*, quiet once the loop is closed."""

    def post(callback: Callable[..., object], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: no one waits for it
            loop.call_soon_threadsafe(callback, *args)

    return post

