"""The named guards, one behaviour each."""

from __future__ import annotations

from collections import deque

from fsm.errors import ErrorClass
from fsm.guards import (
    Book,
    alert_due,
    breaker_allows,
    error_is_fatal,
    polling_due,
    silence_exceeded,
    stall_exceeded,
)
from fsm.policy import Policy

P = Policy()


def test_breaker_allows_until_max_restarts_in_window() -> None:
    assert breaker_allows(Book(restarts=deque([1.0, 2.0])), P)
    assert not breaker_allows(Book(restarts=deque([1.0, 2.0, 3.0])), P)


def test_polling_due_after_consecutive_failures() -> None:
    assert not polling_due(Book(stream_failures=1), P)
    assert polling_due(Book(stream_failures=2), P)


def test_error_is_fatal_reads_the_classified_error() -> None:
    assert error_is_fatal(Book(error_class=ErrorClass.FATAL), P)
    assert not error_is_fatal(Book(error_class=ErrorClass.RETRIABLE), P)
    assert not error_is_fatal(Book(), P)


def test_stall_exceeded_after_stall_timeout_of_silence() -> None:
    assert not stall_exceeded(Book(now=1799.0, last_activity=0.0), P)
    assert stall_exceeded(Book(now=1800.0, last_activity=0.0), P)


def test_silence_warning_fires_once_per_silent_spell() -> None:
    # activity checks every 300 s; warn after 900 s of silence
    checks = [silence_exceeded(Book(now=t, last_message=0.0), P) for t in range(300, 3001, 300)]
    assert checks.count(True) == 1
    assert checks.index(True) == 2  # the check at 900 s


def test_alert_due_exactly_at_threshold() -> None:
    n = P.alerts.consecutive_failures
    assert alert_due(Book(rpc_failures=n), P)
    assert not alert_due(Book(rpc_failures=n - 1), P)
    assert not alert_due(Book(rpc_failures=n + 1), P)
