"""Named guards of the transition table: pure functions of the core's bookkeeping and policy.

They never read a clock or mutate anything; the core prunes its sliding window and classifies
errors before asking them, so the same inputs always give the same answer (replay relies on it).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from fsm.errors import ErrorClass
from fsm.policy import Policy


@dataclass
class Book:
    """The core's bookkeeping: read by guards, written only by :class:`fsm.core.SupervisorCore`."""

    now: float = 0.0
    restarts: deque[float] = field(default_factory=deque)
    """Times of restarts inside the breaker's sliding window (pruned before each event)."""
    stream_failures: int = 0
    """Consecutive failed stream attempts; reset after a healthy period of streaming."""
    rpc_failures: int = 0
    """Consecutive failed syncs, polls and probes; reset by any success."""
    backoffs: int = 0
    """Backoff rounds since the last healthy period: the exponent of the backoff delay."""
    last_activity: float = 0.0
    """Last time the stream proved alive: a message, an opened stream or a quiet probe."""
    last_message: float = 0.0
    """Last message or stream open: the start of the current silent spell."""
    error_class: ErrorClass | None = None


Guard = Callable[[Book, Policy], bool]


def breaker_allows(b: Book, p: Policy) -> bool:
    """Fewer than ``max_restarts`` restarts in the sliding window: another one may start."""
    return len(b.restarts) < p.breaker.max_restarts


def polling_due(b: Book, p: Policy) -> bool:
    """Enough consecutive failed attempts that the stream should rest and polling take over."""
    return b.stream_failures >= p.breaker.polling_after


def error_is_fatal(b: Book, p: Policy) -> bool:
    """The event's error is in a fatal class of the error table: stop, never restart."""
    return b.error_class is ErrorClass.FATAL


def stall_exceeded(b: Book, p: Policy) -> bool:
    """Silent for ``stall_timeout``: time to probe whether the stream is dead or just quiet."""
    return b.now - b.last_activity >= p.timers.stall_timeout


def silence_exceeded(b: Book, p: Policy) -> bool:
    """The first activity check past ``activity_warn_after`` of silence: warn once per silent
    spell, not at every check (a quiet agent is not news every five minutes)."""
    silent = b.now - b.last_message
    warn = p.timers.activity_warn_after
    return silent >= warn and silent - p.timers.activity_check_interval < warn


def alert_due(b: Book, p: Policy) -> bool:
    """Exactly at the alert threshold of consecutive failures, so a streak alerts once."""
    return b.rpc_failures == p.alerts.consecutive_failures


GUARDS: dict[str, Guard] = {
    g.__name__: g
    for g in (breaker_allows, polling_due, error_is_fatal, stall_exceeded, silence_exceeded,
              alert_due)
}
