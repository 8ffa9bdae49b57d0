"""The sans-I/O supervisor core: fed ``(event, timestamp)``, returns the effects to perform.

It never sleeps, reads a clock or touches the network, so the same event sequence always gives
the same transitions: the runtime drives it with real time, the simulator with virtual time, and
replay with a production log. Dispatch and guards run on the ``transitions`` library, built from
:mod:`fsm.table`; timers are armed on entering a state and cancelled on leaving it, and a timer
event whose token is not the one armed now is stale and ignored.

Message activity is the hot path and stays off the ``transitions`` call path:
:meth:`SupervisorCore.note_activity` is a plain attribute store.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from transitions import EventData, Machine

from fsm.effects import ArmTimer, CancelTimer, Effect, Perform
from fsm.errors import EXIT_FATAL, ErrorClass, classify
from fsm.guards import GUARDS, Book, Guard
from fsm.policy import Policy
from fsm.table import (
    FAILURE_EVENTS,
    FINAL,
    INITIAL,
    ROWS,
    STATE_SPECS,
    Action,
    Event,
    Row,
    State,
    TimerSpec,
)

logging.getLogger("transitions").setLevel(logging.ERROR)
"""Events a state has no row for are ignored by design (and logged in the transition log)."""

_STATES: dict[str, State] = {s.value: s for s in State}
_EVENTS: dict[Event | str, Event] = {e.value: e for e in Event}  # StrEnum: finds members too

TIMER_EVENTS = frozenset(t.event for spec in STATE_SPECS.values() for t in spec.timers)

Jitter = Callable[[float], float]
"""Returns a value in ``[0, upper]``; full jitter for backoff delays."""


@dataclass(frozen=True, slots=True)
class ArmedTimer:
    token: int
    spec: TimerSpec
    delay: float


class _Model:
    """The object ``transitions`` drives; it holds the state and nothing else."""

    state: str
    trigger: Callable[..., bool]


class SupervisorCore:
    """One supervised agent's state machine. Feed it events; perform what it returns."""

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        seed: int = 0,
        jitter: Jitter | None = None,
        record: Callable[[dict[str, Any]], None] | None = None,
        guards: Mapping[str, Guard] | None = None,
    ) -> None:
        self.policy = policy or Policy()
        self._guards = dict(GUARDS if guards is None else guards)
        self.seed = seed
        self._rng = random.Random(seed)
        self._jitter: Jitter = jitter or (lambda upper: self._rng.uniform(0.0, upper))
        self._record = record
        self.book = Book()
        self.seq = 0
        self.exit_code: int | None = None
        self.timers: dict[Event, ArmedTimer] = {}
        self.transitions: dict[tuple[str, str], int] = {}
        self.restart_times: list[float] = []
        self.backoff_delay = 0.0
        self._next_token = 0
        self._logged_message = 0.0
        self._fired: Row | None = None
        self._guard_results: dict[str, bool] = {}
        self._model = _Model()
        self._machine = Machine(
            model=self._model,
            states=[s.value for s in State],
            initial=INITIAL.value,
            transitions=[self._row_to_transition(row) for row in ROWS],
            auto_transitions=False,
            ignore_invalid_triggers=True,
            send_event=True,
        )
        # the per-event trigger methods transitions adds to the model, looked up once
        self._triggers: dict[Event, Callable[[], bool]] = {
            event: getattr(self._model, event.value) for event in {row.event for row in ROWS}
        }

    # -- construction -------------------------------------------------------------------------

    def _row_to_transition(self, row: Row) -> dict[str, Any]:
        return {
            "trigger": row.event.value,
            "source": row.source.value,
            "dest": None if row.dest is None else row.dest.value,
            "conditions": [self._guard(name) for name in row.guards],
            "after": [lambda _ev, row=row: self._mark_fired(row)],
        }

    def _guard(self, name: str) -> Callable[[EventData], bool]:
        fn = self._guards[name]

        def check(_event: EventData) -> bool:
            result = fn(self.book, self.policy)
            self._guard_results[name] = result
            return result

        return check

    def _mark_fired(self, row: Row) -> None:
        self._fired = row

    # -- reading ------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return _STATES[self._model.state]

    @property
    def finished(self) -> bool:
        return self.state is FINAL

    def restarts_in_window(self, now: float | None = None) -> int:
        if now is None:
            return len(self.book.restarts)
        return sum(1 for t in self.book.restarts if t > now - self.policy.breaker.window)

    # -- the hot path -------------------------------------------------------------------------

    def note_activity(self, at: float) -> None:
        """A message arrived on the stream: proof of life. Deliberately not an FSM event."""
        book = self.book
        book.last_activity = book.last_message = at

    # -- feeding events -----------------------------------------------------------------------

    def start(self, at: float) -> list[Effect]:
        """Boot: enter the initial state (opens the stream, arms its timers)."""
        return self.feed(Event.START, at, {"seed": self.seed})

    def resume(self, state: State, at: float) -> list[Effect]:
        """Enter ``state`` directly (its timers and entry actions), without a logged event.

        For tests of single rows and for what-if simulations that start mid-incident.
        """
        self.book.now = at
        effects = self._leave()
        self._machine.set_state(state.value, model=self._model)
        effects.extend(self._enter(state, Event.START, {}))
        effects.extend(Perform(a) for a in STATE_SPECS[state].on_enter)
        return effects

    def feed(
        self, event: Event | str, at: float, data: Mapping[str, Any] | None = None
    ) -> list[Effect]:
        """Process one control event at time ``at``; return the effects to perform, in order."""
        try:
            event = _EVENTS[event]
        except KeyError:
            raise ValueError(f"unknown event {event!r}; known: {', '.join(Event)}") from None
        data = dict(data) if data else {}
        b = self.book
        b.now = at
        if b.last_message != self._logged_message:
            # hot-path activity since the last event: log it so replay sees the same silence
            data["activity_at"] = b.last_message
        elif "activity_at" in data:  # replaying a log
            b.last_message = float(data["activity_at"])
            b.last_activity = max(b.last_activity, b.last_message)
        self._prune_window(at)
        effects: list[Effect] = []
        record: dict[str, Any] = {"input": data} if data else {}
        source = self.state

        stale = self._stale_timer(event, data)
        if stale is not None:
            return self._log(event, at, source, source, {**record, "ignored": stale}, effects)

        if event is Event.START:
            b.last_activity = b.last_message = at
        if "error" in data:
            b.error_class, rule = classify(data["error"])
            record["error_class"] = b.error_class.value
            record["error_rule"] = rule
        else:
            b.error_class = ErrorClass.FATAL if event is Event.FATAL_ERROR else None
        saved = (b.stream_failures, b.rpc_failures, b.last_activity, b.last_message)
        self._count(event, at)

        self._fired = None
        self._guard_results = {}
        self._triggers[event]()
        row = self._fired
        if self._guard_results:
            record["guards"] = dict(self._guard_results)
        if row is None:
            b.stream_failures, b.rpc_failures, b.last_activity, b.last_message = saved
            return self._log(event, at, source, source, {**record, "ignored": "no_row"}, effects)

        timer = self.timers.pop(event, None)
        if row.dest is None:
            if timer is not None and timer.spec.periodic:
                effects.append(self._arm(timer.spec, timer.delay))
        else:
            effects.extend(self._leave())
            effects.extend(self._enter(row.dest, event, record))
        effects.extend(Perform(a) for a in row.actions)
        if row.dest is not None:
            effects.extend(Perform(a) for a in STATE_SPECS[row.dest].on_enter)
        return self._log(event, at, source, self.state, record, effects)

    # -- internals ----------------------------------------------------------------------------

    def _stale_timer(self, event: Event, data: Mapping[str, Any]) -> str | None:
        if event not in TIMER_EVENTS:
            return None
        armed = self.timers.get(event)
        if armed is None:
            return "timer_not_armed"
        token = data.get("timer")
        if token is not None and token != armed.token:
            return "stale_timer"
        return None

    def _prune_window(self, now: float) -> None:
        window = self.policy.breaker.window
        restarts = self.book.restarts
        while restarts and restarts[0] <= now - window:
            restarts.popleft()

    def _count(self, event: Event, at: float) -> None:
        """Bookkeeping before the guards run; every counter the guards read is set here."""
        b = self.book
        if event in FAILURE_EVENTS:
            b.stream_failures += 1
        elif event is Event.BACKOFF_ELAPSED and len(b.restarts) >= self.policy.breaker.max_restarts:
            b.stream_failures += 1  # the breaker stayed open: one more failed attempt
        elif event is Event.STREAM_OPENED:
            b.last_activity = b.last_message = at
        elif event is Event.PROBE_QUIET:
            b.last_activity = at  # confirmed quiet: the silence clock starts again
            b.rpc_failures = 0
        elif event is Event.HEALTHY_PERIOD:
            b.stream_failures = 0
            b.backoffs = 0
        if event in (Event.SYNC_FAILED, Event.POLL_FAILED, Event.PROBE_FAILED):
            b.rpc_failures += 1
        elif event in (Event.SYNC_OK, Event.SYNC_BEHIND, Event.POLL_OK, Event.PROBE_BEHIND):
            b.rpc_failures = 0

    def _leave(self) -> list[Effect]:
        """Leaving a state cancels every timer it armed: none outlives its state."""
        cancelled: list[Effect] = [CancelTimer(ev, t.token) for ev, t in self.timers.items()]
        self.timers.clear()
        return cancelled

    def _enter(self, state: State, event: Event, record: dict[str, Any]) -> list[Effect]:
        effects: list[Effect] = []
        b = self.book
        if state is State.RESTARTING:
            b.restarts.append(b.now)
            self.restart_times.append(b.now)
        elif state is State.BACKOFF:
            upper = min(self.policy.breaker.backoff_max,
                        self.policy.breaker.backoff_initial * (2 ** min(b.backoffs, 32)))
            self.backoff_delay = self._jitter(upper)
            b.backoffs += 1
            record["backoff_delay"] = round(self.backoff_delay, 6)
        elif state is State.SHUTTING_DOWN:
            self.exit_code = EXIT_FATAL if b.error_class is ErrorClass.FATAL else 0
            record["exit_code"] = self.exit_code
        elif state is State.STREAMING:
            b.last_activity = max(b.last_activity, b.now)
        record["restarts_in_window"] = len(b.restarts)
        record["stream_failures"] = b.stream_failures
        for spec in STATE_SPECS[state].timers:
            if spec.event is Event.BACKOFF_ELAPSED:
                effects.append(self._arm(spec, self.backoff_delay))
            else:
                effects.append(self._arm(spec, spec.seconds(self.policy)))
        return effects

    def _arm(self, spec: TimerSpec, delay: float) -> ArmTimer:
        self._next_token += 1
        self.timers[spec.event] = ArmedTimer(self._next_token, spec, delay)
        return ArmTimer(spec.event, self._next_token, delay)

    def _log(
        self,
        event: Event,
        at: float,
        source: State,
        dest: State,
        data: dict[str, Any],
        effects: list[Effect],
    ) -> list[Effect]:
        self._logged_message = self.book.last_message  # what the log has seen of the hot path
        self.seq += 1
        if "ignored" not in data:
            key = (source.value, dest.value)
            self.transitions[key] = self.transitions.get(key, 0) + 1
        if self._record is not None:
            self._record({
                "seq": self.seq,
                "at": at,
                "event": event.value,
                "source": source.value,
                "dest": dest.value,
                "data": data,
            })
        return effects


def actions_of(effects: list[Effect]) -> list[Action]:
    """The actions among ``effects``, in order (a convenience for tests and the simulator)."""
    return [e.action for e in effects if isinstance(e, Perform)]
