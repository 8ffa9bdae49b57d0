"""The runtime: makes the core's decisions happen, under one anyio task group.

One clock, one scheduler for every timer the core arms, one queue that serialises control events
into the core, and one effect handler per action (``handlers/effects``). Effects started in a
state run in cancel scopes that are cancelled when the state is left, so nothing of a state
outlives it. Messages take the hot path: stream callback → message path, with only a timestamp
noted on the core; control events (stream errors and ends, timer expiries, effect outcomes,
signals) go through the queue.
"""

from __future__ import annotations

import heapq
import math
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import structlog
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from fsm.core import SupervisorCore
from fsm.effects import ArmTimer, CancelTimer, Perform
from fsm.policy import Policy
from fsm.table import Action, Event, State
from handlers.api import Router
from handlers.effects import HANDLERS
from handlers.effects.context import Outcome
from xmtp_supervisor.inbound import InboundMessage
from xmtp_supervisor.message_path import MessagePath
from xmtp_supervisor.outbox import Outbox
from xmtp_supervisor.status import TransitionHistory
from xmtp_supervisor.store import Store
from xmtp_supervisor.xmtp_adapter import Network, Stream

_log = structlog.get_logger("xmtp_supervisor.runtime")

RECENT_TRANSITIONS = 200
MISSED_GRACE_NS = 10 * 1_000_000_000


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep_until(self, deadline: float) -> None: ...


class RealClock:
    """The event loop's monotonic clock."""

    def now(self) -> float:
        return anyio.current_time()

    async def sleep_until(self, deadline: float) -> None:
        await anyio.sleep(max(0.0, deadline - anyio.current_time()))


class VirtualClock:
    """Time that moves only when a test advances it, so hours of timers run in milliseconds."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._n = 0

    def now(self) -> float:
        return self._now

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        self._n += 1
        heapq.heappush(self._sleepers, (deadline, self._n, event))
        await event.wait()

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking each sleeper at its deadline and letting every task run
        until blocked before moving on."""
        target = self._now + seconds
        await anyio.wait_all_tasks_blocked()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, event = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            event.set()
            await anyio.wait_all_tasks_blocked()
        self._now = target
        await anyio.wait_all_tasks_blocked()


class Scheduler:
    """Every timer of the core in one heap, served by one task."""

    def __init__(self, clock: Clock, fire: Callable[[Event, int], None]) -> None:
        self._clock = clock
        self._fire = fire
        self._heap: list[tuple[float, int, Event]] = []
        self._live: set[int] = set()
        self._sleep: anyio.CancelScope | None = None
        self._sleeping_until = math.inf

    def arm(self, event: Event, token: int, delay: float) -> None:
        deadline = self._clock.now() + delay
        heapq.heappush(self._heap, (deadline, token, event))
        self._live.add(token)
        if deadline < self._sleeping_until and self._sleep is not None:
            self._sleep.cancel()  # wake up and sleep until the new, earlier deadline

    def cancel(self, token: int) -> None:
        self._live.discard(token)

    @property
    def armed(self) -> int:
        return len(self._live)

    async def run(self) -> None:
        while True:
            while self._heap and self._heap[0][1] not in self._live:
                heapq.heappop(self._heap)  # cancelled
            deadline = self._heap[0][0] if self._heap else math.inf
            with anyio.CancelScope() as scope:
                self._sleep, self._sleeping_until = scope, deadline
                if deadline == math.inf:
                    await anyio.sleep_forever()
                else:
                    await self._clock.sleep_until(deadline)
            self._sleep, self._sleeping_until = None, math.inf
            now = self._clock.now()
            while self._heap and self._heap[0][0] <= now:
                _, token, event = heapq.heappop(self._heap)
                if token in self._live:
                    self._live.discard(token)
                    self._fire(event, token)


@dataclass
class RuntimeHooks:
    """Optional observers of the runtime (logging, metrics, alerts, readiness)."""

    on_record: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)
    on_state: list[Callable[[State], None]] = field(default_factory=list)
    health: Callable[[], dict[str, Any]] | None = None
    alert: Callable[[str, dict[str, Any]], None] | None = None
    rpc: Callable[[str, bool], None] | None = None
    latency: Callable[[float], None] | None = None
    """Handler durations; read once, when the :class:`Supervisor` is built."""
    services: list[Callable[[TaskGroup], Awaitable[None]]] = field(default_factory=list)
    """Started in the runtime's task group before the core starts (ops endpoint, notifier...)."""


class Supervisor:
    """One supervised agent: the core, the network, the message path, the outbox."""

    def __init__(
        self,
        policy: Policy,
        network: Network,
        store: Store,
        router: Router,
        *,
        clock: Clock | None = None,
        seed: int | None = None,
        hooks: RuntimeHooks | None = None,
        handle_signals: bool = True,
    ) -> None:
        self.policy = policy
        self.network = network
        self.store = store
        self.router = router
        self.clock: Clock = clock or RealClock()
        self.hooks = hooks or RuntimeHooks()
        self.handle_signals = handle_signals
        self.log = _log
        self.missed_grace_ns = MISSED_GRACE_NS
        self.recent = TransitionHistory(RECENT_TRANSITIONS)
        self.core = SupervisorCore(
            policy, seed=time.time_ns() % 2**31 if seed is None else seed, record=self._record
        )
        self.outbox = Outbox.from_policy(policy, store, self._send)
        self.path = MessagePath(
            store, router.dispatcher(self.outbox, self), own_inbox_id=network.inbox_id,
            policy=policy, observe_latency=self.hooks.latency,
        )
        self.rpc_counts: dict[str, int] = {}
        self._control_tx, self._control_rx = anyio.create_memory_object_stream[
            tuple[Event, dict[str, Any]]
        ](math.inf)
        self._inbound_tx: MemoryObjectSendStream[InboundMessage]
        self._inbound_rx: MemoryObjectReceiveStream[InboundMessage]
        self._inbound_tx, self._inbound_rx = anyio.create_memory_object_stream[InboundMessage](
            math.inf
        )
        self._scheduler = Scheduler(self.clock, self._timer_fired)
        self._state_scopes: set[anyio.CancelScope] = set()
        self._stream: Stream | None = None
        self._stream_gen = 0
        self._stream_live_gen = -1
        self._hold_token = 0
        self._held: int | None = None
        self._held_since = 0.0
        self._inbound_gate: anyio.Event | None = None
        """Set while a fresh stream's messages wait for the catch-up (None: open)."""
        self._started_at = 0.0
        self._state_since = 0.0
        self._since_ns = self._first_start_ns()
        self._known_conversations: set[str] = set(store.cursors())
        self._seen_ns: dict[str, int] = {}
        self._last_full_sync = -math.inf
        self._tg: TaskGroup | None = None

    # -- run ------------------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until the core reaches its final state; returns the process exit code."""
        self._started_at = self._state_since = self.clock.now()
        async with anyio.create_task_group() as tg:
            self._tg = tg
            await tg.start(self.path.run)
            await tg.start(self.outbox.run)
            tg.start_soon(self._scheduler.run)
            tg.start_soon(self._read_inbound)
            if self.handle_signals:
                tg.start_soon(self._watch_signals)
            for service in self.hooks.services:
                await service(tg)
            self._apply(self.core.start(self.clock.now()))
            await self._control_loop()
            stream = self.set_stream(None)
            if stream is not None:
                with anyio.move_on_after(5.0):
                    await stream.close()
            tg.cancel_scope.cancel()
        self.store.flush()
        return self.core.exit_code if self.core.exit_code is not None else 0

    def post(self, event: Event, data: Mapping[str, Any] | None = None) -> None:
        """Queue a control event for the core (safe from any task on the loop)."""
        self._control_tx.send_nowait((event, dict(data or {})))

    def request_shutdown(self) -> None:
        self.post(Event.SHUTDOWN)

    async def _control_loop(self) -> None:
        async for event, data in self._control_rx:
            effects = self.core.feed(event, self.clock.now(), data)
            self._apply(effects)
            if self.core.finished:
                return

    def _apply(self, effects: list[Any]) -> None:
        actions: list[Action] = []
        for effect in effects:
            if isinstance(effect, ArmTimer):
                self._scheduler.arm(effect.event, effect.token, effect.delay)
            elif isinstance(effect, CancelTimer):
                self._scheduler.cancel(effect.token)
            elif isinstance(effect, Perform):
                actions.append(effect.action)
        handled = [a for a in actions if a in HANDLERS]
        if handled and self._tg is not None:
            self._tg.start_soon(self._perform, handled)

    async def _perform(self, actions: list[Action]) -> None:
        """Run one transition's actions in order, in a scope cancelled when the state is left."""
        with anyio.CancelScope() as scope:
            self._state_scopes.add(scope)
            try:
                for action in actions:
                    outcome: Outcome | None = await HANDLERS[action](self)
                    if outcome is not None:
                        self.post(*outcome)
            finally:
                self._state_scopes.discard(scope)

    def _timer_fired(self, event: Event, token: int) -> None:
        self.post(event, {"timer": token})

    def _record(self, record: dict[str, Any]) -> None:
        self.recent(record)
        if record["source"] != record["dest"]:
            self._state_since = self.clock.now()
            for scope in list(self._state_scopes):
                scope.cancel()  # leaving a state cancels what it started
            self._state_scopes.clear()
            state = State(record["dest"])
            for on_state in self.hooks.on_state:
                on_state(state)
        for hook in self.hooks.on_record:
            hook(record)

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                self.log.info("signal_received", signal=signal.Signals(signum).name)
                self.request_shutdown()

    async def _send(self, conversation_id: str, text: str) -> None:
        """The outbox's send, counted in the network budget."""
        try:
            await self.network.send_text(conversation_id, text)
        except Exception:
            self.rpc("send", False)
            raise
        self.rpc("send", True)

    # -- the hot path ---------------------------------------------------------------------------

    async def _read_inbound(self) -> None:
        core, clock, submit = self.core, self.clock, self.path.submit
        known = self._known_conversations
        async for message in self._inbound_rx:
            while self._inbound_gate is not None:  # a catch-up runs first: keeps the order
                await self._wait_for_catch_up(self._inbound_gate)
            core.note_activity(clock.now())
            if message.conversation_id not in known:
                known.add(message.conversation_id)
                await self._catch_up_new_conversation(message.conversation_id)
            await submit(message)

    async def _wait_for_catch_up(self, gate: anyio.Event) -> None:
        """Wait for the catch-up to release the stream's messages, but no longer than
        ``timers.probe_timeout`` after the hold began: a catch-up stuck on the network must not
        keep a live stream's messages from their handlers (order yields to liveness)."""
        deadline = self._held_since + self.policy.timers.probe_timeout

        async def expire() -> None:
            await self.clock.sleep_until(deadline)
            if self._held is not None:
                self.log.warning("catch_up_slow_stream_released",
                                 held_s=round(self.clock.now() - self._held_since, 1))
                self.release_inbound(self._held)

        async with anyio.create_task_group() as tg:
            tg.start_soon(expire)
            await gate.wait()
            tg.cancel_scope.cancel()

    async def _catch_up_new_conversation(self, conversation_id: str) -> None:
        """A conversation the stream shows us for the first time: its first messages may have
        been sent before libxmtp subscribed to it (libxmtp #2440). Fetch them before the live
        message, so the cursor never passes a message that was not handled."""
        try:
            await self.network.sync_conversation(conversation_id)
            earlier = await self.network.fetch_after(conversation_id,
                                                     self.read_from(conversation_id))
        except Exception as exc:
            self.rpc("catch_up", False)
            self.log.warning("new_conversation_catch_up_failed", error=type(exc).__name__)
            return
        self.rpc("catch_up", True)
        for message in earlier:
            await self.path.submit(message)

    # -- EffectContext --------------------------------------------------------------------------

    def now(self) -> float:
        return self.clock.now()

    def read_from(self, conversation_id: str) -> int:
        start = self.path.lookback_from(conversation_id)
        # never before the first start: the window must not reach into older history
        return self._since_ns if start is None else max(start, self._since_ns)

    def stream_callbacks(
        self,
    ) -> tuple[Callable[..., None], Callable[[str], None], Callable[[], None]]:
        self._stream_gen += 1
        gen = self._stream_gen
        send = self._inbound_tx.send_nowait

        def on_error(error: str) -> None:
            if gen == self._stream_live_gen:  # one failure per stream: its close is not another
                self._stream_live_gen = -1
                self.outbox.offline()  # likely an outage: queue replies, do not block handlers
                self.post(Event.STREAM_ERROR, {"error": error})

        def on_close() -> None:
            if gen == self._stream_live_gen:
                self._stream_live_gen = -1
                self.post(Event.STREAM_ENDED, {})

        return send, on_error, on_close

    def seen_times(self) -> dict[str, int]:
        seen = {cid: c.sent_at_ns for cid, c in self.store.cursors().items()}
        for cid, ns in self._seen_ns.items():
            if ns > seen.get(cid, -1):
                seen[cid] = ns
        return seen

    def note_seen(self, conversation_id: str, sent_at_ns: int) -> None:
        if sent_at_ns > self._seen_ns.get(conversation_id, -1):
            self._seen_ns[conversation_id] = sent_at_ns

    def full_sync_due(self) -> bool:
        return self.clock.now() - self._last_full_sync >= self.policy.timers.full_sync_interval

    def full_sync_done(self) -> None:
        self._last_full_sync = self.clock.now()

    def hold_inbound(self) -> int:
        self._hold_token += 1
        self._held = self._hold_token
        self._held_since = self.clock.now()
        if self._inbound_gate is None:
            self._inbound_gate = anyio.Event()
        return self._held

    def held_inbound(self) -> int | None:
        return self._held

    def release_inbound(self, token: int) -> None:
        if token != self._held:
            return  # a newer stream's hold: its own catch-up releases it
        self._held = None
        gate, self._inbound_gate = self._inbound_gate, None
        if gate is not None:
            gate.set()

    def set_stream(self, stream: Stream | None) -> Stream | None:
        previous, self._stream = self._stream, stream
        self._stream_live_gen = self._stream_gen if stream is not None else -1
        return previous

    def rpc(self, kind: str, ok: bool) -> None:
        key = kind if ok else f"{kind}_failed"
        self.rpc_counts[key] = self.rpc_counts.get(key, 0) + 1
        if self.hooks.rpc is not None:
            self.hooks.rpc(kind, ok)

    def health(self) -> dict[str, Any]:
        return self.hooks.health() if self.hooks.health is not None else {}

    @property
    def inbound_queued(self) -> int:
        """Stream messages not yet taken by the message path (held during a catch-up)."""
        return self._inbound_rx.statistics().current_buffer_used

    def alert(self, reason: str, detail: dict[str, Any]) -> None:
        if self.hooks.alert is not None:
            self.hooks.alert(reason, detail)
        else:
            self.log.warning("alert", reason=reason, state=self.core.state.value,
                             restarts_in_window=self.core.restarts_in_window())

    # -- status (StatusSource for /status, SupervisorView for the HTTP endpoint) -----------------

    @property
    def state(self) -> str:
        return self.core.state.value

    @property
    def uptime_s(self) -> float:
        return self.clock.now() - self._started_at

    @property
    def restarts_last_hour(self) -> int:
        return self.core.restarts_in_window(self.clock.now())

    @property
    def restarts_in_window(self) -> int:
        return self.core.restarts_in_window(self.clock.now())

    @property
    def messages_handled(self) -> int:
        return self.path.counters.handled

    @property
    def state_since(self) -> float:
        return self._state_since

    @property
    def started_at(self) -> float:
        return self._started_at

    @property
    def state_reason(self) -> str:
        last = self.recent.recent(1)
        return last[0]["event"] if last else "starting"

    @property
    def counters(self) -> Mapping[str, int]:
        counts = dict(self.path.counters.as_dict())
        counts.update({f"rpc_{k}": v for k, v in self.rpc_counts.items()})
        counts["restarts_total"] = len(self.core.restart_times)
        return counts

    def recent_transitions(self, n: int) -> list[dict[str, Any]]:
        return self.recent.recent(n)

    # -- internals ------------------------------------------------------------------------------

    def _first_start_ns(self) -> int:
        """Catch-up for conversations without a cursor starts at the agent's first start ever,
        so a DM created while the agent was down is not lost, and old history is not replayed."""
        value = self.store.meta_get("first_started_ns")
        if value is not None:
            return int(value)
        now_ns = time.time_ns()
        self.store.meta_set("first_started_ns", str(now_ns))
        return now_ns
