"""Invariants over random event sequences (hypothesis)."""

from __future__ import annotations

from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from fsm.core import SupervisorCore
from fsm.effects import ArmTimer
from fsm.errors import EXIT_FATAL
from fsm.simulate import worst_window
from fsm.table import FINAL, INITIAL, ROWS, STATE_SPECS, Event, State

EVENTS = [e for e in Event if e is not Event.START]
ERRORS = [None, "UNAVAILABLE", "RESOURCE_EXHAUSTED", "group with welcome id 7 not found",
          "stream closed", "sqlcipher: file is not a database"]

steps = st.lists(
    st.tuples(
        st.sampled_from(EVENTS),
        st.floats(min_value=0.0, max_value=900.0, allow_nan=False),
        st.sampled_from(ERRORS),
        st.booleans(),  # deliver the armed timer's own token (vs no token)
    ),
    max_size=120,
)


def _run(sequence: list[tuple[Event, float, str | None, bool]]) -> SupervisorCore:
    core = SupervisorCore(seed=7)
    now = 0.0
    core.start(now)
    for event, gap, error, with_token in sequence:
        now += gap
        data: dict[str, object] = {}
        if error is not None:
            data["error"] = error
        armed = core.timers.get(event)
        if armed is not None and with_token:
            data["timer"] = armed.token
        effects = core.feed(event, now, data)
        # no armed timer belongs to a state we left
        assert set(core.timers) <= {t.event for t in STATE_SPECS[core.state].timers}
        for effect in effects:
            if isinstance(effect, ArmTimer):
                assert effect.event in {t.event for t in STATE_SPECS[core.state].timers}
                assert effect.delay >= 0
    return core


@settings(max_examples=300, deadline=None)
@given(steps)
def test_never_more_restarts_than_the_breaker_allows_in_any_sliding_window(
    sequence: list[tuple[Event, float, str | None, bool]],
) -> None:
    core = _run(sequence)
    policy = core.policy
    assert worst_window(core.restart_times, policy.breaker.window) <= policy.breaker.max_restarts


@settings(max_examples=200, deadline=None)
@given(steps)
def test_shutdown_always_reaches_the_final_state(
    sequence: list[tuple[Event, float, str | None, bool]],
) -> None:
    core = _run(sequence)
    t = 10_000_000.0
    core.feed(Event.SHUTDOWN, t)
    if core.state is State.SHUTTING_DOWN:
        core.feed(Event.DRAIN_DEADLINE, t + core.policy.timers.drain_deadline)
    assert core.state is FINAL
    assert core.timers == {}
    assert core.exit_code in (0, EXIT_FATAL)


@settings(max_examples=200, deadline=None)
@given(steps)
def test_backoff_delay_is_full_jitter_below_the_cap(
    sequence: list[tuple[Event, float, str | None, bool]],
) -> None:
    core = _run(sequence)
    assert 0.0 <= core.backoff_delay <= core.policy.breaker.backoff_max


def test_every_state_is_reachable_from_the_initial_state() -> None:
    graph: dict[State, set[State]] = {}
    for row in ROWS:
        if row.dest is not None:
            graph.setdefault(row.source, set()).add(row.dest)
    seen, todo = {INITIAL}, deque([INITIAL])
    while todo:
        for nxt in graph.get(todo.popleft(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(State)


def test_same_events_same_transitions() -> None:
    sequence = [(Event.STREAM_OPENED, 1.0, None, True)] + [
        (Event.STREAM_ERROR, 600.0, "UNAVAILABLE", True),
        (Event.STREAM_OPENED, 1.0, None, True),
    ] * 10
    runs = []
    for _ in range(2):
        records: list[dict[str, object]] = []
        core = SupervisorCore(seed=3, record=records.append)
        core.start(0.0)
        now = 0.0
        for event, gap, error, _tok in sequence:
            now += gap
            core.feed(event, now, {"error": error} if error else {})
        runs.append(records)
    assert runs[0] == runs[1]
