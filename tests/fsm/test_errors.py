"""The error-class table against the errors the SDK and libxmtp actually produce."""

from __future__ import annotations

import pytest

from fsm.core import SupervisorCore
from fsm.errors import EXIT_FATAL, ErrorClass, classify, describe
from fsm.table import Event, State


@pytest.mark.parametrize(
    ("error", "expected", "rule"),
    [
        ("GenericError: group with welcome id 42 not found", ErrorClass.RETRIABLE,
         "welcome_not_found"),
        ("status: Unavailable, message: \"UNAVAILABLE: connection refused\"",
         ErrorClass.RETRIABLE, "unavailable"),
        ("RESOURCE_EXHAUSTED: rate limit exceeded", ErrorClass.RETRIABLE, "rate_limited"),
        ("stream closed", ErrorClass.RETRIABLE, "stream_closed"),
        ("DatabaseOpenError: sqlcipher: file is not a database", ErrorClass.FATAL, "db_key"),
        ("Storage error: PRAGMA key failed", ErrorClass.FATAL, "db_key"),
        ("Association error: too many installations for inbox", ErrorClass.FATAL, "identity"),
        ("something nobody has seen", ErrorClass.RETRIABLE, "unknown"),
        (None, ErrorClass.RETRIABLE, "none"),
    ],
)
def test_classify(error: str | None, expected: ErrorClass, rule: str) -> None:
    assert classify(error) == (expected, rule)


def test_describe_names_the_exception_type() -> None:
    assert describe(ValueError("bad")) == "ValueError: bad"


def test_fatal_stream_error_shuts_down_with_nonzero_exit_instead_of_restarting() -> None:
    core = SupervisorCore()
    core.start(0.0)
    core.feed(Event.STREAM_OPENED, 1.0)
    core.feed(Event.STREAM_ERROR, 2.0, {"error": "sqlcipher: file is not a database"})
    assert core.state is State.SHUTTING_DOWN
    assert core.exit_code == EXIT_FATAL
    assert core.restart_times == []
    core.feed(Event.DRAINED, 3.0)
    assert core.state is State.STOPPED


def test_fatal_error_during_a_sync_also_stops() -> None:
    core = SupervisorCore()
    core.start(0.0)
    core.feed(Event.STREAM_OPENED, 1.0)
    core.feed(Event.SYNC_FAILED, 2.0, {"error": "PRAGMA key: wrong key"})
    assert core.state is State.SHUTTING_DOWN and core.exit_code == EXIT_FATAL


def test_retriable_failure_during_sync_keeps_streaming() -> None:
    core = SupervisorCore()
    core.start(0.0)
    core.feed(Event.STREAM_OPENED, 1.0)
    core.feed(Event.SYNC_FAILED, 2.0, {"error": "UNAVAILABLE"})
    assert core.state is State.STREAMING
