"""The journal's files: one SQLite database per process, its lock, and the SQL on them.

Synchronous and thread-agnostic: only the journal's writer thread calls this module, so the
event loop never waits on SQLite. A journal file is ``journal-<random>.sqlite3`` with a
companion ``.lock`` file; the process that holds an exclusive ``flock`` on the lock file owns
the database. ``flock`` (not ``fcntl`` record locks) because two buffers of one process must
exclude each other too, and a lock file (not the database itself) because closing any
descriptor of a database drops the POSIX locks SQLite holds on it.

Schema (``PRAGMA user_version`` is the format, ``application_id`` marks our files)::

    meta(key PRIMARY KEY, value)                          owner: a digest of base URL + key
    views(seq INTEGER PRIMARY KEY, written REAL, body BLOB)
    carts(ref TEXT PRIMARY KEY, instant INTEGER, written REAL, body BLOB)

``written`` is the wall clock (Unix seconds) at write and ``instant`` a cart's ``time`` in
microseconds since the epoch, so that "latest wins" and "delete what was delivered" compare
instants, not strings with offsets.

``body`` is the event as JSON, written and read by ``_journal._body``: format 2 is an object
keyed by field name, so a field added later needs no new format; a format-1 file (bodies as
arrays in a frozen field order) is rewritten to format 2 when it is adopted, in the
transaction that bumps its ``user_version``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from itertools import starmap
from pathlib import Path
from typing import Final, NamedTuple

import orjson

from .._models import Cart
from ._body import V1_MIGRATION, add_v1_functions

__all__ = [
    "FORMAT",
    "CorruptFile",
    "EmptyFile",
    "ForeignFile",
    "JournalFile",
    "Row",
    "instant_of",
    "journal_files",
    "private_directory",
]

FORMAT: Final = 2
APPLICATION_ID: Final = 0x56544A4E  # "VTJN"
PREFIX: Final = "journal-"
SUFFIX: Final = ".sqlite3"

# Changes from an older format, run in order when a file is adopted: {from: script}.
MIGRATIONS: dict[int, str] = {1: V1_MIGRATION}

_SCHEMA: Final = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE views (seq INTEGER PRIMARY KEY, written REAL NOT NULL, body BLOB NOT NULL);
CREATE TABLE carts (
    ref TEXT PRIMARY KEY, instant INTEGER NOT NULL, written REAL NOT NULL, body BLOB NOT NULL
);
"""
_UPSERT_CART: Final = (
    "INSERT INTO carts (ref, instant, written, body) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (ref) DO UPDATE SET instant = excluded.instant, written = excluded.written, "
    "body = excluded.body WHERE excluded.instant >= carts.instant"
)
_DELETE_VIEWS: Final = "DELETE FROM views WHERE seq IN (SELECT value FROM json_each(?))"
_DELETE_CARTS: Final = (
    "DELETE FROM carts WHERE rowid IN (SELECT carts.rowid FROM json_each(?) AS j "
    "JOIN carts ON carts.ref = j.value ->> 0 AND carts.instant <= j.value ->> 1)"
)
_COUNT_CARTS: Final = (
    "SELECT count(DISTINCT carts.rowid) FROM json_each(?) AS j JOIN carts "
    "ON carts.ref = j.value ->> 0 "
    "AND carts.instant <= j.value ->> 1 WHERE carts.rowid > ?"
)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND: Final = timedelta(microseconds=1)


class Row(NamedTuple):
    """A row as recovery reads it."""

    rowid: int  # a view's seq, a cart's rowid
    written: float
    body: bytes | str


class ForeignFile(Exception):
    """A journal file this buffer must leave alone (another tenant or key, a newer format)."""


class CorruptFile(Exception):
    """A journal file that is not a readable database; it was renamed to :attr:`path`."""

    def __init__(self, path: Path, error: BaseException) -> None:
        super().__init__(f"{error}; renamed to {path.name}")
        self.path = path


class EmptyFile(Exception):
    """A journal file without a schema: its process died while creating it."""


def instant_of(cart: Cart) -> int:
    """A cart's ``time`` as an integer instant (microseconds since the epoch)."""
    return (cart.time - _EPOCH) // _MICROSECOND


def private_directory(directory: Path) -> None:
    """Create *directory* (and parents) readable by this user only, if it does not exist."""
    if not directory.is_dir():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)  # the mode given to mkdir is masked by the umask


def journal_files(directory: Path) -> list[Path]:
    """The journal databases in *directory*, oldest first."""
    found = [p for p in directory.glob(f"{PREFIX}*{SUFFIX}") if p.is_file()]
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name))


def _lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on *path* (created 0600), or None if it is taken."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    os.fchmod(fd, 0o600)
    _held_locks.add(fd)
    return fd


# The lock descriptors this process holds. A forked child closes its copies without
# unlocking: flock belongs to the open file, which the parent still holds and uses.
_held_locks: set[int] = set()


def _close_inherited_locks() -> None:
    for fd in _held_locks:
        with contextlib.suppress(OSError):
            os.close(fd)
    _held_locks.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited_locks)


class JournalFile:
    """One journal database, locked by this process. Not thread-safe: one thread uses it."""

    def __init__(self, path: Path, lock_fd: int, db: sqlite3.Connection | None) -> None:
        self.path = path
        self._lock_fd: int | None = lock_fd
        self.db: sqlite3.Connection = db  # type: ignore[assignment]  # set before use

    def __repr__(self) -> str:
        return f"<voyado_tracking journal file {self.path.name}>"

    # -- opening ----------------------------------------------------------------------------

    @classmethod
    def create(
        cls, directory: Path, owner: str, *, synchronous: str, max_bytes: int
    ) -> JournalFile:
        """A new, locked, empty journal file in *directory* for this process."""
        while True:
            path = directory / f"{PREFIX}{secrets.token_hex(8)}{SUFFIX}"
            lock_fd = _lock(path.with_name(path.name + ".lock"))
            if lock_fd is not None and not path.exists():
                break
            if lock_fd is not None:  # pragma: no cover - a 64-bit name collision
                os.close(lock_fd)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            os.fchmod(fd, 0o600)  # whatever the umask; SQLite gives -wal and -shm this mode
            os.close(fd)
            if synchronous == "FULL":  # power loss must not lose the new directory entry
                _fsync_directory(directory)
            db = _connect(path, create=True)
            try:
                _configure(db, synchronous)
                db.execute(f"PRAGMA max_page_count = {max(16, max_bytes // _page_size(db))}")
                with _transaction(db):
                    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    db.execute(f"PRAGMA user_version = {FORMAT}")
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute("INSERT INTO meta VALUES ('owner', ?)", (owner,))
            except BaseException:
                db.close()
                raise
        except BaseException:
            with contextlib.suppress(OSError):
                path.unlink()
            _unlock(path, lock_fd)
            raise
        return cls(path, lock_fd, db)

    @classmethod
    def adopt(cls, path: Path, owner: str, *, synchronous: str) -> JournalFile | None:
        """Lock and open the journal file of a process that is gone; None if it is alive.

        Raises :class:`ForeignFile` (lock released) for a file to leave alone, and
        :class:`CorruptFile` for one that is not a readable database (renamed aside).
        """
        lock_fd = _lock(path.with_name(path.name + ".lock"))
        if lock_fd is None:
            return None
        if not path.exists():  # its owner finished and removed it meanwhile
            _unlock(path, lock_fd)
            return None
        journal = cls(path, lock_fd, None)
        try:
            journal.db = _connect(path, create=False)
            _configure(journal.db, synchronous)
            journal._check(owner)
        except ForeignFile:
            journal.release()
            raise
        except EmptyFile:
            journal.remove()
            return None
        except sqlite3.DatabaseError as error:
            raise CorruptFile(journal.set_aside(), error) from None
        except BaseException:
            journal.release()
            raise
        return journal

    def _check(self, owner: str) -> None:
        db = self.db
        application_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if application_id == 0 and version == 0 and not _tables(db):
            raise EmptyFile  # created by a process killed before it wrote the schema
        if application_id != APPLICATION_ID:
            raise ForeignFile("it is not a voyado_tracking journal")
        if version > FORMAT:
            raise ForeignFile(f"it has format {version}, newer than this version's {FORMAT}")
        stored = db.execute("SELECT value FROM meta WHERE key = 'owner'").fetchone()
        if stored is None or stored[0] != owner:
            raise ForeignFile("it was written for another Voyado tenant or API key")
        if version < FORMAT:
            add_v1_functions(db)
            with _transaction(db):
                for step in range(version, FORMAT):
                    for statement in MIGRATIONS[step].split(";"):
                        if statement.strip():
                            db.execute(statement)
                db.execute(f"PRAGMA user_version = {FORMAT}")

    # -- writing ------------------------------------------------------------------------------

    def add_views(self, first_seq: int, written: float, bodies: bytes) -> None:
        """Insert the views of *bodies* (from :func:`encode_views`) as rows first_seq, ..."""
        self.db.execute(
            "INSERT OR REPLACE INTO views (seq, written, body) "
            "SELECT ? + key, ?, value FROM json_each(?)",
            (first_seq, written, bodies),
        )

    def add_carts(self, rows: Iterable[tuple[str, int, float, bytes | str]]) -> None:
        """Upsert carts: a row is replaced by a newer-or-equal instant only."""
        self.db.executemany(_UPSERT_CART, rows)

    def delete_views(self, seqs: Sequence[int]) -> None:
        """Delete the views of *seqs*: one statement, however many (the GIL is free inside)."""
        self.db.execute(_DELETE_VIEWS, (orjson.dumps(seqs),))

    def delete_carts(
        self, delivered: Sequence[tuple[str, int]], *, unread_after: int | None = None
    ) -> int:
        """Delete carts up to the delivered instant (a newer pending update stays); return
        how many of the deleted rows come after row *unread_after* (0 when None)."""
        pairs = orjson.dumps(delivered)
        unread = 0
        if unread_after is not None:
            unread = self.db.execute(_COUNT_CARTS, (pairs, unread_after)).fetchone()[0]
        self.db.execute(_DELETE_CARTS, (pairs,))
        return int(unread)

    def delete_cart_rows(self, rowids: Sequence[int]) -> None:
        self.db.executemany("DELETE FROM carts WHERE rowid = ?", ((r,) for r in rowids))

    def begin(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.db.execute("COMMIT")

    def rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.execute("ROLLBACK")

    # -- reading ------------------------------------------------------------------------------

    def read_views(self, after: int, limit: int) -> list[Row]:
        """Up to *limit* views with ``seq > after``, in order."""
        return list(starmap(Row, self.db.execute(
            "SELECT seq, written, body FROM views WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        )))

    def read_carts(self, after: int, limit: int) -> list[Row]:
        """Up to *limit* carts with ``rowid > after`` (row ids stay put on update)."""
        return list(starmap(Row, self.db.execute(
            "SELECT rowid, written, body FROM carts WHERE rowid > ? ORDER BY rowid LIMIT ?",
            (after, limit),
        )))

    def is_empty(self) -> bool:
        row = self.db.execute(
            "SELECT NOT EXISTS (SELECT 1 FROM views) AND NOT EXISTS (SELECT 1 FROM carts)"
        ).fetchone()
        return bool(row[0])

    def counts(self) -> tuple[int, int]:
        """(carts, views) held."""
        carts = self.db.execute("SELECT count(*) FROM carts").fetchone()[0]
        views = self.db.execute("SELECT count(*) FROM views").fetchone()[0]
        return int(carts), int(views)

    # -- closing ------------------------------------------------------------------------------

    def _close(self) -> None:
        db: sqlite3.Connection | None = self.db
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()

    def release(self) -> None:
        """Close the database and give up the lock; the file stays for a later start."""
        self._close()
        if self._lock_fd is not None:
            _unlock(self.path, self._lock_fd, remove=False)
            self._lock_fd = None

    def remove(self) -> None:
        """Close, delete the database (it holds nothing more), then the lock file."""
        self._close()
        for name in (self.path.name, self.path.name + "-wal", self.path.name + "-shm"):
            with contextlib.suppress(FileNotFoundError):
                self.path.with_name(name).unlink()
        if self._lock_fd is not None:
            _unlock(self.path, self._lock_fd)
            self._lock_fd = None

    def set_aside(self) -> Path:
        """Rename a corrupt database to ``<name>.corrupt`` (its WAL alongside), then unlock."""
        self._close()
        target = self.path.with_name(self.path.name + ".corrupt")
        for suffix in ("-wal", "-shm", ""):
            with contextlib.suppress(FileNotFoundError):
                self.path.with_name(self.path.name + suffix).rename(
                    target.with_name(target.name + suffix)
                )
        if self._lock_fd is not None:
            _unlock(self.path, self._lock_fd)
            self._lock_fd = None
        return target


def _connect(path: Path, *, create: bool) -> sqlite3.Connection:
    uri = path.resolve().as_uri() + ("?mode=rwc" if create else "?mode=rw")
    db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    return db


def _configure(db: sqlite3.Connection, synchronous: str) -> None:
    db.execute("PRAGMA busy_timeout = 1000")
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise sqlite3.OperationalError(f"could not switch the journal to WAL mode ({mode})")
    db.execute(f"PRAGMA synchronous = {synchronous}")


def _page_size(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA page_size").fetchone()[0])


def _tables(db: sqlite3.Connection) -> list[str]:
    return [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection):  # type: ignore[no-untyped-def]
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _unlock(path: Path, lock_fd: int, *, remove: bool = True) -> None:
    if remove:  # while still holding the lock: no one can be adopting this file now
        with contextlib.suppress(FileNotFoundError):
            path.with_name(path.name + ".lock").unlink()
    _held_locks.discard(lock_fd)
    os.close(lock_fd)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
