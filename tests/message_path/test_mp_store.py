"""The SQLite store: WAL, cursor durability modes, clear errors on foreign files, outbox rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from xmtp_supervisor.store import Cursor, Store, StoreError


def test_fresh_store_is_wal_and_starts_empty(db: Path) -> None:
    with Store(db) as s:
        assert s.cursor("c1") is None
        assert s.cursors() == {}
    mode = sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_batch_mode_keeps_updates_in_memory_until_flush(db: Path) -> None:
    s = Store(db, durability="batch", batch_size=3)
    assert s.advance("c1", 10, "a") is False
    assert s.advance("c1", 20, "b") is False
    assert s.cursor("c1") == Cursor(20, "b")
    assert s.pending == 2
    assert Store(db).cursor("c1") is None  # another process sees nothing yet
    assert s.advance("c2", 5, "x") is True  # batch full: flush due
    assert s.flush() == 2  # two conversations written
    assert s.pending == 0
    other = Store(db)
    assert other.cursor("c1") == Cursor(20, "b") and other.cursor("c2") == Cursor(5, "x")
    s.close()


def test_per_message_mode_commits_every_advance(db: Path) -> None:
    s = Store(db, durability="per-message")
    s.advance("c1", 10, "a")
    assert Store(db).cursor("c1") == Cursor(10, "a")
    assert s.pending == 0


def test_close_flushes(db: Path) -> None:
    s = Store(db)
    s.advance("c1", 10, "a")
    s.close()
    s.close()  # twice is harmless
    assert Store(db).cursor("c1") == Cursor(10, "a")


def test_cursor_never_moves_backwards(db: Path) -> None:
    with Store(db) as s:
        s.advance("c1", 20, "b")
        s.advance("c1", 10, "a")
        assert s.cursor("c1") == Cursor(20, "b")


def test_garbage_file_is_refused_with_path_and_fix(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_bytes(b"this is not a database, just some text" * 100)
    with pytest.raises(StoreError) as err:
        Store(bad)
    assert str(bad) in str(err.value)
    assert "store.path" in str(err.value)


def test_other_applications_database_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="another application"):
        Store(other)


def test_directory_and_missing_parent_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="directory"):
        Store(tmp_path)
    with pytest.raises(StoreError, match="does not exist"):
        Store(tmp_path / "nope" / "x.db")


def test_outbox_add_is_idempotent_by_key(store: Store) -> None:
    first = store.outbox_add("c1", "hello", "m1:0", now=1.0)
    assert first is not None and first.state == "pending"
    assert store.outbox_add("c1", "hello", "m1:0", now=2.0) is None
    assert [e.idempotency_key for e in store.outbox_pending()] == ["m1:0"]
    store.outbox_mark_sent(first.id, attempts=1)
    assert store.outbox_pending() == []
    assert store.outbox_add("c1", "hello", "m1:0", now=3.0) is None  # still known once sent
    assert store.outbox_counts() == {"sent": 1}
    assert store.outbox_prune(sent_before=0.5) == 0
    assert store.outbox_prune(sent_before=10.0) == 1
