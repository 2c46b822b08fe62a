"""The journal's SQL layer on real files: upsert, deletes, locks, foreign and corrupt files."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import orjson
import pytest
from _journal_v1 import write_v1_journal

import voyado_tracking as vt
from voyado_tracking._journal import _db as _journal_db
from voyado_tracking._journal._body import decode_cart, decode_view, encode_cart, encode_views
from voyado_tracking._journal._db import (
    CorruptFile,
    ForeignFile,
    JournalFile,
    instant_of,
    journal_files,
    private_directory,
)

OWNER = "owner-digest"
CONTACT = "3fa85f64-5717-4562-b3fc-2c963f66afa6"


def cart(ref: str, when: str) -> vt.Cart:
    return vt.Cart(ref, CONTACT, time=when)


def cart_row(c: vt.Cart, written: float = 1.0) -> tuple[str, int, float, bytes]:
    return (c.cart_reference, instant_of(c), written, orjson.dumps({"time": c.time.isoformat()}))


def create(directory: Path, max_bytes: int = 1_000_000) -> JournalFile:
    return JournalFile.create(directory, OWNER, synchronous="NORMAL", max_bytes=max_bytes)


def stored_times(file: JournalFile) -> dict[str, str]:
    rows = file.db.execute("SELECT ref, body FROM carts").fetchall()
    return {ref: orjson.loads(body)["time"] for ref, body in rows}


def test_views_and_carts_round_trip_through_their_rows(tmp_path: Path) -> None:
    views = [
        vt.ProductView("SKU-1", CONTACT, time="2024-05-01T10:00:00.123456+02:00",
                       category="shoes", session_id="s", new_session=False, language="sv-SE",
                       url="https://shop.example/p/1", external_referrer="https://ref.example",
                       utm=[vt.Utm("utm_source", "mail"), vt.Utm("utm_term", "")]),
        vt.ProductView("SKU-2", CONTACT),
    ]
    c = vt.Cart("c1", CONTACT, [vt.CartItem("SKU-1", 2)], time="2024-05-01T10:00:00-05:00",
                language="en-US", url="https://shop.example/cart")
    file = create(tmp_path)
    file.begin()
    file.add_views(1, 1.0, encode_views(views))
    file.add_carts([(c.cart_reference, instant_of(c), 1.0, encode_cart(c))])
    file.commit()
    assert [decode_view(body) for _, _, body in file.read_views(0, 10)] == views
    assert [decode_cart(body) for _, _, body in file.read_carts(0, 10)] == [c]
    assert decode_cart(encode_cart(c)).time.utcoffset() == c.time.utcoffset()


def test_newer_or_equal_cart_replaces_the_stored_row_older_does_not(tmp_path: Path) -> None:
    file = create(tmp_path)
    file.add_carts([cart_row(cart("c1", "2024-05-01T10:00:00+02:00"))])
    file.add_carts([cart_row(cart("c1", "2024-05-01T07:59:00Z"))])  # older instant
    assert stored_times(file) == {"c1": "2024-05-01T10:00:00+02:00"}
    file.add_carts([cart_row(cart("c1", "2024-05-01T08:00:00Z"))])  # the same instant
    assert stored_times(file) == {"c1": "2024-05-01T08:00:00+00:00"}


def test_delivered_cart_deletes_only_rows_up_to_its_instant(tmp_path: Path) -> None:
    file = create(tmp_path)
    newer = cart("c1", "2024-05-01T10:00:05Z")
    file.add_carts([cart_row(newer), cart_row(cart("c2", "2024-05-01T10:00:00Z"))])
    delivered_older = cart("c1", "2024-05-01T12:00:00+02:00")  # 10:00:00Z, before `newer`
    file.delete_carts([("c1", instant_of(delivered_older)),
                       ("c2", instant_of(cart("c2", "2024-05-01T10:00:00Z")))])
    assert stored_times(file) == {"c1": "2024-05-01T10:00:05+00:00"}


def test_views_are_read_back_in_row_order_after_deletes(tmp_path: Path) -> None:
    file = create(tmp_path)
    file.add_views(1, 1.0, b"[" + b",".join([b"[]"] * 10) + b"]")
    file.delete_views([2, 3, 7])
    first = file.read_views(0, 4)
    assert [row[0] for row in first] == [1, 4, 5, 6]
    assert [row[0] for row in file.read_views(first[-1][0], 10)] == [8, 9, 10]


def test_a_locked_file_is_not_adopted(tmp_path: Path) -> None:
    file = create(tmp_path)
    assert JournalFile.adopt(file.path, OWNER, synchronous="NORMAL") is None


def test_a_released_file_is_adopted_with_its_rows(tmp_path: Path) -> None:
    file = create(tmp_path)
    file.begin()
    file.add_views(1, 1.0, b"[[]]")
    file.commit()
    file.release()
    adopted = JournalFile.adopt(file.path, OWNER, synchronous="NORMAL")
    assert adopted is not None
    assert adopted.counts() == (0, 1)


def test_a_file_for_another_tenant_or_key_is_left_alone(tmp_path: Path) -> None:
    file = create(tmp_path)
    file.release()
    with pytest.raises(ForeignFile, match="another Voyado tenant or API key"):
        JournalFile.adopt(file.path, "someone-else", synchronous="NORMAL")
    assert file.path.exists()
    assert create(tmp_path).path != file.path  # and its lock was given back
    assert JournalFile.adopt(file.path, OWNER, synchronous="NORMAL") is not None


def test_a_newer_format_is_left_alone(tmp_path: Path) -> None:
    file = create(tmp_path)
    file.db.execute(f"PRAGMA user_version = {_journal_db.FORMAT + 1}")
    file.release()
    with pytest.raises(ForeignFile, match="newer"):
        JournalFile.adopt(file.path, OWNER, synchronous="NORMAL")


def test_an_older_format_is_migrated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = create(tmp_path)
    file.release()
    monkeypatch.setattr(_journal_db, "FORMAT", _journal_db.FORMAT + 1)
    monkeypatch.setitem(_journal_db.MIGRATIONS, _journal_db.FORMAT - 1,
                        "ALTER TABLE views ADD COLUMN extra TEXT")
    adopted = JournalFile.adopt(file.path, OWNER, synchronous="NORMAL")
    assert adopted is not None
    assert adopted.db.execute("PRAGMA user_version").fetchone()[0] == _journal_db.FORMAT
    columns = [row[1] for row in adopted.db.execute("PRAGMA table_info(views)")]
    assert "extra" in columns


def test_a_corrupt_file_is_renamed_aside(tmp_path: Path) -> None:
    path = tmp_path / "journal-0123456789abcdef.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CorruptFile):
        JournalFile.adopt(path, OWNER, synchronous="NORMAL")
    assert not path.exists()
    assert path.with_name(path.name + ".corrupt").read_bytes().startswith(b"this is not")
    assert journal_files(tmp_path) == []


def test_an_empty_file_of_a_process_killed_while_creating_it_is_removed(tmp_path: Path) -> None:
    path = tmp_path / "journal-0123456789abcdef.sqlite3"
    path.touch()
    assert JournalFile.adopt(path, OWNER, synchronous="NORMAL") is None
    assert list(tmp_path.iterdir()) == []


def test_max_bytes_makes_writes_fail_with_full(tmp_path: Path) -> None:
    file = create(tmp_path, max_bytes=65_536)
    file.begin()
    with pytest.raises(sqlite3.OperationalError, match="full"):
        file.add_views(1, 1.0, orjson.dumps(["x" * 1000] * 200))
    file.rollback()


def test_journal_files_and_directories_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        directory = tmp_path / "a" / "journal"
        private_directory(directory)
        file = create(directory)
        file.begin()
        file.add_views(1, 1.0, b"[[]]")
        file.commit()
    finally:
        os.umask(old)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_remove_deletes_the_database_and_its_lock(tmp_path: Path) -> None:
    file = create(tmp_path)
    file.remove()
    assert list(tmp_path.iterdir()) == []


def test_a_format_1_file_is_rewritten_to_format_2_when_adopted(tmp_path: Path) -> None:
    path = write_v1_journal(
        tmp_path / "journal-0123456789abcdef.sqlite3", OWNER,
        views=[["SKU-1", CONTACT, "2024-05-01T10:00:00+02:00", None, None, None, None, None,
                None, [["utm_source", "mail"]]]],
        carts=[["c1", CONTACT, [["SKU-1", 2]], "2024-05-01T10:00:00Z", "sv-SE", None]],
        raw_views=[b"not json"],
    )
    adopted = JournalFile.adopt(path, OWNER, synchronous="NORMAL")
    assert adopted is not None
    assert adopted.db.execute("PRAGMA user_version").fetchone()[0] == _journal_db.FORMAT == 2
    views = adopted.read_views(0, 10)
    assert [row.rowid for row in views] == [1, 2]
    assert orjson.loads(views[0].body) == {
        "item_id": "SKU-1", "contact_id": CONTACT, "time": "2024-05-01T10:00:00+02:00",
        "category": None, "session_id": None, "new_session": None, "language": None,
        "url": None, "external_referrer": None, "utm": [{"key": "utm_source", "value": "mail"}],
    }
    assert views[1].body == b"not json"  # left for recovery to remove as unreadable
    [cart_row] = adopted.read_carts(0, 10)
    assert decode_cart(cart_row.body) == vt.Cart("c1", CONTACT, [vt.CartItem("SKU-1", 2)],
                                                 time="2024-05-01T10:00:00Z", language="sv-SE")
    # The instants the upsert and the deletes compare are untouched.
    adopted.delete_carts([("c1", instant_of(vt.Cart("c1", CONTACT, time="2024-05-01T10:00:00Z")))])
    assert adopted.counts() == (0, 2)
