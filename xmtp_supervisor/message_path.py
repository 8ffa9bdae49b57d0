"""The hot path: decode → skip own messages → dedup → dispatch → advance the cursor.

It runs beside the state machine, not through it: every inbound message costs a few dict and deque
operations plus the handler call, so a busy agent is not slowed by the supervisor.

Scheduling: each conversation has a FIFO lane; at most ``handlers.concurrency`` worker tasks take
lanes round-robin, one message at a time, so one conversation's handlers run in order while
different conversations run concurrently. Timeouts are enforced by one watchdog task cancelling a
worker's scope, instead of a cancel scope per message (which costs more than a typical handler).

Delivery: a message is a duplicate when its id is in the bounded dedup set or still queued, or
when it is at or before its conversation's cursor (which survives eviction and restarts). The
cursor only moves once a handler has finished (returned, raised or timed out), so a crash
re-delivers at most the unflushed tail: at-least-once across crashes, exactly-once within a process.

Wiring (the runtime owns one task group)::

    store = Store.from_policy(policy.store)
    outbox = Outbox.from_policy(policy, store, adapter.send_text)
    path = MessagePath(store, router.dispatcher(outbox, status), own_inbox_id=..., policy=policy)
    await tg.start(outbox.run); await tg.start(path.run)
    # each stream message, and after every (re)connect or poll, per conversation, in order:
    #   await path.submit(m) for m in messages sent after path.cursor(conversation_id)
    # shutdown: await path.drain(policy.timers.drain_deadline); cancel tg; store.close()
"""

from __future__ import annotations

import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from fsm.policy import Policy
from xmtp_supervisor.dedup import DedupSet
from xmtp_supervisor.inbound import InboundMessage
from xmtp_supervisor.store import Cursor, Store

Dispatch = Callable[[InboundMessage], Awaitable[None]]
"""What handles one decodable message (``Router.dispatcher(...)`` builds one)."""

LatencyObserver = Callable[[float], None]
"""Receives each handler call's duration in seconds (wire to a Prometheus histogram)."""

_WATCHDOG_TICKS = 8
"""The watchdog looks this many times per timeout: a hung handler is cut at most 1/8 late."""

_CUT_GRACE = 1.0
"""Seconds a cancelled handler gets to unwind during drain before it is reported as cut anyway."""

_log = structlog.get_logger("xmtp_supervisor.message_path")


def _no_latency(_seconds: float) -> None:
    return None


class Verdict(Enum):
    """What :meth:`MessagePath.submit` did with a message."""

    ACCEPTED = "accepted"
    """Queued for the handlers."""
    UNDECODABLE = "undecodable"
    """Queued only to advance the cursor in order; not given to handlers."""
    DUPLICATE = "duplicate"
    OWN = "own"
    """Sent by this agent; ignored."""
    CLOSED = "closed"
    """Arrived after :meth:`MessagePath.drain`; catch-up after a restart will fetch it again."""


@dataclass(slots=True)
class Counters:
    """Monotonic counts for metrics; ``handled`` counts handler calls that returned normally."""

    received: int = 0
    handled: int = 0
    deduplicated: int = 0
    failed: int = 0
    timed_out: int = 0
    undecodable: int = 0
    own_skipped: int = 0
    cut: int = 0
    """In-flight handlers cancelled by :meth:`MessagePath.drain` (cursor not advanced)."""
    dropped: int = 0
    """Queued messages not started because of :meth:`MessagePath.drain` (re-fetched on restart)."""

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class DrainResult:
    """How :meth:`MessagePath.drain` ended."""

    finished: int
    """In-flight handlers that completed before the deadline."""
    cut: int
    """In-flight handlers cancelled at the deadline."""
    dropped: int
    """Queued messages that were never started."""


class _Lane:
    """One conversation's queue; ``scheduled`` while it is in the ready queue or being worked."""

    __slots__ = ("conversation_id", "queue", "scheduled")

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        self.queue: deque[InboundMessage] = deque()
        self.scheduled = False


class _Slot:
    """A worker's view for the watchdog: what it runs, which call it is, and the scope to cancel.

    The worker only bumps ``calls`` and flips ``running``; the watchdog notes when it first saw a
    call, so the hot path never reads a clock.
    """

    __slots__ = ("calls", "lane", "message", "reason", "running", "scope", "seen_at", "seen_call")

    def __init__(self) -> None:
        self.lane: _Lane | None = None
        self.message: InboundMessage | None = None
        self.running = False
        self.calls = 0
        self.seen_call = -1
        self.seen_at = 0.0
        self.scope: anyio.CancelScope | None = None
        self.reason: str | None = None


class MessagePath:
    """Deduplicates, orders and dispatches inbound messages; owns the cursor updates.

    Start it inside the runtime's task group with ``await tg.start(path.run)``, feed it with
    :meth:`submit` (live stream and catch-up alike), and call :meth:`drain` on shutdown.
    """

    def __init__(
        self,
        store: Store,
        dispatch: Dispatch,
        *,
        own_inbox_id: str,
        policy: Policy | None = None,
        observe_latency: LatencyObserver | None = None,
        max_backlog: int = 10_000,
    ) -> None:
        policy = policy if policy is not None else Policy()
        self._store = store
        self._dispatch = dispatch
        self._own = own_inbox_id
        self.dedup = DedupSet.from_policy(policy.dedup)
        self._timeout = policy.handlers.timeout
        self._concurrency = policy.handlers.concurrency
        # Without an observer the workers skip the clock reads (``_no_latency`` is the marker).
        self._observe = _no_latency if observe_latency is None else _safe(observe_latency)
        self._max_backlog = max_backlog
        self.counters = Counters()
        self._lanes: dict[str, _Lane] = {}
        self._queued_ids: set[str] = set()
        """Ids accepted and not yet settled: the dedup set may evict them under a backlog, and
        their cursor has not moved yet, so without this catch-up could queue them twice."""
        self._ready: deque[_Lane] = deque()
        self._slots: list[_Slot] = []
        self._workers = 0
        self._inflight = 0
        self._backlog = 0
        self._completed = 0
        self._closed = False
        self._tg: TaskGroup | None = None
        self._flush_wanted: anyio.Event | None = None
        self._space: anyio.Event | None = None
        self._idle: anyio.Event | None = None

    # -- the runtime's API ---------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run workers, the timeout watchdog and the cursor flusher until cancelled.

        Reports started once messages can be dispatched; flushes the cursors when it ends.
        """
        if self._tg is not None:
            raise RuntimeError("MessagePath.run() is already running")
        self._flush_wanted = anyio.Event()
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._watchdog)
                for _ in range(min(self._concurrency, len(self._ready))):
                    self._spawn()
                task_status.started()
                await self._flusher()
        finally:
            self._tg = None
            self._flush_quietly()

    async def submit(self, message: InboundMessage) -> Verdict:
        """Take one message from the stream or from catch-up.

        Returns at once unless ``max_backlog`` messages are queued (back-pressure on the stream).
        """
        counters = self.counters
        counters.received += 1
        if self._closed:
            return Verdict.CLOSED
        if message.sender_inbox_id == self._own:
            counters.own_skipped += 1
            return Verdict.OWN
        if message.id in self.dedup or message.id in self._queued_ids:
            counters.deduplicated += 1
            return Verdict.DUPLICATE
        cursor = self._store.cursor(message.conversation_id)
        if cursor is not None and _at_or_before(message, cursor) and (
            message.id == cursor.message_id
            or self._store.handled_recently(message.conversation_id, message.id)
            or self._store.behind_window(message.conversation_id, message.sent_at_ns)
        ):
            # Behind the cursor: handled, unless it is inside the lookback window and not
            # among the ids handled there (a message the stream skipped, libxmtp #2351).
            counters.deduplicated += 1
            return Verdict.DUPLICATE
        if self._backlog >= self._max_backlog:
            await self._wait_for_space()
            if self._closed:
                return Verdict.CLOSED
            if message.id in self.dedup or message.id in self._queued_ids:  # came again
                counters.deduplicated += 1
                return Verdict.DUPLICATE
        self.dedup.add(message.id)
        self._enqueue(message)
        if message.decode_error is not None:
            counters.undecodable += 1
            return Verdict.UNDECODABLE
        return Verdict.ACCEPTED

    def lookback_from(self, conversation_id: str) -> int | None:
        """Where catch-up reads from: the lookback window behind the cursor (None: no cursor)."""
        return self._store.lookback_from(conversation_id)

    def cursor(self, conversation_id: str) -> Cursor | None:
        """The conversation's last handled message; catch-up fetches what comes after it."""
        return self._store.cursor(conversation_id)

    async def drain(self, deadline: float) -> DrainResult:
        """Stop taking messages, let in-flight handlers finish for up to ``deadline`` seconds
        (``Policy.timers.drain_deadline``), cancel what remains, then flush the cursors.

        Queued messages that have not started are dropped: their cursor did not move, so catch-up
        after the restart delivers them.
        """
        self._closed = True
        dropped = 0
        for lane in self._ready:
            dropped += len(lane.queue)
            lane.queue.clear()
            lane.scheduled = False
        self._ready.clear()
        busy = {slot.lane.conversation_id: slot.lane for slot in self._slots if slot.lane}
        for lane in busy.values():
            dropped += len(lane.queue)
            lane.queue.clear()
        self._lanes = busy
        self._backlog = 0
        self.counters.dropped += dropped
        if self._space is not None:
            self._space.set()
        in_flight = self._inflight
        completed_before = self._completed
        if in_flight:
            if self._idle is None or self._idle.is_set():
                self._idle = anyio.Event()  # else share it with a wait_idle() caller
            with anyio.move_on_after(deadline):
                await self._idle.wait()
            if self._inflight:
                for slot in self._slots:
                    if slot.message is not None and slot.scope is not None:
                        slot.reason = "drain"
                        slot.scope.cancel()
                with anyio.move_on_after(_CUT_GRACE):
                    await self._idle.wait()
        finished = min(in_flight, self._completed - completed_before)
        self._flush_quietly()
        result = DrainResult(finished=finished, cut=in_flight - finished, dropped=dropped)
        _log.info("message_path_drained", finished=result.finished, cut=result.cut,
                  dropped=result.dropped)
        return result

    async def wait_idle(self) -> None:
        """Wait until nothing is queued or running (tests, benchmarks, the demo's summary)."""
        while self._backlog or self._inflight:
            if self._idle is None or self._idle.is_set():
                self._idle = anyio.Event()
            await self._idle.wait()

    def flush(self) -> int:
        """Write pending cursor updates now (the flusher and :meth:`drain` do this too)."""
        return self._store.flush()

    @property
    def in_flight(self) -> int:
        """Handlers running now."""
        return self._inflight

    @property
    def backlog(self) -> int:
        """Messages queued and not started."""
        return self._backlog

    @property
    def closed(self) -> bool:
        """True once :meth:`drain` was called."""
        return self._closed

    # -- internals -----------------------------------------------------------------------------

    def _enqueue(self, message: InboundMessage) -> None:
        lane = self._lanes.get(message.conversation_id)
        if lane is None:
            lane = self._lanes[message.conversation_id] = _Lane(message.conversation_id)
        lane.queue.append(message)
        self._queued_ids.add(message.id)
        self._backlog += 1
        if not lane.scheduled:
            lane.scheduled = True
            self._ready.append(lane)
            if (
                self._tg is not None
                and self._workers < self._concurrency
                and self._workers < self._inflight + len(self._ready)
            ):
                self._spawn()

    def _spawn(self) -> None:
        assert self._tg is not None
        self._workers += 1
        self._tg.start_soon(self._worker)

    async def _worker(self) -> None:
        slot = _Slot()
        self._slots.append(slot)
        ready = self._ready
        dispatch = self._dispatch
        observe = self._observe
        timed = observe is not _no_latency
        clock = time.perf_counter
        counters = self.counters
        try:
            while ready:
                with anyio.CancelScope() as scope:
                    slot.scope = scope
                    while ready:
                        lane = ready.popleft()
                        message = lane.queue.popleft()
                        self._backlog -= 1
                        if self._space is not None:
                            self._make_space()
                        slot.lane = lane
                        slot.message = message
                        self._inflight += 1
                        if message.decode_error is None:
                            slot.calls += 1
                            slot.running = True
                            started = clock() if timed else 0.0
                            error: Exception | None = None
                            try:
                                await dispatch(message)
                            except Exception as exc:
                                error = exc
                            slot.running = False
                            if scope.cancel_called:
                                break  # cut while running; settled below, outside the scope
                            if error is None:
                                counters.handled += 1
                            else:
                                counters.failed += 1
                                _log_failure(message, error)
                                error = None
                            if timed:
                                observe(clock() - started)
                        self._settle(slot, advance=True)
                if slot.message is not None:
                    self._settle_cut(slot)
        finally:
            self._workers -= 1
            self._slots.remove(slot)
            if slot.message is not None:  # cancelled from outside: the runtime is going away
                self._inflight -= 1
                self._signal_idle()

    def _settle(self, slot: _Slot, *, advance: bool, completed: bool = True) -> None:
        message, lane = slot.message, slot.lane
        assert message is not None and lane is not None
        if advance:
            try:
                full = self._store.advance(message.conversation_id, message.sent_at_ns, message.id)
                if full and self._flush_wanted is not None:
                    self._flush_wanted.set()
            except Exception as exc:
                # Per-message commit failed (disk full, locked): the update stays pending and
                # is retried by the flusher; handling goes on.
                _log.error("cursor_flush_failed", error_type=type(exc).__name__,
                           path=str(self._store.path))
        self._queued_ids.discard(message.id)
        slot.message = slot.lane = None
        self._inflight -= 1
        if completed:
            self._completed += 1
        if lane.queue:
            self._ready.append(lane)
        else:
            lane.scheduled = False
            if self._lanes.get(lane.conversation_id) is lane:
                del self._lanes[lane.conversation_id]
        if self._idle is not None:
            self._signal_idle()

    def _settle_cut(self, slot: _Slot) -> None:
        message = slot.message
        assert message is not None
        reason, slot.reason, slot.running = slot.reason, None, False
        if reason == "drain":
            self.counters.cut += 1
            _log.warning("handler_cut_by_drain", conversation_id=message.conversation_id,
                         message_id=message.id)
            # Not advanced: the message is delivered again after the restart.
            self._settle(slot, advance=False, completed=False)
        else:
            self.counters.timed_out += 1
            self._observe(self._timeout)
            _log.warning("handler_timed_out", conversation_id=message.conversation_id,
                         message_id=message.id, timeout_s=self._timeout)
            # Advanced: a message that hangs its handler would hang it again.
            self._settle(slot, advance=True)

    def _signal_idle(self) -> None:
        if self._idle is not None and self._inflight == 0 and (self._closed or not self._backlog):
            self._idle.set()

    async def _wait_for_space(self) -> None:
        if self._space is None:
            self._space = anyio.Event()
        await self._space.wait()

    def _make_space(self) -> None:
        # Hysteresis: wake the producer at half the bound, not once per handled message.
        if self._backlog <= self._max_backlog // 2 and self._space is not None:
            self._space.set()
            self._space = None

    async def _watchdog(self) -> None:
        """Cancel handler calls running for ``handlers.timeout`` or longer.

        It wakes every ``timeout / 8`` and notes when it first saw each call, so a call is cut
        between ``timeout`` and ``timeout * 1.125`` after it started, never earlier, at no cost
        per message.
        """
        timeout = self._timeout
        tick = timeout / _WATCHDOG_TICKS
        while True:
            now = anyio.current_time()
            next_wake = now + tick
            for slot in self._slots:
                if not slot.running or slot.reason is not None or slot.scope is None:
                    continue
                if slot.seen_call != slot.calls:
                    slot.seen_call, slot.seen_at = slot.calls, now
                deadline = slot.seen_at + timeout
                if deadline <= now:
                    slot.reason = "timeout"
                    slot.scope.cancel()
                elif deadline < next_wake:
                    next_wake = deadline
            await anyio.sleep(next_wake - now)

    async def _flusher(self) -> None:
        """Batch mode: write cursors when a batch is full or ``store.batch_interval`` passed."""
        interval = self._store.batch_interval
        while True:
            event = self._flush_wanted
            assert event is not None
            with anyio.move_on_after(interval):
                await event.wait()
            if event.is_set():
                self._flush_wanted = anyio.Event()
            self._flush_quietly()

    def _flush_quietly(self) -> None:
        if self._store.closed:
            return
        try:
            self._store.flush()
        except Exception as exc:
            # The updates stay pending and are retried; re-delivery is the worst outcome.
            _log.error("cursor_flush_failed", error_type=type(exc).__name__,
                       path=str(self._store.path))


def _safe(observe: LatencyObserver) -> LatencyObserver:
    """A metrics hook that raises must not stop message handling."""

    def guarded(seconds: float) -> None:
        try:
            observe(seconds)
        except Exception as exc:
            _log.error("latency_observer_failed", error_type=type(exc).__name__)

    return guarded


def _at_or_before(message: InboundMessage, cursor: Cursor) -> bool:
    """Older than the cursor, or the cursor's own message. Another message with the very same
    timestamp is left to the dedup set: dropping it could lose it, which is worse."""
    return message.sent_at_ns < cursor.sent_at_ns or (
        message.sent_at_ns == cursor.sent_at_ns and message.id == cursor.message_id
    )


def _log_failure(message: InboundMessage, exc: Exception) -> None:
    """Log where a handler failed, but not the exception text: it may quote the message."""
    where: dict[str, Any] = {}
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        where = {"file": last.filename, "line": last.lineno, "function": last.name}
    _log.warning("handler_failed", conversation_id=message.conversation_id,
                 message_id=message.id, error_type=type(exc).__name__, **where)
