"""The circuit breaker and graceful degradation, told as incidents."""

from __future__ import annotations

from fsm.core import SupervisorCore, actions_of
from fsm.policy import Policy
from fsm.table import Action, Event, State


def _streaming(policy: Policy | None = None, seed: int = 0) -> SupervisorCore:
    core = SupervisorCore(policy, seed=seed)
    core.start(0.0)
    core.feed(Event.STREAM_OPENED, 1.0)
    return core


def test_fourth_failure_in_an_hour_backs_off_and_alerts() -> None:
    core = _streaming()
    for i in range(3):
        core.feed(Event.STREAM_ERROR, 600.0 * (i + 1), {"error": "UNAVAILABLE"})
        assert core.state is State.RESTARTING
        core.feed(Event.STREAM_OPENED, 600.0 * (i + 1) + 1)
    effects = core.feed(Event.STREAM_ERROR, 2400.0, {"error": "UNAVAILABLE"})
    assert core.state is State.BACKOFF
    assert Action.ALERT in actions_of(effects)
    assert len(core.restart_times) == 3


def test_window_slides_rather_than_counting_from_the_last_restart() -> None:
    core = _streaming()
    for t in (100.0, 200.0, 300.0):
        core.feed(Event.STREAM_ERROR, t, {"error": "UNAVAILABLE"})
        core.feed(Event.STREAM_OPENED, t + 1)
    # an hour after the FIRST restart one slot frees, although the last was only 3400 s ago
    core.feed(Event.STREAM_ERROR, 3701.0, {"error": "UNAVAILABLE"})
    assert core.state is State.RESTARTING
    assert core.restarts_in_window() == 3


def test_backoff_is_capped_exponential_with_injected_jitter() -> None:
    uppers: list[float] = []

    def jitter(upper: float) -> float:
        uppers.append(upper)
        return upper  # worst case, so the cap is visible

    core = SupervisorCore(jitter=jitter)
    core.start(0.0)
    now = 0.0
    for _ in range(8):
        core.feed(Event.STREAM_OPEN_FAILED, now + 1, {"error": "UNAVAILABLE"})
        now += 1
        if core.state is State.BACKOFF:
            core.feed(Event.BACKOFF_ELAPSED, now + core.backoff_delay)
            now += core.backoff_delay
    assert uppers[:1] == [10.0]
    assert all(u <= 300.0 for u in uppers)


def test_cannot_open_stream_degrades_to_polling_then_retries_through_breaker() -> None:
    core = SupervisorCore(seed=1)
    core.start(0.0)
    core.feed(Event.STREAM_OPEN_FAILED, 2.0, {"error": "stream ended before it opened"})
    assert core.state is State.BACKOFF
    core.feed(Event.BACKOFF_ELAPSED, 2.0 + core.backoff_delay)
    assert core.state is State.RESTARTING
    effects = core.feed(Event.STREAM_OPEN_FAILED, 20.0, {"error": "UNAVAILABLE"})
    assert core.state is State.POLLING
    assert Action.POLL in actions_of(effects)
    assert Event.POLL_DUE in core.timers and Event.STREAM_RETRY_DUE in core.timers
    token = core.timers[Event.POLL_DUE].token
    assert Action.POLL in actions_of(core.feed(Event.POLL_DUE, 140.0, {"timer": token}))
    core.feed(Event.STREAM_RETRY_DUE, 620.0)
    assert core.state is State.RESTARTING
    core.feed(Event.STREAM_OPEN_FAILED, 622.0, {"error": "UNAVAILABLE"})
    assert core.state is State.POLLING  # still failing: straight back to polling
    core.feed(Event.STREAM_RETRY_DUE, 1222.0)
    core.feed(Event.STREAM_OPENED, 1223.0)
    assert core.state is State.STREAMING


def test_failures_reset_after_a_healthy_period() -> None:
    core = _streaming()
    core.feed(Event.STREAM_ERROR, 10.0, {"error": "UNAVAILABLE"})
    core.feed(Event.STREAM_OPENED, 11.0)
    assert core.book.stream_failures == 1
    core.feed(Event.HEALTHY_PERIOD, 611.0)
    assert core.book.stream_failures == 0 and core.book.backoffs == 0


def test_quiet_stream_is_probed_not_restarted() -> None:
    core = _streaming()
    for t in range(300, 1801, 300):
        core.feed(Event.ACTIVITY_DUE, float(t) + 1)
    assert core.state is State.STALLED
    core.feed(Event.PROBE_QUIET, 1802.0)
    assert core.state is State.STREAMING
    assert core.restart_times == []
    core.feed(Event.ACTIVITY_DUE, 2101.0)
    assert core.state is State.STREAMING  # the quiet probe restarted the silence clock


def test_dead_stream_found_by_probe_restarts() -> None:
    core = _streaming()
    core.note_activity(5.0)
    core.feed(Event.ACTIVITY_DUE, 1900.0)
    assert core.state is State.STALLED
    core.feed(Event.PROBE_BEHIND, 1901.0, {"missed": 3})
    assert core.state is State.RESTARTING


def test_periodic_sync_that_finds_missed_messages_restarts_the_stream() -> None:
    core = _streaming()
    core.feed(Event.SYNC_DUE, 301.0)
    core.feed(Event.SYNC_BEHIND, 302.0, {"missed": 2})
    assert core.state is State.RESTARTING


def test_message_activity_never_touches_the_state_machine() -> None:
    records: list[dict[str, object]] = []
    core = SupervisorCore(record=records.append)
    core.start(0.0)
    core.feed(Event.STREAM_OPENED, 1.0)
    before = len(records)
    for t in range(1000):
        core.note_activity(float(t))
    assert len(records) == before
    assert core.book.last_activity == 999.0


def test_shutdown_from_streaming_drains_then_stops_with_exit_zero() -> None:
    core = _streaming()
    effects = core.feed(Event.SHUTDOWN, 50.0)
    assert core.state is State.SHUTTING_DOWN
    assert Action.DRAIN in actions_of(effects)
    assert set(core.timers) == {Event.DRAIN_DEADLINE}
    effects = core.feed(Event.DRAINED, 51.0)
    assert core.state is State.STOPPED and core.exit_code == 0
    assert actions_of(effects)[-1] is Action.EXIT
