"""Replies that survive outages: persisted first, sent, retried until confirmed.

libxmtp's send fails after seconds while the network is down and leaves the message
unpublished, never retrying it (see the field notes). So a reply is written to the store before
the first attempt, retried with capped exponential backoff and full jitter, sent in order per
conversation, marked sent once confirmed, and resumed after a restart. The idempotency key
(inbound message id + reply index) keeps a handler that runs again after a crash from queueing
the same reply twice.

The only window for a double send is a process crash (or a cancelled send) after the network
accepted the message but before it was marked sent; that needs an answer from the network, which
libxmtp does not give.
"""

from __future__ import annotations

import math
import random
import sqlite3
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from enum import Enum

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from fsm.policy import Policy
from xmtp_supervisor.store import OutboxEntry, Store

Send = Callable[[str, str], Awaitable[None]]
"""``async send(conversation_id, text)``: raises when the network did not take the message."""

SENT_RETENTION = 86400.0
"""Seconds confirmed replies (and so their idempotency keys) are kept; far longer than any cursor
flush delay, after which the message that produced them cannot be re-delivered."""

_log = structlog.get_logger("xmtp_supervisor.outbox")


class ReplyResult(Enum):
    """What :meth:`Outbox.reply` did."""

    SENT = "sent"
    QUEUED = "queued"
    """Persisted; the background loop will send it (network down or earlier replies pending)."""
    DUPLICATE = "duplicate"
    """This idempotency key was already used: a re-run handler; nothing new is sent."""


@dataclass(slots=True)
class OutboxCounters:
    """Monotonic counts for metrics."""

    sent: int = 0
    failed_attempts: int = 0
    duplicates: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(slots=True)
class _Item:
    id: int
    conversation_id: str
    text: str
    attempts: int

    @classmethod
    def of(cls, entry: OutboxEntry) -> _Item:
        return cls(entry.id, entry.conversation_id, entry.text, entry.attempts)


class Outbox:
    """Sends replies through ``send``; run :meth:`run` in the runtime's task group for retries."""

    def __init__(
        self,
        store: Store,
        send: Send,
        *,
        retry_initial: float = 2.0,
        retry_max: float = 120.0,
        concurrency: int = 8,
        rng: Callable[[], float] = random.random,
        wall_clock: Callable[[], float] = time.time,
        send_timeout: float = 60.0,
    ) -> None:
        self._store = store
        self._send = send
        self._initial = retry_initial
        self._max = retry_max
        self._rng = rng
        self._wall = wall_clock
        self._send_timeout = send_timeout
        self._limiter = anyio.CapacityLimiter(concurrency)
        self.counters = OutboxCounters()
        self._queues: dict[str, deque[_Item]] = {}
        self._due: dict[str, float] = {}
        self._busy: set[str] = set()
        self._known: set[int] = set()
        self._changed: anyio.Event | None = None
        self._online = True
        self._closing = False
        self._idle: anyio.Event | None = None
        self._tg: TaskGroup | None = None

    @classmethod
    def from_policy(cls, policy: Policy, store: Store, send: Send, **kwargs: object) -> Outbox:
        """An outbox with ``Policy.handlers`` retry timing and concurrency."""
        return cls(
            store,
            send,
            retry_initial=policy.handlers.outbox_retry_initial,
            retry_max=policy.handlers.outbox_retry_max,
            concurrency=policy.handlers.concurrency,
            **kwargs,  # type: ignore[arg-type]
        )

    @property
    def pending(self) -> int:
        """Replies persisted and not yet confirmed (in this process's view)."""
        return sum(len(q) for q in self._queues.values())

    def backoff(self, attempts: int) -> float:
        """Full-jitter delay after ``attempts`` failures: ``rng() * min(max, initial*2^(n-1))``."""
        ceiling = min(self._max, self._initial * 2.0 ** min(max(attempts, 1) - 1, 60))
        return self._rng() * ceiling

    async def reply(self, conversation_id: str, text: str, idempotency_key: str) -> ReplyResult:
        """Persist the reply, then try to send it now unless earlier replies of the conversation
        are still waiting (replies keep their order). Never raises for a failed send."""
        try:
            entry = self._store.outbox_add(conversation_id, text, idempotency_key, self._wall())
        except sqlite3.Error as exc:
            # Cannot persist (disk full, locked): a direct send is better than losing the reply;
            # if that fails too, the handler's failure is logged and counted.
            _log.error("outbox_persist_failed", conversation_id=conversation_id,
                       error_type=type(exc).__name__)
            await self._send(conversation_id, text)
            self.counters.sent += 1
            return ReplyResult.SENT
        if entry is None:
            self.counters.duplicates += 1
            return ReplyResult.DUPLICATE
        item = _Item.of(entry)
        self._known.add(item.id)
        if not self._online or conversation_id in self._busy or self._queues.get(conversation_id):
            self._queues.setdefault(conversation_id, deque()).append(item)
            delay = 0.0 if self._online else self.backoff(1)
            self._due.setdefault(conversation_id, anyio.current_time() + delay)
            self._poke()
            return ReplyResult.QUEUED
        self._busy.add(conversation_id)
        sent = False
        try:
            sent = await self._attempt(item)
        finally:
            self._busy.discard(conversation_id)
            if not sent:
                self._queues.setdefault(conversation_id, deque()).appendleft(item)
                self._due.setdefault(conversation_id, anyio.current_time())
            self._poke()
        return ReplyResult.SENT if sent else ReplyResult.QUEUED

    def offline(self) -> None:
        """The runtime knows the network is down: queue new replies without an inline attempt
        (each would block its handler for the seconds libxmtp takes to fail). Backoff retries go
        on, in case the runtime is wrong; :meth:`wake` ends this."""
        self._online = False

    def wake(self) -> None:
        """The network is back: try every waiting reply now instead of after its backoff."""
        self._online = True
        now = anyio.current_time()
        for conversation_id in self._queues:
            self._due[conversation_id] = now
        self._poke()

    async def drain(self, deadline: float) -> int:
        """Shutdown: start no new sends, let those in flight finish for up to ``deadline``
        seconds (a send cut mid-way may have reached the network and would be sent again after
        the restart); returns how many replies stay pending for the next start."""
        self._closing = True
        with anyio.move_on_after(deadline):
            while self._busy:
                idle = self._idle = anyio.Event()
                await idle.wait()
        return self.pending

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Resume replies left pending by an earlier process, then retry until cancelled."""
        if self._tg is not None:
            raise RuntimeError("Outbox.run() is already running")
        try:
            pruned = self._store.outbox_prune(self._wall() - SENT_RETENTION)
        except sqlite3.Error as exc:
            pruned = 0
            _log.warning("outbox_prune_failed", error_type=type(exc).__name__)
        resumed = self._load()
        if resumed or pruned:
            _log.info("outbox_resumed", pending=resumed, pruned=pruned)
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                task_status.started()
                await self._loop(tg)
        finally:
            self._tg = None

    # -- internals -----------------------------------------------------------------------------

    def _load(self) -> int:
        now, wall = anyio.current_time(), self._wall()
        loaded = 0
        for entry in self._store.outbox_pending():
            if entry.id in self._known:
                continue
            self._known.add(entry.id)
            queue = self._queues.setdefault(entry.conversation_id, deque())
            if not queue:
                wait = min(max(entry.next_attempt_at - wall, 0.0), self._max)
                self._due[entry.conversation_id] = now + wait
            queue.append(_Item.of(entry))
            loaded += 1
        return loaded

    async def _loop(self, tg: TaskGroup) -> None:
        while True:
            changed = self._changed = anyio.Event()
            now = anyio.current_time()
            next_due = math.inf
            for conversation_id, queue in list(self._queues.items()):
                if not queue:
                    del self._queues[conversation_id]
                    self._due.pop(conversation_id, None)
                    continue
                if conversation_id in self._busy or self._closing:
                    continue
                due = self._due.get(conversation_id, now)
                if due <= now:
                    self._busy.add(conversation_id)
                    tg.start_soon(self._send_queue, conversation_id)
                else:
                    next_due = min(next_due, due)
            with anyio.move_on_after(next_due - now):
                await changed.wait()

    async def _send_queue(self, conversation_id: str) -> None:
        """Send one conversation's waiting replies in order; stop at the first failure."""
        try:
            async with self._limiter:
                queue = self._queues.get(conversation_id)
                while queue:
                    with anyio.move_on_after(self._send_timeout) as scope:
                        sent = await self._attempt(queue[0])
                    if scope.cancelled_caught:
                        sent = self._failed(queue[0], "SendTimeout")
                    if not sent:
                        break
                    queue.popleft()
                    if self._closing:
                        break
        finally:
            self._busy.discard(conversation_id)
            self._poke()

    async def _attempt(self, item: _Item) -> bool:
        item.attempts += 1
        try:
            await self._send(item.conversation_id, item.text)
        except Exception as exc:
            return self._failed(item, type(exc).__name__)
        try:
            self._store.outbox_mark_sent(item.id, item.attempts)
        except sqlite3.Error as exc:
            # Sent but not recorded: a restart would send it again; do not make it worse now.
            _log.error("outbox_mark_sent_failed", outbox_id=item.id, error_type=type(exc).__name__)
        self._known.discard(item.id)
        self.counters.sent += 1
        return True

    def _failed(self, item: _Item, error: str) -> bool:
        delay = self.backoff(item.attempts)
        self._due[item.conversation_id] = anyio.current_time() + delay
        self.counters.failed_attempts += 1
        try:
            self._store.outbox_reschedule(item.id, item.attempts, self._wall() + delay, error)
        except sqlite3.Error as exc:
            _log.error("outbox_reschedule_failed", outbox_id=item.id,
                       error_type=type(exc).__name__)
        _log.warning("outbox_send_failed", conversation_id=item.conversation_id,
                     outbox_id=item.id, attempts=item.attempts, retry_in_s=round(delay, 3),
                     error_type=error)
        return False

    def _poke(self) -> None:
        if self._changed is not None:
            self._changed.set()
        if self._idle is not None and not self._busy:
            self._idle.set()
