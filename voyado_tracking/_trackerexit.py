"""Closing every :class:`~voyado_tracking.Tracker` at interpreter exit, bounded.

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

__all__ = ["on_start"]

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
    from ._tracker import live_trackers

    for tracker in live_trackers():
        if tracker._runtime is None:
            continue
        try:
            tracker.close()
        except Exception:
            log.exception("closing a Tracker at exit failed")


def _after_fork_in_child() -> None:
    global _forked, _finalizer
    _forked, _finalizer = True, False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
