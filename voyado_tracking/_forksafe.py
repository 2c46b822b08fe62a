"""What survives ``fork`` and gevent: real OS-thread primitives, gates around work that a fork
must not split, and keeping inherited objects alive in a child without ever calling them.

A forked child inherits copies of the parent's event loops, aiohttp sessions, Redis clients
and SQLite connections. Calling any of them there harms the parent: closing a transport
unregisters the parent's socket from the epoll instance both share, closing an SQLite
connection may checkpoint and delete the parent's WAL. Even dropping them runs their
destructors (which close, log and warn), at the latest when the child's interpreter finalizes
its modules. So a child hands them to :func:`keep_forever`, which takes a reference that is
never released: they are neither called nor destroyed.

Under gevent's monkey-patching, ``threading`` and ``_thread`` make greenlets, not threads; a
background event loop must run on a real OS thread (:func:`original`), and its callers must
wait cooperatively so that the hub keeps running (:func:`cooperative`).
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["ForkGate", "RealEvent", "cooperative", "keep_forever", "original", "start_thread"]

_kept: list[object] = []  # the fallback when the interpreter offers no way to leak


def keep_forever(obj: object) -> None:
    """Never let *obj* be destroyed in this process (a forked child's inherited objects)."""
    try:
        import ctypes

        ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))
    except (ImportError, AttributeError, OSError):  # pragma: no cover - no ctypes
        _kept.append(obj)


def original(module: str, name: str) -> Any:
    """``module.name`` as it was before gevent's monkey-patching (as it is without gevent)."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None:
        try:
            return monkey.get_original(module, name)
        except (AttributeError, ImportError):  # pragma: no cover - not patched by gevent
            pass
    return getattr(__import__(module), name)


def cooperative() -> bool:
    """Whether threads are gevent-patched: a caller must wait by yielding to the hub."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


_gates: weakref.WeakSet[ForkGate] = weakref.WeakSet()


class ForkGate:
    """Held around a step that a fork must not split (SQLite calls of the journal writer).

    ``os.register_at_fork(before=...)`` takes every live gate (waiting at most a second for
    each), so a fork happens between steps: the child never inherits SQLite's or OpenSSL's
    internal locks in the middle of a call. Reentrant only by design of its users (one
    thread each).
    """

    __slots__ = ("__weakref__", "_lock")

    def __init__(self) -> None:
        self._lock = original("_thread", "allocate_lock")()
        _gates.add(self)

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


_taken: list[Any] = []


def _before_fork() -> None:
    for gate in list(_gates):
        if gate._lock.acquire(timeout=1.0):
            _taken.append(gate._lock)


def _after_fork_in_parent() -> None:
    while _taken:
        _taken.pop().release()


def _after_fork_in_child() -> None:
    _taken.clear()
    allocate = original("_thread", "allocate_lock")
    for gate in list(_gates):
        # The parent's thread may have held it at the fork: a fresh one, whatever its state.
        gate._lock = allocate()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)


def start_thread(target: Callable[[], object], name: str) -> None:
    """Start *target* on a new daemon OS thread (a real one under gevent, where
    ``threading.Thread`` would make a greenlet that only runs when its hub does)."""
    if cooperative():
        original("_thread", "start_new_thread")(target, ())
    else:
        threading.Thread(target=target, name=name, daemon=True).start()


class RealEvent:
    """``threading.Event`` on real OS locks (under gevent, ``threading.Event`` is a greenlet
    event, which an OS thread cannot wait on)."""

    __slots__ = ("_flag", "_gate", "_mutex")

    def __init__(self) -> None:
        allocate = original("_thread", "allocate_lock")
        self._mutex = allocate()
        self._gate = allocate()  # held while the flag is clear
        self._gate.acquire()
        self._flag = False

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        with self._mutex:
            if not self._flag:
                self._flag = True
                self._gate.release()

    def clear(self) -> None:
        with self._mutex:
            if self._flag:
                self._flag = False
                self._gate.acquire()  # a waiter holds it only for an instant

    def wait(self, timeout: float | None = None) -> bool:
        if self._flag:
            return True
        if self._gate.acquire(True, -1 if timeout is None else max(0.0, timeout)):
            self._gate.release()
        return self._flag
