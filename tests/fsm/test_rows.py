"""Every row of the transition table, dispatched with its guards forced true and earlier rows of
the same (state, event) forced false; plus the actions and timers each row leads to."""

from __future__ import annotations

import pytest

from fsm.core import SupervisorCore, actions_of
from fsm.effects import ArmTimer, CancelTimer
from fsm.guards import GUARDS
from fsm.table import ROWS, STATE_SPECS, Event, Row, State

T0 = 1000.0


def _forced_guards(row_index: int) -> dict[str, bool]:
    """Guard values that make ``ROWS[row_index]`` the first matching row."""
    row = ROWS[row_index]
    values = {name: False for name in GUARDS}
    for name in row.guards:
        values[name] = True
    for earlier in ROWS[:row_index]:
        if (earlier.source, earlier.event) == (row.source, row.event):
            assert earlier.guards, f"unreachable: {earlier} always fires before {row}"
            assert any(not values[g] for g in earlier.guards), f"{earlier} would fire first"
    return values


def _core_in(row: Row, values: dict[str, bool]) -> SupervisorCore:
    guards = {name: (lambda b, p, v=v: v) for name, v in values.items()}
    core = SupervisorCore(guards=guards)
    core.resume(row.source, T0)
    return core


def _row_id(row: Row) -> str:
    return f"{row.source.value}-{row.event.value}-{'+'.join(row.guards) or 'always'}"


@pytest.mark.parametrize("index", range(len(ROWS)), ids=[_row_id(r) for r in ROWS])
def test_row_fires_to_its_destination(index: int) -> None:
    row = ROWS[index]
    core = _core_in(row, _forced_guards(index))
    armed_before = dict(core.timers)
    effects = core.feed(row.event, T0 + 1.0, {})
    expected = row.source if row.dest is None else row.dest
    assert core.state is expected
    actions = actions_of(effects)
    for action in row.actions:
        assert action in actions
    if row.dest is not None:
        # leaving cancels every timer of the source; entering arms exactly the destination's
        cancelled = {e.token for e in effects if isinstance(e, CancelTimer)}
        remaining = {ev: t for ev, t in armed_before.items() if ev is not row.event}
        assert {t.token for t in remaining.values()} <= cancelled
        armed = {e.event for e in effects if isinstance(e, ArmTimer)}
        assert armed == {t.event for t in STATE_SPECS[row.dest].timers}
        for action in STATE_SPECS[row.dest].on_enter:
            assert action in actions
    expected_timers = {t.event for t in STATE_SPECS[core.state].timers}
    if row.dest is None and row.event in expected_timers:
        periodic = {t.event for t in STATE_SPECS[core.state].timers if t.periodic}
        if row.event not in periodic:
            expected_timers.discard(row.event)  # a one-shot timer that fired is gone
    assert set(core.timers) == expected_timers


def test_unlisted_event_is_ignored_and_logged() -> None:
    records: list[dict[str, object]] = []
    core = SupervisorCore(record=records.append)
    core.resume(State.BACKOFF, T0)
    assert core.feed(Event.POLL_OK, T0 + 1) == []
    assert core.state is State.BACKOFF
    assert records[-1]["data"] == {"ignored": "no_row"}


def test_stale_timer_token_is_ignored() -> None:
    core = SupervisorCore()
    core.start(0.0)
    core.feed(Event.STREAM_OPENED, 1.0)
    old = core.timers[Event.SYNC_DUE].token
    core.feed(Event.STREAM_ERROR, 2.0, {"error": "UNAVAILABLE"})
    core.feed(Event.STREAM_OPENED, 3.0)
    assert core.feed(Event.SYNC_DUE, 301.0, {"timer": old}) == []
    assert core.state is State.STREAMING


def test_periodic_timer_rearms_itself_with_a_new_token() -> None:
    core = SupervisorCore()
    core.start(0.0)
    core.feed(Event.STREAM_OPENED, 1.0)
    token = core.timers[Event.SYNC_DUE].token
    effects = core.feed(Event.SYNC_DUE, 301.0, {"timer": token})
    arms = [e for e in effects if isinstance(e, ArmTimer)]
    assert [a.event for a in arms] == [Event.SYNC_DUE]
    assert arms[0].token != token and arms[0].delay == 300.0
    assert "sync" in [a.value for a in actions_of(effects)]
