"""The transition table: the single source of truth for the supervisor's behaviour.

Every rule of the supervisor is a row here: source state, event, guards, destination, actions.
States declare the timers they arm on entry (cancelled on exit, so no timer outlives its state and
no two monitors watch the same thing) and the effects they perform on entry. The core
(:mod:`fsm.core`), the diagrams (:mod:`fsm.diagram`), the docs and replay all read this module.

Rows are tried in order; the first whose guards all hold fires. ``dest=None`` is an internal
transition: the state is kept, its timers keep running, only the row's actions happen.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from fsm.policy import Policy


class State(StrEnum):
    STARTING = "starting"
    STREAMING = "streaming"
    STALLED = "stalled"
    RESTARTING = "restarting"
    BACKOFF = "backoff"
    POLLING = "polling"
    SHUTTING_DOWN = "shutting_down"
    STOPPED = "stopped"


class Event(StrEnum):
    START = "start"
    # what the stream did
    STREAM_OPENED = "stream_opened"
    STREAM_OPEN_FAILED = "stream_open_failed"
    STREAM_ERROR = "stream_error"
    STREAM_ENDED = "stream_ended"  # a stream that ends on its own is a failure
    # timer expiries (named after the timer that fired)
    SYNC_DUE = "sync_due"
    HEALTH_DUE = "health_due"
    ACTIVITY_DUE = "activity_due"
    HEALTHY_PERIOD = "healthy_period"
    OPEN_TIMEOUT = "open_timeout"
    PROBE_TIMEOUT = "probe_timeout"
    BACKOFF_ELAPSED = "backoff_elapsed"
    POLL_DUE = "poll_due"
    STREAM_RETRY_DUE = "stream_retry_due"
    DRAIN_DEADLINE = "drain_deadline"
    # outcomes of effects
    SYNC_OK = "sync_ok"
    SYNC_BEHIND = "sync_behind"  # the network holds messages the stream never delivered
    SYNC_FAILED = "sync_failed"
    PROBE_QUIET = "probe_quiet"
    PROBE_BEHIND = "probe_behind"
    PROBE_FAILED = "probe_failed"
    POLL_OK = "poll_ok"
    POLL_FAILED = "poll_failed"
    HEALTH_OK = "health_ok"
    HEALTH_FAILED = "health_failed"
    # lifecycle
    FATAL_ERROR = "fatal_error"
    SHUTDOWN = "shutdown"
    DRAINED = "drained"


class Action(StrEnum):
    """Effects the runtime performs; each maps to one handler in ``handlers/``."""

    OPEN_STREAM = "open_stream"
    CLOSE_STREAM = "close_stream"
    CATCH_UP = "catch_up"  # sync, then fetch every conversation after its cursor
    SYNC = "sync"  # periodic sync, compared with what the stream delivered
    PROBE = "probe"  # same comparison, to tell a quiet stream from a dead one
    POLL = "poll"  # sync + fetch after the cursor, while the stream is down
    HEALTH_CHECK = "health_check"
    WARN_SILENCE = "warn_silence"
    ALERT = "alert"
    DRAIN = "drain"
    EXIT = "exit"


@dataclass(frozen=True)
class TimerSpec:
    """A timer a state arms on entry; ``interval`` names a policy field (``section.key``)."""

    event: Event
    interval: str
    periodic: bool

    @property
    def computed(self) -> bool:
        """The core works its delay out on entry (``computed:…``); no policy field names it."""
        return self.interval.startswith("computed:")

    def seconds(self, policy: Policy) -> float:
        """The delay the policy gives this timer."""
        section, key = self.interval.split(".")
        value: float = getattr(getattr(policy, section), key)
        return value


@dataclass(frozen=True)
class StateSpec:
    state: State
    on_enter: tuple[Action, ...]
    timers: tuple[TimerSpec, ...]
    doc: str


@dataclass(frozen=True)
class Row:
    source: State
    event: Event
    dest: State | None
    guards: tuple[str, ...] = ()
    actions: tuple[Action, ...] = ()
    doc: str = ""


S, E, A = State, Event, Action

INITIAL = S.STARTING
FINAL = S.STOPPED

_BACKOFF_TIMER = TimerSpec(E.BACKOFF_ELAPSED, "computed:backoff_delay", periodic=False)
"""Its delay is not a fixed policy field: the core computes it on entry (capped exponential with
full jitter)."""

STATES: tuple[StateSpec, ...] = (
    StateSpec(
        S.STARTING, (A.OPEN_STREAM,),
        (TimerSpec(E.OPEN_TIMEOUT, "timers.open_timeout", False),),
        "first attempt to open the stream",
    ),
    StateSpec(
        S.STREAMING, (),
        (
            TimerSpec(E.SYNC_DUE, "timers.sync_interval", True),
            TimerSpec(E.HEALTH_DUE, "timers.health_interval", True),
            TimerSpec(E.ACTIVITY_DUE, "timers.activity_check_interval", True),
            TimerSpec(E.HEALTHY_PERIOD, "breaker.healthy_reset_after", False),
        ),
        "the stream delivers; periodic syncs double as probes",
    ),
    StateSpec(
        S.STALLED, (A.PROBE,),
        (TimerSpec(E.PROBE_TIMEOUT, "timers.probe_timeout", False),),
        "silent too long: probe whether the stream is quiet or dead",
    ),
    StateSpec(
        S.RESTARTING, (A.CLOSE_STREAM, A.OPEN_STREAM),
        (TimerSpec(E.OPEN_TIMEOUT, "timers.open_timeout", False),),
        "a restart the breaker allowed; counted in its sliding window",
    ),
    StateSpec(
        S.BACKOFF, (A.CLOSE_STREAM,),
        (_BACKOFF_TIMER,),
        "breaker open: wait a jittered, capped exponential delay",
    ),
    StateSpec(
        S.POLLING, (A.CLOSE_STREAM, A.POLL),
        (
            TimerSpec(E.POLL_DUE, "timers.poll_interval", True),
            TimerSpec(E.STREAM_RETRY_DUE, "timers.stream_retry_interval", True),
            TimerSpec(E.HEALTH_DUE, "timers.health_interval", True),
        ),
        "graceful degradation: sync and fetch on a timer; retry the stream through the breaker",
    ),
    StateSpec(
        S.SHUTTING_DOWN, (A.DRAIN,),
        (TimerSpec(E.DRAIN_DEADLINE, "timers.drain_deadline", False),),
        "drain in-flight handlers up to a deadline, close the stream, flush",
    ),
    StateSpec(S.STOPPED, (A.CLOSE_STREAM, A.EXIT), (), "final"),
)

STATE_SPECS: dict[State, StateSpec] = {spec.state: spec for spec in STATES}

FAILURE_EVENTS = (E.STREAM_OPEN_FAILED, E.STREAM_ERROR, E.STREAM_ENDED, E.OPEN_TIMEOUT)
"""Events that mean the stream is not working; the core counts them as consecutive failures."""

ERROR_EVENTS = (E.STREAM_OPEN_FAILED, E.STREAM_ERROR, E.STREAM_ENDED)
"""Stream events whose error, classified by :mod:`fsm.errors`, may be fatal. Any event may carry
``{"error": ...}``; the core classifies it and the ``error_is_fatal`` guard reads the class."""

LIVE = (S.STARTING, S.STREAMING, S.STALLED, S.RESTARTING, S.BACKOFF, S.POLLING)


def _restart_through_breaker(source: State, event: Event, doc: str) -> list[Row]:
    """Every restart passes the breaker: allowed → restarting, otherwise → backoff."""
    return [
        Row(source, event, S.RESTARTING, ("breaker_allows",), (), doc),
        Row(source, event, S.BACKOFF, (), (A.ALERT,), "breaker open"),
    ]


def _stream_failure_rows(source: State) -> list[Row]:
    rows: list[Row] = []
    for event in ERROR_EVENTS:
        rows.append(Row(source, event, S.SHUTTING_DOWN, ("error_is_fatal",), (),
                        "fatal error: stop, never loop"))
        rows.extend(_restart_through_breaker(source, event, "stream died"))
    return rows


def _open_failure_rows(source: State) -> list[Row]:
    rows: list[Row] = []
    for event in FAILURE_EVENTS:
        if event in ERROR_EVENTS:
            rows.append(Row(source, event, S.SHUTTING_DOWN, ("error_is_fatal",), (),
                            "fatal error: stop, never loop"))
        rows.append(Row(source, event, S.POLLING, ("polling_due",), (),
                        "the stream cannot be opened: degrade to polling"))
        rows.append(Row(source, event, S.BACKOFF, (), (), "open failed: back off, then retry"))
    return rows


def _outcome_failure_rows(source: State, event: Event) -> list[Row]:
    """A failed sync, probe, poll or health check: fatal errors stop; others alert or wait."""
    return [
        Row(source, event, S.SHUTTING_DOWN, ("error_is_fatal",), (), "fatal error: stop"),
        Row(source, event, None, ("alert_due",), (A.ALERT,),
            "consecutive failures reached the alert threshold"),
        Row(source, event, None, (), (), "counted; the stream reports its own failures"),
    ]


def _build_rows() -> tuple[Row, ...]:
    rows: list[Row] = [Row(S.STARTING, E.START, S.STARTING, (), (), "boot")]

    # starting
    rows.append(Row(S.STARTING, E.STREAM_OPENED, S.STREAMING, (), (A.CATCH_UP,),
                    "opened: catch up after the cursors"))
    rows.extend(_open_failure_rows(S.STARTING))

    # streaming
    rows += [
        Row(S.STREAMING, E.ACTIVITY_DUE, S.STALLED, ("stall_exceeded",), (),
            "silent past stall_timeout: probe, do not restart yet"),
        Row(S.STREAMING, E.ACTIVITY_DUE, None, ("silence_exceeded",), (A.WARN_SILENCE,),
            "silent past activity_warn_after: warn"),
        Row(S.STREAMING, E.ACTIVITY_DUE, None, (), (), "recent activity"),
        Row(S.STREAMING, E.SYNC_DUE, None, (), (A.SYNC,), "periodic sync, also a probe"),
        Row(S.STREAMING, E.SYNC_OK, None, (), (), "nothing missed"),
        *_outcome_failure_rows(S.STREAMING, E.SYNC_FAILED),
        Row(S.STREAMING, E.HEALTH_DUE, None, (), (A.HEALTH_CHECK,), "record health"),
        Row(S.STREAMING, E.HEALTH_OK, None, (), (), ""),
        *_outcome_failure_rows(S.STREAMING, E.HEALTH_FAILED),
        Row(S.STREAMING, E.HEALTHY_PERIOD, None, (), (), "healthy long enough: reset failures"),
    ]
    rows.extend(_restart_through_breaker(
        S.STREAMING, E.SYNC_BEHIND, "sync found messages the stream never delivered: dead"))
    rows.extend(_stream_failure_rows(S.STREAMING))

    # stalled
    rows.append(Row(S.STALLED, E.PROBE_QUIET, S.STREAMING, (), (),
                    "quiet, not dead: back to streaming without a restart"))
    rows.append(Row(S.STALLED, E.PROBE_FAILED, S.SHUTTING_DOWN, ("error_is_fatal",), (),
                    "fatal error: stop"))
    for event in (E.PROBE_BEHIND, E.PROBE_FAILED, E.PROBE_TIMEOUT):
        rows.extend(_restart_through_breaker(S.STALLED, event, "dead or unknown: restart"))
    rows.extend(_stream_failure_rows(S.STALLED))

    # restarting
    rows.append(Row(S.RESTARTING, E.STREAM_OPENED, S.STREAMING, (), (A.CATCH_UP,),
                    "reopened: catch up after the cursors"))
    rows.extend(_open_failure_rows(S.RESTARTING))

    # backoff: afterwards a single half-open attempt, still through the breaker
    rows += [
        Row(S.BACKOFF, E.BACKOFF_ELAPSED, S.RESTARTING, ("breaker_allows",), (),
            "half-open: one attempt"),
        Row(S.BACKOFF, E.BACKOFF_ELAPSED, S.POLLING, ("polling_due",), (),
            "breaker stayed open: degrade to polling"),
        Row(S.BACKOFF, E.BACKOFF_ELAPSED, S.BACKOFF, (), (), "still open: back off longer"),
    ]

    # polling
    rows += [
        Row(S.POLLING, E.POLL_DUE, None, (), (A.POLL,), "sync + fetch after the cursors"),
        Row(S.POLLING, E.POLL_OK, None, (), (), ""),
        *_outcome_failure_rows(S.POLLING, E.POLL_FAILED),
        Row(S.POLLING, E.STREAM_RETRY_DUE, S.RESTARTING, ("breaker_allows",), (),
            "retry the stream through the breaker"),
        Row(S.POLLING, E.STREAM_RETRY_DUE, None, (), (), "breaker still open: keep polling"),
        Row(S.POLLING, E.HEALTH_DUE, None, (), (A.HEALTH_CHECK,), ""),
        Row(S.POLLING, E.HEALTH_OK, None, (), (), ""),
        *_outcome_failure_rows(S.POLLING, E.HEALTH_FAILED),
    ]

    # from every live state: fatal errors and shutdown requests
    for state in LIVE:
        rows.append(Row(state, E.FATAL_ERROR, S.SHUTTING_DOWN, (), (), "fatal: exit non-zero"))
        rows.append(Row(state, E.SHUTDOWN, S.SHUTTING_DOWN, (), (), "shutdown requested"))

    rows += [
        Row(S.SHUTTING_DOWN, E.DRAINED, S.STOPPED, (), (), "drained in time"),
        Row(S.SHUTTING_DOWN, E.DRAIN_DEADLINE, S.STOPPED, (), (), "deadline: cut what remains"),
    ]
    return tuple(rows)


ROWS: tuple[Row, ...] = _build_rows()
