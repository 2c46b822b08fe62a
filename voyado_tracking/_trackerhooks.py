"""What the process does to every :class:`~voyado_tracking.Tracker`: close it at interpreter
exit (bounded), pause its loop before a fork, let go of its runtime in the child.

``atexit`` runs too late: by then ``concurrent.futures`` refuses new work, so the loop cannot
resolve a host name (``getaddrinfo`` runs in its executor) and the last batch fails. The hook
is registered with ``threading._register_atexit`` instead, after ``concurrent.futures.thread``
is imported: those hooks run in reverse order, so ours runs while the executor still works.
A forked child that ends without running them (``multiprocessing`` skips ``atexit``) also has
a ``multiprocessing.util.Finalize``. Each tracker's close is bounded by its
``shutdown_timeout``: exit never hangs.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._tracker import Tracker

__all__ = ["close_all", "live_trackers", "on_start", "register"]

log = logging.getLogger("voyado_tracking")

_registered = False  # the threading hook (inherited by forked children with the list)
_finalizer = False  # the multiprocessing one, in this forked child
_forked = False


def on_start() -> None:
    """A tracker started in this process: make sure exit closes it."""
    global _registered, _finalizer
    if not _registered:
        import concurrent.futures.thread  # noqa: F401  (registers its hook first)

        try:
            threading._register_atexit(close_all)  # type: ignore[attr-defined]
        except RuntimeError:  # the interpreter is already shutting down
            return
        _registered = True
    if _forked and not _finalizer:
        import multiprocessing.util

        multiprocessing.util.Finalize(None, close_all, exitpriority=100)
        _finalizer = True


def close_all() -> None:
    for tracker in live_trackers():
        if tracker._runtime is None:
            continue
        try:
            tracker.close()
        except Exception:
            log.exception("closing a Tracker at exit failed")


_trackers: weakref.WeakSet[Tracker] = weakref.WeakSet()


def register(tracker: Tracker) -> None:
    _trackers.add(tracker)


def live_trackers() -> list[Tracker]:
    return list(_trackers)


def _before_fork() -> None:
    for tracker in list(_trackers):
        runtime = tracker._runtime
        if runtime is not None:
            runtime.thread.park(timeout=1.0)


def _after_fork_in_parent() -> None:
    for tracker in list(_trackers):
        runtime = tracker._runtime
        if runtime is not None:
            runtime.thread.resume()


def _after_fork_in_child() -> None:
    global _forked, _finalizer
    _forked, _finalizer = True, False
    for tracker in list(_trackers):
        tracker._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)
