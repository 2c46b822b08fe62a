"""The buffer's side of the durable journal, on the event loop.

:class:`Journaling` is the buffer's side of a :class:`~voyado_tracking._journal.Journal`:
the buffer's intake appends each event to it before the store takes it, and as the buffer's
:class:`Keeper` it hears from :class:`Outcomes` where events end (delivered, dead-lettered,
dropped, kept at close, room freed). It talks to the writer thread (``_journal._writer``)
through a deque, never touching SQLite itself; what it recovers goes into the store through
``Outcomes``.

Rows and events: ``enqueue`` only appends the event to the writer's queue; the writer thread
numbers the views and keeps the ``id(view) -> row`` map (see ``_journal._writer``). When events
leave the buffer one ``Delete(events)`` op carries them to the writer; a cart's row is its
``cart_reference``, deleted up to the delivered instant so a newer pending update stays.

Recovery streams: the writer reads the files of processes that are gone (and this process's
earlier buffers) in chunks the loop asks for when it has room under ``max_pending``; a
chunk that arrives when room is short waits aside (at most one chunk) until room frees.
Recovered events are counted as ``recovered``; those written more than ``max_age`` seconds
ago are dropped as ``"expired"``, and cart rows a delivered newer update deleted before they
were read are counted as recovered and collapsed.

The writer thread holds this side only weakly (its callbacks check that it still lives), so a
buffer never closed is garbage-collected; its collection closes the writer, which commits
what is queued and releases its file for the next start. When the writer thread ends, after
a close or a failure, this side stops waiting for it: recovery is over, new events are no
longer journaled, and ``flush()`` and ``sync()`` return or raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from .._clock import Clock
from .._models import Cart, ProductView
from .._outcomes import Keeper, Outcomes
from .._records import Marks
from .._wire import Event
from . import SYNCHRONOUS, Journal
from ._ops import Delete, Forget, Loaded, Mark, Recovered, Source, Want
from ._writer import Writer, post_to

__all__ = ["Journaling"]

log = logging.getLogger("voyado_tracking")

CHUNK: Final = 1000  # recovered events asked for at a time


class Journaling(Keeper):
    """A buffer's journal on the event loop (see the module docstring)."""

    def __init__(
        self,
        journal: Journal,
        outcomes: Outcomes,
        owner: str,
        *,
        clock: Clock,
        wake: Callable[[], None],
        spooling: bool = False,
    ) -> None:
        if not isinstance(journal, Journal):
            raise TypeError(f"journal must be a Journal, got {type(journal).__name__}")
        if spooling:
            log.info("a TrackingBuffer with a journal keeps undelivered events in the journal "
                     "at close; spool_path gets only what the journal could not keep")
        self.journal = journal
        self._outcomes = outcomes
        self._store = outcomes.store
        self._owner = owner
        self._clock = clock
        self._wake = wake
        self._writer: Writer | None = None
        self._ops: deque[Any] = deque()
        # The intake calls this for every event, before the store takes it: the writer's
        # ops.append while the journal writes, else a counter.
        self.append: Callable[[Event], None] = self._unjournaled
        self._recovered: dict[int, tuple[Source, int]] = {}  # id(view) -> (file, row)
        self._parked: deque[Loaded] = deque()  # recovered, waiting for room
        self._asking = False  # a recovery request is out
        self._read_all = False  # the writer has posted every recovered event
        self._recovery_marks: Marks | None = None  # store marks when it ended
        self._committed = asyncio.Event()
        self._closed: asyncio.Future[None] | None = None
        self._closing = False
        self.unjournaled = 0  # events taken while the journal wrote nothing

    @property
    def errors(self) -> int:
        return 0 if self._writer is None else self._writer.errors

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer (idempotent): it opens a file and looks for files to recover."""
        if self._writer is not None:
            return
        loop = asyncio.get_running_loop()
        self._closed = loop.create_future()
        j = self.journal
        writer = Writer(
            j.directory, self._owner, synchronous=SYNCHRONOUS[j.durability],
            commit_interval=j.commit_interval, max_bytes=j.max_bytes, post=post_to(loop),
            on_loaded=_weakly(self._loaded), on_commit=_weakly(self._on_commit),
            on_closed=_weakly(self._on_closed), on_superseded=_weakly(self._outcomes.superseded),
        )
        self._writer = writer
        self._ops = writer.ops
        self.append = writer.ops.append
        writer.start()
        self._ask()

    async def aclose(self, timeout: float) -> None:
        """Commit what is queued and close the files, waiting up to *timeout* seconds."""
        writer, closed = self._writer, self._closed
        self._closing = True
        if writer is None or closed is None:
            return
        writer.close()
        try:
            await asyncio.wait_for(asyncio.shield(closed), max(timeout, 0.05))
        except asyncio.TimeoutError:
            log.error("the journal did not finish its last commit within %.1f s; what it "
                      "had not committed is lost if the process ends now", timeout)

    def abandon(self) -> None:
        """The buffer was collected unclosed: the writer commits what is queued, then
        releases its file for the next start (thread-safe: collection may run anywhere)."""
        if self._writer is not None:
            self._writer.close()

    def _on_commit(self) -> None:
        if self._writer is not None and not self._writer.writing:
            self.append = self._unjournaled  # the writer would only count them
        self._committed.set()

    def _unjournaled(self, event: Event) -> None:
        self.unjournaled += 1

    def _on_closed(self) -> None:
        """The writer thread ended (closed, or failed): stop waiting for it."""
        writer = self._writer
        if writer is not None and writer.ops:  # events it never took: in memory only
            self.unjournaled += sum(type(op) is ProductView or type(op) is Cart
                                    for op in writer.ops)
            writer.ops.clear()
        self.append = self._unjournaled
        self._ops = deque(maxlen=0)  # nothing reads them any more
        if not self._closing and not self._read_all:  # what it did not read stays in files
            self._read_all, self._asking = True, False
            self._take_parked()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        self._committed.set()

    # -- where events end (the Keeper of the buffer's Outcomes) --------------------------------

    def left(self, events: list[Event]) -> None:
        """*events* left the buffer (sent, dead-lettered, dropped): delete their rows."""
        if self._recovered:
            events = self._pop_recovered(events, "recovered")
        if events:
            self._ops.append(Delete(events))

    def _pop_recovered(self, events: list[Event], op: str) -> list[Event]:
        """Queue *op* for the recovered views among *events* (by file); return the others."""
        rest: list[Event] = []
        by_source: dict[Source, list[int]] = {}
        for event in events:
            row = self._recovered.pop(id(event), None)
            if row is None:
                rest.append(event)
            else:
                by_source.setdefault(row[0], []).append(row[1])
        if by_source and op == "recovered":
            self._ops.append(Recovered(by_source))
        return rest

    def keep(self, events: list[Event], *, in_flight: bool) -> list[Event]:
        """At close: the *events* that stay in the journal (they count as spooled); return
        the rest. *in_flight*: they were taken from the store for a send (else drained)."""
        writer = self._writer
        own = self._pop_recovered(events, "kept") if self._recovered else events
        rest: list[Event] = []
        if writer is None:
            rest = own
        elif not writer.writing:  # only what was committed before the failure stays
            row_of, committed = writer.rows.get, writer.committed_seq
            rest = [e for e in own if type(e) is not ProductView
                    or row_of(id(e), committed + 1) > committed]
        if writer is not None:
            self._ops.append(Forget(own))  # their rows stay: the writer drops its entries
        kept_count = len(events) - len(rest)
        if kept_count and not in_flight:
            log.warning("%d undelivered events stay in the journal in %s for the next start",
                        kept_count, self.journal.directory)
        return rest

    def unclosed(self, held: int) -> str:
        """What becomes of the *held* events of a buffer that was never closed (for its log)."""
        writer = self._writer
        if writer is None:
            return "they are lost"
        at_risk = min(held, self._missing(None) + writer.lost + self.unjournaled)
        where = f"the journal in {self.journal.directory}"
        if not at_risk:
            return f"{where} has committed them: the next start on it delivers them"
        return (f"{where} keeps those it has committed (at least {held - at_risk}) for the "
                f"next start on it; up to {at_risk} not committed yet may be lost")

    # -- sync -----------------------------------------------------------------------------------

    async def sync(self, timeout: float | None) -> None:
        """Return once every event appended before the call is committed."""
        writer = self._writer
        if writer is None:
            return
        mark = Mark()
        self._ops.append(mark)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        writer.wake()
        while not mark.done and not writer.finished:
            self._committed.clear()
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"sync() did not finish in {timeout:g} s: "
                                   f"{self._missing(mark)} events are not committed to the "
                                   "journal yet")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._committed.wait(), remaining)
        lost = (mark.lost if mark.done else writer.lost + self._missing(mark)) + self.unjournaled
        if lost:
            raise TimeoutError(
                "sync() cannot finish: the journal stopped writing after an error (see the "
                f"log); {lost} events are in memory only"
            )

    def _missing(self, mark: Mark | None) -> int:
        """Events queued before *mark* (None: at all) and not committed yet."""
        writer = self._writer
        assert writer is not None
        queued = 0
        with contextlib.suppress(RuntimeError):  # the writer took from it meanwhile
            for op in list(self._ops):
                if op is mark:
                    break
                queued += type(op) is ProductView or type(op) is Cart
        return writer.taken - writer.settled + queued

    # -- recovery -------------------------------------------------------------------------------

    def progress(self) -> None:
        """Room may have freed in the store: take parked events, ask for more."""
        if self._parked or not (self._asking or self._read_all):
            self._take_parked()
            self._ask()

    def flush_marks(self, marks: Marks) -> Marks | None:
        """The store marks flush() must wait for: None while recovery is still loading."""
        if self._writer is None:
            return marks
        recovery = self._recovery_marks
        if recovery is None:
            return None
        return {kind: max(mark, recovery[kind]) for kind, mark in marks.items()}

    def _room(self) -> int:
        return self._store.settings.max_pending - self._store.held

    def _ask(self) -> None:
        writer = self._writer
        if writer is None or self._asking or self._read_all or self._parked or self._closing:
            return
        want = min(CHUNK, self._room())
        if want >= min(CHUNK, self._store.settings.max_pending // 4 or 1):
            self._asking = True
            self._ops.append(Want(want))
            writer.wake()

    def _loaded(self, loaded: list[Loaded], done: bool) -> None:
        """A chunk of recovered events arrived from the writer (on the loop)."""
        self._asking = False
        if self._closing:
            return  # their rows stay in the journal for the next start
        self._read_all = done
        cutoff = time.time() - self.journal.max_age
        for item in loaded:
            event, source, seq, written = item
            if written < cutoff:
                if type(event) is ProductView:
                    self._recovered[id(event)] = (source, seq)
                self._outcomes.expired(event)
            else:
                self._parked.append(item)
        self._take_parked()
        self._ask()

    def _take_parked(self) -> None:
        parked, outcomes = self._parked, self._outcomes
        if parked:
            now, wake = self._clock.now(), False
            for _ in range(min(len(parked), self._room())):
                event, source, seq, _ = parked.popleft()
                if type(event) is ProductView:
                    self._recovered[id(event)] = (source, seq)
                wake = outcomes.recovered(event, now) or wake
            if wake:
                self._wake()
        if self._read_all and not parked and self._recovery_marks is None:
            self._recovery_marks = self._store.marks()
            outcomes.notify()


def _weakly(method: Callable[..., object]) -> Callable[..., None]:
    """*method*, called only while its object lives (the writer must not keep it alive)."""
    ref = weakref.WeakMethod(method)

    def call(*args: Any) -> None:
        bound = ref()
        if bound is not None:
            bound(*args)

    return call
