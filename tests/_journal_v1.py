"""A journal file of format 1, written the way format 1 wrote it (frozen here, not imported).

Format 1 stored a body as a JSON array of the fields in constructor order, a UTM or cart
item as a pair: views as ``[item_id, contact_id, time, category, session_id, new_session,
language, url, external_referrer, [[key, value], ...]]``, carts as ``[cart_reference,
contact_id, [[sku, quantity], ...], time, language, url]``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE views (seq INTEGER PRIMARY KEY, written REAL NOT NULL, body BLOB NOT NULL);
CREATE TABLE carts (
    ref TEXT PRIMARY KEY, instant INTEGER NOT NULL, written REAL NOT NULL, body BLOB NOT NULL
);
"""
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def instant(time: str) -> int:
    delta = datetime.fromisoformat(time.replace("Z", "+00:00")) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def write_v1_journal(
    path: Path, owner: str, views: list[list[Any]], carts: list[list[Any]],
    *, raw_views: Sequence[bytes] = (),
) -> Path:
    """A format-1 journal file at *path*, written now by a process that is gone (no lock).

    *views* and *carts* are format-1 field arrays; *raw_views* are view bodies stored as
    they are, after the others.
    """
    written = time.time()
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("BEGIN IMMEDIATE")
        db.execute(f"PRAGMA application_id = {0x56544A4E}")
        db.execute("PRAGMA user_version = 1")
        for statement in SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute("INSERT INTO meta VALUES ('owner', ?)", (owner,))
        # Format 1 inserted a run of views with one statement over one JSON array.
        db.execute("INSERT INTO views (seq, written, body) SELECT 1 + key, ?, value "
                   "FROM json_each(?)", (written, orjson.dumps(views)))
        for body in raw_views:
            db.execute("INSERT INTO views (written, body) VALUES (?, ?)", (written, body))
        db.executemany(
            "INSERT INTO carts (ref, instant, written, body) VALUES (?, ?, ?, ?)",
            [(c[0], instant(c[3]), written, orjson.dumps(c)) for c in carts],
        )
        db.execute("COMMIT")
    return path
