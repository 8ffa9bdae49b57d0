"""Structured logging: JSON lines in production, console in development, secrets never leave.

Everything that decides what a log line may contain is a structlog processor in one chain
(:func:`build_processors`), so the same rules apply to every call site and tests can run the chain
directly. The rules, in order:

1. level filter (transition records are exempt: the transition log must stay complete);
2. exception formatting, so tracebacks pass through redaction as text;
3. redaction: the wallet and database keys (read from the environment at configure time) are
   scrubbed from every string, anything shaped like a private key is scrubbed, bytes are reduced to
   their length, and message content keys are dropped unless ``logging.debug_content`` is set (the
   policy refuses that in production: XMTP is end-to-end encrypted);
4. rate limiting: the same event at the same level at most once per ``logging.warn_interval``,
   with a ``suppressed`` count on the next emission (transition and alert records are exempt);
5. the transition file sink (optional), then the renderer.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from fsm.policy import Policy

ROOT_LOGGER = "xmtp_supervisor"
TRANSITIONS_LOGGER = "xmtp_supervisor.transitions"
"""Transition records go here; neither the level filter nor the rate limiter ever drops them."""
ALERTS_LOGGER = "xmtp_supervisor.alerts"
"""Alert records go here; the alerter emits one per episode already, so no rate limit."""

SECRET_ENV_VARS: tuple[str, ...] = ("XMTP_WALLET_KEY", "XMTP_DB_ENCRYPTION_KEY")
"""Environment variables whose values are scrubbed from every log string."""

CONTENT_KEYS: frozenset[str] = frozenset(
    {
        "text",
        "content",
        "body",
        "message_text",
        "message_body",
        "message_content",
        "decoded_content",
        "plaintext",
        "reply",
        "reply_text",
    }
)
"""Keys that carry decrypted message content; dropped unless ``logging.debug_content``."""

HEX_ID_KEYS: frozenset[str] = frozenset(
    {"message_id", "msg_id", "conversation_id", "group_id", "inbox_id", "installation_id"}
)
"""XMTP ids are 64 hex characters, exactly the shape of a private key. Under these keys the shape
rule is skipped so dedup and cursor problems stay debuggable; the configured secret values are
still scrubbed there."""

REDACTED = "[REDACTED]"
_KEY_SHAPE = re.compile(r"(?<![0-9a-fA-F])(?:0[xX])?[0-9a-fA-F]{64,}(?![0-9a-fA-F])")
"""A run of 64 or more hex digits: a raw private key, or one inside a longer hex blob."""
_MIN_SECRET_LEN = 8
"""Shorter values are not scrubbed: they would match ordinary text (even "[REDACTED]")."""
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "critical": 50}
_LEVEL_ALIASES = {"warn": "warning", "exception": "error", "fatal": "critical", "msg": "info"}


def secrets_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """The secret values to scrub: as given, without ``0x``, and, for hex keys, the base64 and
    bytes-repr spellings the same key takes once code has decoded it."""
    env = os.environ if environ is None else environ
    out: list[str] = []
    for name in SECRET_ENV_VARS:
        value = env.get(name, "").strip()
        if len(value) < _MIN_SECRET_LEN:
            continue
        out.append(value)
        bare = value[2:] if value[:2].lower() == "0x" else value
        if bare != value and len(bare) >= _MIN_SECRET_LEN:
            out.append(bare)
        try:
            raw = bytes.fromhex(bare)
        except ValueError:
            continue
        b64 = base64.b64encode(raw).decode()
        urlsafe = base64.urlsafe_b64encode(raw).decode()
        out.extend({b64, b64.rstrip("="), urlsafe, urlsafe.rstrip("="), repr(raw)[2:-1]})
    return [s for s in out if len(s) >= _MIN_SECRET_LEN]


class Redactor:
    """Scrubs secrets and drops message content from an event dict, recursively.

    Secret matching ignores case because hex keys get re-cased by formatting; the longest secrets
    are matched first so a ``0x``-prefixed key is removed whole.
    """

    def __init__(
        self,
        secrets: Iterable[str] = (),
        *,
        drop_content: bool = True,
        content_keys: Collection[str] = CONTENT_KEYS,
        hex_id_keys: Collection[str] = HEX_ID_KEYS,
    ) -> None:
        unique = sorted({s for s in secrets if len(s) >= _MIN_SECRET_LEN}, key=len, reverse=True)
        self._secret_re = (
            re.compile("|".join(re.escape(s) for s in unique), re.IGNORECASE) if unique else None
        )
        self.drop_content = drop_content
        self.content_keys = frozenset(content_keys)
        self.hex_id_keys = frozenset(hex_id_keys)

    def scrub(self, text: str, *, key_shape: bool = True) -> str:
        """The text with secret values and (optionally) key-shaped hex replaced."""
        if self._secret_re is not None:
            text = self._secret_re.sub(REDACTED, text)
        if key_shape:
            text = _KEY_SHAPE.sub(REDACTED, text)
        return text

    def value(self, value: Any, key: str | None = None) -> Any:
        """A log-safe copy of one value; unknown objects become scrubbed strings."""
        key_shape = key not in self.hex_id_keys
        if isinstance(value, str):
            return self.scrub(value, key_shape=key_shape)
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, bytes | bytearray | memoryview):
            return f"<{len(value)} bytes>"
        if isinstance(value, Mapping):
            return self.mapping(value)
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(v, key) for v in value]
        return self.scrub(str(value), key_shape=key_shape)

    def mapping(self, data: Mapping[Any, Any]) -> dict[str, Any]:
        """A log-safe copy of a mapping: content keys dropped, every value redacted."""
        out: dict[str, Any] = {}
        for k, v in data.items():
            key = str(k)
            if self.drop_content and key.lower() in self.content_keys:
                continue
            out[self.scrub(key)] = self.value(v, key)
        return out

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        return self.mapping(event_dict)


def make_redactor(policy: Policy, environ: Mapping[str, str] | None = None) -> Redactor:
    """The redactor the policy asks for: content passes only with debug_content in development."""
    allow_content = policy.logging.debug_content and policy.logging.env == "development"
    return Redactor(secrets_from_env(environ), drop_content=not allow_content)


def add_logger_name(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Name every record, from a ``logger`` key bound by the caller or the logger's own name."""
    if "logger" not in event_dict:
        event_dict["logger"] = getattr(logger, "name", None) or ROOT_LOGGER
    return event_dict


def add_level(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """A normalised ``level`` key (``warn`` -> ``warning``, ``exception`` -> ``error``)."""
    level = str(event_dict.get("level", method_name)).lower()
    event_dict["level"] = _LEVEL_ALIASES.get(level, level)
    return event_dict


class LevelFilter:
    """Drops records below the policy level, except on loggers that must stay complete."""

    def __init__(self, level: str, exempt: Collection[str] = (TRANSITIONS_LOGGER,)) -> None:
        self.threshold = _LEVELS[level]
        self.exempt = frozenset(exempt)

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        if event_dict.get("logger") in self.exempt:
            return event_dict
        if _LEVELS.get(str(event_dict.get("level")), 20) < self.threshold:
            raise structlog.DropEvent
        return event_dict


@dataclass
class _Window:
    last_emitted: float
    suppressed: int = 0


class RateLimiter:
    """The same event at the same level at most once per interval; the next one says how many
    were suppressed.

    Keyed on (logger, level, event name), not on the values, so a warning repeated with a changing
    detail is still one warning. The key table is bounded (oldest forgotten first) because event
    names could in principle be built from data.
    """

    def __init__(
        self,
        interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        levels: Collection[str] = ("warning", "error"),
        exempt: Collection[str] = (TRANSITIONS_LOGGER, ALERTS_LOGGER),
        max_keys: int = 1024,
    ) -> None:
        self.interval = interval
        self.clock = clock
        self.levels = frozenset(levels)
        self.exempt = frozenset(exempt)
        self.max_keys = max_keys
        self._windows: OrderedDict[tuple[str, str, str], _Window] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._windows)

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        name = str(event_dict.get("logger", ROOT_LOGGER))
        level = str(event_dict.get("level", method_name))
        if name in self.exempt or level not in self.levels:
            return event_dict
        key = (name, level, str(event_dict.get("event", "")))
        now = self.clock()
        with self._lock:
            window = self._windows.get(key)
            if window is not None and now - window.last_emitted < self.interval:
                window.suppressed += 1
                raise structlog.DropEvent
            if window is not None and window.suppressed:
                event_dict["suppressed"] = window.suppressed
            self._windows[key] = _Window(last_emitted=now)
            self._windows.move_to_end(key)
            while len(self._windows) > self.max_keys:
                self._windows.popitem(last=False)
        return event_dict


class TransitionFileSink:
    """Appends each transition record as one JSON object per line, flushed per record.

    It runs after redaction, so the file holds exactly what the log stream holds.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: TextIO | None = open(path, "a", encoding="utf-8")  # noqa: SIM115
        self._lock = threading.Lock()

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        if event_dict.get("logger") == TRANSITIONS_LOGGER and self._file is not None:
            line = json.dumps(event_dict, default=str, separators=(",", ":"))
            with self._lock:
                self._file.write(line + "\n")
                self._file.flush()
        return event_dict

    def close(self) -> None:
        """Close the file; later records are only logged to the stream."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def build_processors(
    policy: Policy,
    *,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.monotonic,
    transition_sink: TransitionFileSink | None = None,
    rate_limiter: RateLimiter | None = None,
    renderer: Processor | None = None,
    colors: bool = False,
) -> list[Processor]:
    """The whole processor chain for ``policy``; the last element renders a line (``str``).

    ``renderer`` overrides the policy's choice of JSON (production) or console (development).
    """
    limiter = rate_limiter or RateLimiter(policy.logging.warn_interval, clock=clock)
    chain: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        add_logger_name,
        add_level,
        LevelFilter(policy.logging.level),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        make_redactor(policy, environ),
        limiter,
    ]
    if transition_sink is not None:
        chain.append(transition_sink)
    chain.append(order_keys)
    chain.append(renderer if renderer is not None else _renderer(policy, colors))
    return chain


def _renderer(policy: Policy, colors: bool) -> Processor:
    """JSON lines in production, readable console lines in development."""
    if policy.logging.env == "production":
        return structlog.processors.JSONRenderer(default=str)
    return structlog.dev.ConsoleRenderer(colors=colors)


_FIRST_KEYS = ("timestamp", "level", "logger", "event")


def order_keys(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Timestamp, level, logger and event first, so a JSON line reads left to right."""
    ordered = {k: event_dict[k] for k in _FIRST_KEYS if k in event_dict}
    ordered.update((k, v) for k, v in event_dict.items() if k not in ordered)
    return ordered


class _NamedWriteLogger(structlog.WriteLogger):
    """A WriteLogger that remembers the name given to ``structlog.get_logger(name)``."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


@dataclass
class LoggingSetup:
    """What :func:`configure_logging` built; keep it to close the transition file at shutdown."""

    processors: list[Processor]
    rate_limiter: RateLimiter
    transition_sink: TransitionFileSink | None = None

    def close(self) -> None:
        """Flush and close the transition file."""
        if self.transition_sink is not None:
            self.transition_sink.close()


def configure_logging(
    policy: Policy,
    stream: TextIO = sys.stderr,
    transition_log_path: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> LoggingSetup:
    """Configure structlog (and route stdlib logging, e.g. grpc's, to the same stream).

    Secret values are read from the environment now, once: set them before calling this.
    """
    limiter = RateLimiter(policy.logging.warn_interval, clock=clock)
    sink = TransitionFileSink(transition_log_path) if transition_log_path else None
    colors = policy.logging.env == "development" and _isatty(stream)
    chain = build_processors(
        policy,
        environ=environ,
        clock=clock,
        transition_sink=sink,
        rate_limiter=limiter,
        colors=colors,
    )
    structlog.configure(
        processors=chain,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=lambda *args: _NamedWriteLogger(
            stream, str(args[0]) if args else ROOT_LOGGER
        ),
        cache_logger_on_first_use=False,
    )
    _route_stdlib(policy, stream, environ)
    return LoggingSetup(processors=chain, rate_limiter=limiter, transition_sink=sink)


def _route_stdlib(policy: Policy, stream: TextIO, environ: Mapping[str, str] | None) -> None:
    """Third-party libraries log through stdlib logging; give them the same format and redaction
    (rate limiting is not applied to them: a Formatter cannot drop a record)."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            make_redactor(policy, environ),
            _renderer(policy, colors=False),
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.set_name("xmtp_supervisor")
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "xmtp_supervisor":
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS[policy.logging.level])


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def get_logger(name: str = ROOT_LOGGER) -> Any:
    """A structlog logger named ``name`` (the name is the ``logger`` key of every record).

    It stays lazy, so a module-level logger created before :func:`configure_logging` still goes
    through the configured (redacting) chain; the name reaches the record through the logger
    factory that :func:`configure_logging` installs.
    """
    return structlog.get_logger(name)


def log_transition(record: Mapping[str, Any]) -> None:
    """Emit one core transition record on the transitions logger (never filtered or limited).

    ``record`` is what :class:`fsm.core.SupervisorCore` passes its ``record`` hook (``seq``, ``at``,
    ``event``, ``source``, ``dest``, ``data``); its FSM event becomes the log event name, exactly
    as :class:`fsm.translog.TransitionLog` writes it, so the transition file written here (after
    redaction) is readable by ``xmtp-supervisor replay``.
    """
    fields = {k: v for k, v in record.items() if k != "event"}
    get_logger(TRANSITIONS_LOGGER).info(str(record.get("event", "transition")), **fields)


def run_chain(
    processors: Iterable[Processor],
    method_name: str,
    event_dict: Mapping[str, Any],
    *,
    logger_name: str = ROOT_LOGGER,
) -> Any:
    """Run an event through a processor chain as structlog would; ``None`` if it was dropped.

    For tests and for checking what a given record would look like in production.
    """
    logger = _NamedWriteLogger(sys.stderr, logger_name)
    result: Any = dict(event_dict)
    try:
        for processor in processors:
            result = processor(logger, method_name, result)
    except structlog.DropEvent:
        return None
    return result
