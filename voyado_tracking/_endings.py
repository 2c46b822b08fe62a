"""Where a buffer's events end when they are not sent: dead letters, drops, spool, journal.

:class:`Endings` is the part of the ``TrackingBuffer`` facade that decides it, with the
journal's say in it: a dead-lettered or dropped event leaves the journal; at shutdown (or when
the client was closed under the buffer) what the journal keeps counts as spooled, the rest goes
to ``spool_path`` or is dropped. Every such event is counted and logged (see ``_losslog``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from ._client import TrackingClient
from ._errors import ClientClosedError, VoyadoError
from ._eventfile import append_events
from ._journal import Journaling
from ._losslog import LossLog
from ._records import DropReason
from ._settings import FlushSettings
from ._store import PendingStore
from ._wire import Event

__all__ = ["DeadLetterHook", "Endings", "report_dead_letters"]

log = logging.getLogger("voyado_tracking")


class Endings:
    """The sender's ``on_final`` and the store's ``on_drop`` hooks, and the shutdown disposal.

    :meth:`bind` gives it the store (built with :meth:`dropped` as its hook) and the journal.
    """

    def __init__(
        self,
        client: TrackingClient,
        settings: FlushSettings,
        spool_path: Path | None,
        on_drop: Callable[[Event, str], object] | None,
        on_dead_letter: Callable[[Event, VoyadoError], object] | None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.spool_path = spool_path
        self.losses = LossLog()
        self._on_drop = on_drop
        self._on_dead_letter = on_dead_letter
        self._store: PendingStore | None = None
        self.journal: Journaling | None = None

    def bind(self, store: PendingStore, journal: Journaling | None) -> None:
        self._store, self.journal = store, journal

    @property
    def store(self) -> PendingStore:
        assert self._store is not None, "Endings.bind() was not called"
        return self._store

    def final(self, events: list[Event], error: VoyadoError) -> None:
        """The sender gives up on *events*: dead letters, or a spool when the client closed."""
        if isinstance(error, ClientClosedError):
            self.losses.record(
                "client-closed", len(events), "the TrackingClient was closed before the "
                "TrackingBuffer; could not deliver", "close the buffer before its client",
            )
            if self.journal is not None:  # what the journal holds stays for the next start
                events = self.journal.keep(events, in_flight=True)
            if self.spool(events):
                self.store.resolved(len(events), "spooled")
                return
        elif self.journal is not None:
            self.journal.resolved(events)
        self.store.resolved(len(events), "dead_lettered")
        self.losses.record(f"dead:{type(error).__name__}", len(events), "dead-lettered",
                           str(error))
        report_dead_letters(self._on_dead_letter, events, error)

    def dropped(self, event: Event, reason: DropReason) -> None:
        if self.journal is not None:
            self.journal.resolved([event])
        if reason == "overflow":
            self.losses.record(
                "drop:overflow", 1, "buffer full (max_pending="
                f"{self.settings.max_pending}, overflow={self.settings.overflow!r}): dropped",
            )
        if self._on_drop is not None:
            try:
                self._on_drop(event, reason)
            except Exception:
                log.exception("on_drop callback failed")

    def spool(self, events: list[Event]) -> bool:
        """Append *events* to the spool file; False when there is none or it failed."""
        if not events:
            return True
        if self.spool_path is None:
            return False
        try:
            append_events(self.spool_path, events, reason="shutdown")
        except OSError as error:
            log.error("could not write %d events to the spool file: %s", len(events), error)
            return False
        log.warning("spooled %d undelivered events to %s", len(events), self.spool_path)
        return True

    def dispose(self, events: list[Event]) -> None:
        """Keep in the journal, spool or count as dropped what is left at shutdown."""
        if self.journal is not None:
            events = self.journal.keep(events)  # what stays in it counts as spooled
        if not events:
            return
        if self.client.closed:
            log.warning(
                "the TrackingClient was closed before the TrackingBuffer: %d events could not "
                "be delivered at shutdown (close the buffer first)", len(events),
            )
        if self.spool(events):
            self.store.count_spooled(len(events))
            return
        for event in events:
            self.store.drop(event, "shutdown")
        log.warning(
            "dropped %d undelivered events at shutdown (set spool_path to keep them)",
            len(events),
        )


DeadLetterHook = Callable[[Event, VoyadoError], object]


def report_dead_letters(
    hook: DeadLetterHook | None, events: list[Event], error: VoyadoError
) -> None:
    """Call the user's ``on_dead_letter`` for each event; a failing callback is logged."""
    if hook is None:
        return
    for event in events:
        try:
            hook(event, error)
        except Exception:
            log.exception("on_dead_letter callback failed")
