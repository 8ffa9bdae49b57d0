"""The error-class table: which failures are worth a restart and which must stop the agent.

A restart cannot fix a wrong database key or a broken identity, and retrying them is how an agent
ends up in a restart loop; those are fatal. Everything the network does to us is retriable. The
patterns are matched, case-insensitively, against ``"<ExceptionType>: <message>"``; the first
matching row wins, and an unknown error is retriable (the breaker bounds the cost of being wrong).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

EXIT_FATAL = 3
"""Exit status after a fatal error: distinct from 1 (a crash, worth a restart by systemd) and 2
(invalid configuration), so a service manager can refuse to restart what a restart cannot fix."""


class ErrorClass(StrEnum):
    RETRIABLE = "retriable"
    FATAL = "fatal"


@dataclass(frozen=True)
class ErrorRule:
    name: str
    pattern: str
    error_class: ErrorClass
    why: str


ERROR_RULES: tuple[ErrorRule, ...] = (
    # fatal first: these are certain, and restarting cannot help
    ErrorRule("db_key", r"sqlcipher|file is (encrypted|not a database)|not a database|"
              r"PRAGMA key|encryption key|hmac check failed", ErrorClass.FATAL,
              "wrong DB encryption key or a corrupt database: a restart reopens the same file"),
    ErrorRule("identity", r"installation.*(revoked|limit|not found)|too many installations|"
              r"inbox.*(not found|mismatch)|identity.*(invalid|mismatch)|signature.*invalid",
              ErrorClass.FATAL, "identity or installation errors need an operator"),
    ErrorRule("config", r"ConfigError|invalid (wallet|private) key", ErrorClass.FATAL,
              "bad configuration never heals by itself"),
    # retriable: what the network and the stream do
    ErrorRule("welcome_not_found", r"group with welcome id .* not found", ErrorClass.RETRIABLE,
              "libxmtp #2449: closes the stream; reopening works"),
    ErrorRule("rate_limited", r"RESOURCE_EXHAUSTED|rate.?limit|429|too many requests",
              ErrorClass.RETRIABLE, "rate limits reset within minutes"),
    ErrorRule("unavailable", r"UNAVAILABLE|unavailable|connection (refused|reset)|"
              r"transport|broken pipe|timed? ?out|deadline", ErrorClass.RETRIABLE,
              "the node or the path to it is down"),
    ErrorRule("stream_closed", r"stream (closed|ended)|subscription|StreamClosed|"
              r"end of stream|cancel", ErrorClass.RETRIABLE, "reopen the stream"),
    ErrorRule("network", r"network|grpc|http|dns|socket|tls|h2", ErrorClass.RETRIABLE,
              "transient network trouble"),
)

_COMPILED = tuple((rule, re.compile(rule.pattern, re.IGNORECASE)) for rule in ERROR_RULES)


def classify(error: str | None) -> tuple[ErrorClass, str]:
    """The class and the rule name for an error description; ``None`` (no error) is retriable."""
    if not error:
        return ErrorClass.RETRIABLE, "none"
    for rule, pattern in _COMPILED:
        if pattern.search(error):
            return rule.error_class, rule.name
    return ErrorClass.RETRIABLE, "unknown"


def describe(exc: BaseException) -> str:
    """The string :func:`classify` reads: the exception's type name and message."""
    return f"{type(exc).__name__}: {exc}"
