"""Storage for the dev node: one SQLite database, in memory unless a file path is given.

Using SQLite for both modes keeps a single code path; ``":memory:"`` gives the throwaway default
and a file lets a restarted node keep (or, deleted, lose) its data on purpose. The store is not
thread-safe by itself: the node only touches it from its own event-loop thread.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass

MAX_PAGE = 100  # xmtp-node-go caps every page at 100 rows
ASCENDING = 1  # SortDirection values of the MLS API
DESCENDING = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS identity_updates (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    inbox_id TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS identity_updates_inbox ON identity_updates (inbox_id, seq);
CREATE TABLE IF NOT EXISTS identifiers (
    identifier TEXT PRIMARY KEY,
    inbox_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS key_packages (
    installation_key BLOB PRIMARY KEY,
    data BLOB NOT NULL,
    updated_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS group_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic BLOB NOT NULL,
    created_ns INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS group_messages_topic ON group_messages (topic, id);
CREATE TABLE IF NOT EXISTS welcome_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic BLOB NOT NULL,
    created_ns INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS welcome_messages_topic ON welcome_messages (topic, id);
CREATE TABLE IF NOT EXISTS commit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id BLOB NOT NULL,
    data BLOB NOT NULL
);
"""

TABLES = ("group_messages", "welcome_messages")


@dataclass(frozen=True, slots=True)
class Row:
    """One stored envelope: its node-assigned id, arrival time and opaque payload."""

    id: int
    created_ns: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Page:
    """A page of rows and, only when the page is full, the cursor for the next one."""

    rows: list[Row]
    direction: int
    limit: int
    next_cursor: int | None


def normalize_paging(direction: int, limit: int) -> tuple[int, int]:
    """Apply xmtp-node-go's defaults: no direction means descending; limit 0 or >100 means 100."""
    if direction not in (ASCENDING, DESCENDING):
        direction = DESCENDING
    if limit <= 0 or limit > MAX_PAGE:
        limit = MAX_PAGE
    return direction, limit


class Store:
    """Identity updates, key packages, welcomes and group messages (see module docstring)."""

    def __init__(self, db_path: str | None = None) -> None:
        self.db_path = db_path
        self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.db_path or ":memory:", check_same_thread=False)
        db.executescript(_SCHEMA)
        db.commit()
        return db

    def close(self) -> None:
        self._db.close()

    def wipe(self) -> None:
        """Forget everything (a node that lost its disk)."""
        self._db.close()
        if self.db_path and os.path.exists(self.db_path):
            os.remove(self.db_path)
        self._db = self._open()

    # identity -----------------------------------------------------------------------------
    def add_identity_update(
        self, inbox_id: str, data: bytes, added: list[str], removed: list[str]
    ) -> int:
        """Append an identity update and maintain the identifier -> inbox id index."""
        with self._db:
            cur = self._db.execute(
                "INSERT INTO identity_updates (inbox_id, created_ns, data) VALUES (?, ?, ?)",
                (inbox_id, time.time_ns(), data),
            )
            for identifier in added:
                self._db.execute(
                    "INSERT OR REPLACE INTO identifiers (identifier, inbox_id) VALUES (?, ?)",
                    (identifier, inbox_id),
                )
            for identifier in removed:
                self._db.execute(
                    "DELETE FROM identifiers WHERE identifier = ? AND inbox_id = ?",
                    (identifier, inbox_id),
                )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def identity_updates(self, inbox_id: str, after_seq: int) -> list[Row]:
        rows = self._db.execute(
            "SELECT seq, created_ns, data FROM identity_updates"
            " WHERE inbox_id = ? AND seq > ? ORDER BY seq",
            (inbox_id, after_seq),
        ).fetchall()
        return [Row(*row) for row in rows]

    def inbox_id_for(self, identifier: str) -> str | None:
        row = self._db.execute(
            "SELECT inbox_id FROM identifiers WHERE identifier = ?", (identifier,)
        ).fetchone()
        return None if row is None else str(row[0])

    # key packages -------------------------------------------------------------------------
    def put_key_package(self, installation_key: bytes, data: bytes) -> None:
        """Keep only the latest key package per installation (clients rotate them)."""
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO key_packages (installation_key, data, updated_ns)"
                " VALUES (?, ?, ?)",
                (installation_key, data, time.time_ns()),
            )

    def key_package(self, installation_key: bytes) -> bytes | None:
        row = self._db.execute(
            "SELECT data FROM key_packages WHERE installation_key = ?", (installation_key,)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def delete_key_package(self, installation_key: bytes) -> None:
        with self._db:
            self._db.execute(
                "DELETE FROM key_packages WHERE installation_key = ?", (installation_key,)
            )

    # envelopes ----------------------------------------------------------------------------
    def append(self, table: str, topic: bytes, data: bytes) -> Row:
        """Store an envelope under a topic (group id or installation key); ids only increase."""
        created_ns = time.time_ns()
        with self._db:
            cur = self._db.execute(
                f"INSERT INTO {_table(table)} (topic, created_ns, data) VALUES (?, ?, ?)",
                (topic, created_ns, data),
            )
        assert cur.lastrowid is not None
        return Row(cur.lastrowid, created_ns, data)

    def page(self, table: str, topic: bytes, direction: int, limit: int, cursor: int) -> Page:
        """One page as xmtp-node-go serves it (see :func:`normalize_paging`)."""
        direction, limit = normalize_paging(direction, limit)
        if direction == ASCENDING:
            sql = f"SELECT id, created_ns, data FROM {_table(table)} WHERE topic = ? AND id > ?"
            sql += " ORDER BY id ASC LIMIT ?"
            args: tuple[object, ...] = (topic, cursor, limit)
        elif cursor > 0:
            sql = f"SELECT id, created_ns, data FROM {_table(table)} WHERE topic = ? AND id < ?"
            sql += " ORDER BY id DESC LIMIT ?"
            args = (topic, cursor, limit)
        else:
            sql = f"SELECT id, created_ns, data FROM {_table(table)} WHERE topic = ?"
            sql += " ORDER BY id DESC LIMIT ?"
            args = (topic, limit)
        rows = [Row(*row) for row in self._db.execute(sql, args).fetchall()]
        next_cursor = rows[-1].id if len(rows) == limit else None
        return Page(rows, direction, limit, next_cursor)

    def after(self, table: str, topic: bytes, cursor: int) -> list[Row]:
        """Every envelope of a topic after a cursor, ascending (a subscription's catch-up)."""
        rows = self._db.execute(
            f"SELECT id, created_ns, data FROM {_table(table)} WHERE topic = ? AND id > ?"
            " ORDER BY id ASC",
            (topic, cursor),
        ).fetchall()
        return [Row(*row) for row in rows]

    def newest(self, table: str, topic: bytes) -> Row | None:
        row = self._db.execute(
            f"SELECT id, created_ns, data FROM {_table(table)} WHERE topic = ?"
            " ORDER BY id DESC LIMIT 1",
            (topic,),
        ).fetchone()
        return None if row is None else Row(*row)

    def add_commit_log(self, group_id: bytes, data: bytes) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO commit_log (group_id, data) VALUES (?, ?)", (group_id, data)
            )


def _table(name: str) -> str:
    if name not in TABLES:
        raise ValueError(f"unknown table {name!r}")
    return name
