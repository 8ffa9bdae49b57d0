"""One SQLite file (WAL) with the per-conversation cursors and the reply outbox.

The cursor is what makes delivery at-least-once across crashes: catch-up fetches every message after
it, and the message path only moves it once a message has been handled. The outbox is what makes a
reply survive an outage: libxmtp gives up on a send while the network is down and never retries.

Cursor updates are kept in memory and written by :meth:`Store.flush`; with ``durability =
"per-message"`` every :meth:`Store.advance` flushes at once, with ``"batch"`` the message path's
flusher writes when ``batch_size`` updates are pending or ``batch_interval`` has passed, and always
on close. Outbox writes commit immediately: a reply must be on disk before it is sent.

WAL with ``synchronous=NORMAL`` survives a killed process; an OS crash or power loss may lose the
last few commits, which catch-up turns into re-deliveries, never into losses of handled state.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from fsm.policy import Store as StorePolicy

APPLICATION_ID = 0x584D5453
"""``PRAGMA application_id`` of our files ("XMTS"): tells our store from any other SQLite file."""

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cursors (
    conversation_id TEXT PRIMARY KEY,
    sent_at_ns INTEGER NOT NULL,
    message_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL,
    text TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    created_at REAL NOT NULL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (state, id);
CREATE TABLE IF NOT EXISTS handled (
    conversation_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    sent_at_ns INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, message_id)
);
CREATE INDEX IF NOT EXISTS handled_by_time ON handled (conversation_id, sent_at_ns);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

_FLOOR = "lookback_floor:"
"""Meta key prefix of each conversation's lookback floor (see ``Store._floor``)."""

PENDING = "pending"
SENT = "sent"


class StoreError(RuntimeError):
    """The store file cannot be used; the message names the path and the fix."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """The last handled message of a conversation: catch-up fetches what comes after it."""

    sent_at_ns: int
    message_id: str


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A reply not yet confirmed as sent. ``next_attempt_at`` is wall-clock (epoch) seconds."""

    id: int
    conversation_id: str
    text: str
    idempotency_key: str
    attempts: int
    next_attempt_at: float
    state: str


class Store:
    """The open store. Not thread-safe: use it from the event loop thread only."""

    def __init__(
        self,
        path: str | Path,
        *,
        durability: str = "batch",
        batch_size: int = 100,
        batch_interval: float = 1.0,
        lookback: float = 600.0,
        lookback_max_ids: int = 1000,
    ) -> None:
        if durability not in ("batch", "per-message"):
            raise ValueError(f"durability must be 'batch' or 'per-message', got {durability!r}")
        self.path = Path(path)
        self.durability = durability
        self.batch_size = batch_size
        self.batch_interval = batch_interval
        self._conn = _open(self.path)
        self._cursors: dict[str, Cursor] = {
            conv: Cursor(ns, mid)
            for conv, ns, mid in self._conn.execute(
                "SELECT conversation_id, sent_at_ns, message_id FROM cursors"
            )
        }
        self.lookback_ns = int(lookback * 1e9)
        self.lookback_max_ids = lookback_max_ids
        self._recent: dict[str, dict[str, int]] = {}
        self._floor: dict[str, int] = {}
        """Per conversation: the newest sent time among handled ids dropped by the count bound;
        at or before it, the window no longer knows which ids were handled."""
        for key, value in self._conn.execute("SELECT key, value FROM meta WHERE key LIKE ?",
                                             (f"{_FLOOR}%",)):
            self._floor[key[len(_FLOOR):]] = int(value)
        for conv, mid, ns in self._conn.execute(
            "SELECT conversation_id, message_id, sent_at_ns FROM handled ORDER BY sent_at_ns"
        ):
            self._remember(conv, mid, ns)
        self._recent_new: list[tuple[str, str, int]] = []
        self._dirty: dict[str, Cursor] = {}
        self._unflushed = 0
        self._per_message = durability == "per-message"
        self.closed = False
        self.flushes = 0
        """How many cursor commits were made (for metrics and tests)."""

    @classmethod
    def from_policy(cls, policy: StorePolicy, path: str | Path | None = None) -> Store:
        """Open the store configured by ``Policy.store`` (``path`` overrides ``store.path``)."""
        return cls(
            policy.path if path is None else path,
            durability=policy.durability,
            batch_size=policy.batch_size,
            batch_interval=policy.batch_interval,
            lookback=policy.lookback,
            lookback_max_ids=policy.lookback_max_ids,
        )

    # -- cursors -----------------------------------------------------------------------------

    def cursor(self, conversation_id: str) -> Cursor | None:
        """The conversation's cursor including unflushed updates; None before its first message."""
        return self._cursors.get(conversation_id)

    def cursors(self) -> dict[str, Cursor]:
        """Every conversation's cursor (a copy)."""
        return dict(self._cursors)

    def advance(self, conversation_id: str, sent_at_ns: int, message_id: str) -> bool:
        """Record a handled message; True when a batch is full and :meth:`flush` is due.

        The cursor never moves backwards. In ``per-message`` mode this commits before returning.
        """
        self._remember(conversation_id, message_id, sent_at_ns)
        self._recent_new.append((conversation_id, message_id, sent_at_ns))
        current = self._cursors.get(conversation_id)
        if current is not None and sent_at_ns < current.sent_at_ns:
            # handled late (the stream had skipped it): remembered, but the cursor stays
            if self._per_message:
                self.flush()
            return False
        cursor = Cursor(sent_at_ns, message_id)
        self._cursors[conversation_id] = cursor
        self._dirty[conversation_id] = cursor
        self._unflushed += 1
        if self._per_message:
            self.flush()
            return False
        return self._unflushed >= self.batch_size

    @property
    def pending(self) -> int:
        """Handled messages whose cursor update is not on disk yet: at most this many messages
        are delivered again after a crash."""
        return self._unflushed

    def _remember(self, conversation_id: str, message_id: str, sent_at_ns: int) -> None:
        recent = self._recent.get(conversation_id)
        if recent is None:
            recent = self._recent[conversation_id] = {}
        recent[message_id] = sent_at_ns
        if len(recent) > self.lookback_max_ids:
            oldest = next(iter(recent))  # the oldest handled first
            dropped = recent.pop(oldest)
            if dropped > self._floor.get(conversation_id, -1):
                self._floor[conversation_id] = dropped

    def behind_window(self, conversation_id: str, sent_at_ns: int) -> bool:
        """Too old for the window to tell whether it was handled: older than ``lookback``
        behind the cursor, or at or before an id the count bound dropped. Counted as handled."""
        cursor = self._cursors.get(conversation_id)
        if cursor is not None and sent_at_ns < cursor.sent_at_ns - self.lookback_ns:
            return True
        floor = self._floor.get(conversation_id)
        return floor is not None and sent_at_ns <= floor

    def handled_recently(self, conversation_id: str, message_id: str) -> bool:
        """Whether this message was handled inside the lookback window (survives restarts)."""
        recent = self._recent.get(conversation_id)
        return recent is not None and message_id in recent

    def lookback_from(self, conversation_id: str) -> int | None:
        """Where catch-up starts reading: ``lookback`` behind the cursor (None: no cursor)."""
        cursor = self._cursors.get(conversation_id)
        if cursor is None:
            return None
        return max(0, cursor.sent_at_ns - self.lookback_ns, self._floor.get(conversation_id, 0))

    def flush(self) -> int:
        """Commit pending cursor updates; returns how many were written."""
        if not self._dirty and not self._recent_new:
            return 0
        dirty, self._dirty = self._dirty, {}
        recent_new, self._recent_new = self._recent_new, []
        unflushed, self._unflushed = self._unflushed, 0
        rows = [(conv, c.sent_at_ns, c.message_id) for conv, c in dirty.items()]
        horizons = [
            (conv, max(c.sent_at_ns - self.lookback_ns, self._floor.get(conv, -1) + 1))
            for conv, c in dirty.items()
        ]
        try:
            with self._conn:
                self._conn.executemany(
                    "INSERT INTO cursors (conversation_id, sent_at_ns, message_id) "
                    "VALUES (?, ?, ?) ON CONFLICT(conversation_id) DO UPDATE SET "
                    "sent_at_ns = excluded.sent_at_ns, message_id = excluded.message_id "
                    "WHERE excluded.sent_at_ns >= cursors.sent_at_ns",
                    rows,
                )
                self._conn.executemany(
                    "INSERT OR IGNORE INTO handled (conversation_id, message_id, sent_at_ns) "
                    "VALUES (?, ?, ?)", recent_new,
                )
                self._conn.executemany(
                    "DELETE FROM handled WHERE conversation_id = ? AND sent_at_ns < ?", horizons,
                )
                self._conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    [(f"{_FLOOR}{conv}", str(self._floor[conv]))
                     for conv in dirty if conv in self._floor],
                )
        except BaseException:
            # Keep the updates for the next attempt (newer ones win).
            self._dirty = {**dirty, **self._dirty}
            self._recent_new = recent_new + self._recent_new
            self._unflushed += unflushed
            raise
        for conv, horizon in horizons:
            recent = self._recent.get(conv)
            # handled roughly in sent order: expire from the front, no scan of the window
            while recent and next(iter(recent.values())) < horizon:
                del recent[next(iter(recent))]
        self.flushes += 1
        return len(rows)

    def meta_get(self, key: str) -> str | None:
        """A small persistent setting (e.g. when the agent first started)."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def meta_set(self, key: str, value: str) -> None:
        with self._conn:
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def close(self) -> None:
        """Flush and close; closing twice is harmless."""
        if self.closed:
            return
        try:
            self.flush()
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._conn.close()
            self.closed = True

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- outbox ------------------------------------------------------------------------------

    def outbox_add(
        self, conversation_id: str, text: str, idempotency_key: str, now: float
    ) -> OutboxEntry | None:
        """Persist a reply (committed before returning); None if the key was already used."""
        with self._conn:
            cur = self._conn.execute(
                "INSERT INTO outbox (conversation_id, text, idempotency_key, next_attempt_at, "
                "created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT(idempotency_key) DO NOTHING",
                (conversation_id, text, idempotency_key, now, now),
            )
        if cur.rowcount == 0:
            return None
        assert cur.lastrowid is not None
        return OutboxEntry(cur.lastrowid, conversation_id, text, idempotency_key, 0, now, PENDING)

    def outbox_pending(self) -> list[OutboxEntry]:
        """Unconfirmed replies, oldest first (the order they must be sent in)."""
        rows = self._conn.execute(
            "SELECT id, conversation_id, text, idempotency_key, attempts, next_attempt_at, state "
            "FROM outbox WHERE state = ? ORDER BY id",
            (PENDING,),
        ).fetchall()
        return [OutboxEntry(*row) for row in rows]

    def outbox_mark_sent(self, entry_id: int, attempts: int) -> None:
        """The send was confirmed: never send this entry again."""
        with self._conn:
            self._conn.execute(
                "UPDATE outbox SET state = ?, attempts = ?, last_error = NULL WHERE id = ?",
                (SENT, attempts, entry_id),
            )

    def outbox_reschedule(
        self, entry_id: int, attempts: int, next_attempt_at: float, error: str
    ) -> None:
        """A send failed; ``error`` is the exception type, never content."""
        with self._conn:
            self._conn.execute(
                "UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ? "
                "WHERE id = ? AND state = ?",
                (attempts, next_attempt_at, error, entry_id, PENDING),
            )

    def outbox_prune(self, sent_before: float) -> int:
        """Delete confirmed replies created before ``sent_before``; their keys are no longer needed
        once the cursor is far past the message that produced them."""
        with self._conn:
            cur = self._conn.execute(
                "DELETE FROM outbox WHERE state = ? AND created_at < ?", (SENT, sent_before)
            )
        return cur.rowcount

    def outbox_counts(self) -> dict[str, int]:
        """Rows per state, for metrics."""
        return dict(
            self._conn.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall()
        )


def _invalid(path: Path, why: str) -> StoreError:
    return StoreError(
        f"{path}: not an xmtp-supervisor store ({why}). Point store.path (or "
        "XMTP_SUPERVISOR__STORE__PATH) at a new file, or move this file away; the supervisor "
        "creates the store on first start."
    )


def _open(path: Path) -> sqlite3.Connection:
    if path.is_dir():
        raise _invalid(path, "it is a directory")
    if not path.parent.exists():
        raise StoreError(
            f"{path}: the directory {path.parent} does not exist; create it or point store.path "
            "at a writable location"
        )
    try:
        conn = sqlite3.connect(path, isolation_level="DEFERRED")
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open the store ({exc}); check the path and its "
                         "permissions") from None
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'"
        ).fetchone()[0]
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise _invalid(path, str(exc)) from None
    if app_id == 0 and tables:
        conn.close()
        raise _invalid(path, "it is an SQLite database of another application")
    if app_id not in (0, APPLICATION_ID):
        conn.close()
        raise _invalid(path, f"application id {app_id:#x} is not ours")
    if version > SCHEMA_VERSION:
        conn.close()
        raise StoreError(
            f"{path}: written by a newer xmtp-supervisor (schema {version}, this one knows "
            f"{SCHEMA_VERSION}); upgrade, or point store.path at a new file"
        )
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        with conn:
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"{path}: cannot initialise the store ({exc}); check that the file and "
                         "its directory are writable") from None
    return conn
