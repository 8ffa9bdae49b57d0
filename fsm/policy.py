"""The supervisor's policy: every timer, limit and bound, validated and frozen.

Defaults come from the production post-mortem (sync every 5 min, stall after 30 min, at most 3
restarts in a sliding hour, ...). Every value is a default, not a law: a TOML file and environment
variables override them, and bad input fails with a message naming the key and the rule it broke.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "XMTP_SUPERVISOR__"
"""Environment overrides look like ``XMTP_SUPERVISOR__TIMERS__SYNC_INTERVAL=2m``."""

_DURATION_RE = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h|d)\s*)+$|^\s*\d+(?:\.\d+)?\s*$")
_PART_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class PolicyError(ValueError):
    """A configuration value is wrong; the message names the key, the rule and the fix."""


def parse_duration(value: object, key: str = "duration") -> float:
    """Seconds from ``"5m"``, ``"30s"``, ``"1h30m"``, ``"250ms"``, ``"1d"`` or a bare number."""
    if isinstance(value, bool):
        raise PolicyError(f"{key}: expected a duration like \"5m\" or \"30s\", got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        if not _DURATION_RE.match(value):
            raise PolicyError(
                f"{key}: {value!r} is not a duration; write a number with a unit "
                "(ms, s, m, h, d), for example \"5m\", \"30s\" or \"1h30m\""
            )
        seconds = sum(
            float(number) * _UNIT_SECONDS[unit or None]
            for number, unit in _PART_RE.findall(value)
        )
    else:
        raise PolicyError(f"{key}: expected a duration like \"5m\" or \"30s\", got {value!r}")
    if not math.isfinite(seconds):
        raise PolicyError(f"{key}: {value!r} is not a finite duration")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration, for printing the effective policy."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds < 1 and (seconds * 1000) == int(seconds * 1000):
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:g}s"


def _duration(default: str) -> Any:
    return field(default=parse_duration(default), metadata={"kind": "duration"})


@dataclass(frozen=True)
class Timers:
    """How often the supervisor looks at the world; all in seconds."""

    sync_interval: float = _duration("5m")
    """Periodic sync while streaming; also a probe: what it finds that the stream missed
    means the stream is dead."""
    health_interval: float = _duration("10m")
    """Local health check: RSS and the size of every bounded structure."""
    activity_check_interval: float = _duration("5m")
    """How often silence is measured (the stall timeout is noticed at this granularity)."""
    activity_warn_after: float = _duration("15m")
    """Silence that earns one warning per silent spell."""
    stall_timeout: float = _duration("30m")
    """Silence after which the stream is probed (quiet → keep it; behind → restart)."""
    poll_interval: float = _duration("2m")
    """Sync + fetch after the cursors while the stream is down (polling)."""
    full_sync_interval: float = _duration("30m")
    """Most periodic syncs ask the node only for each conversation's newest message (two calls
    in all) and sync what changed; at least this often one re-reads every conversation over the
    lookback window, which also finds messages the stream skipped between others."""
    stream_retry_interval: float = _duration("10m")
    """While polling, how often the stream is retried (through the breaker)."""
    open_timeout: float = _duration("30s")
    """A stream that is not ready within this is a failed open."""
    probe_timeout: float = _duration("60s")
    """A probe that does not answer within this counts as dead; also the longest a reopened
    stream's messages wait for the catch-up before they are handled anyway."""
    drain_deadline: float = _duration("10s")
    """On shutdown, how long in-flight handlers may finish before they are cut."""


@dataclass(frozen=True)
class Breaker:
    """The restart circuit breaker: a sliding window of restarts, then jittered backoff."""

    max_restarts: int = 3
    """Restarts allowed in any sliding window; one more goes to backoff."""
    window: float = _duration("1h")
    """The sliding window of the breaker."""
    backoff_initial: float = _duration("10s")
    """First backoff ceiling; doubles per round, with full jitter."""
    backoff_max: float = _duration("5m")
    """Cap of the backoff ceiling."""
    healthy_reset_after: float = _duration("10m")
    """Streaming this long resets the failure count and the backoff exponent."""
    polling_after: int = 2
    """Consecutive failed attempts (stream opens, or backoffs with the breaker still open) before
    degrading to polling."""


@dataclass(frozen=True)
class Dedup:
    """The bounded processed-message-id set of the hot path."""

    max_ids: int = 500
    """Processed message ids remembered in memory."""
    evict: int = 250
    """When full, this many of the oldest ids are evicted."""


@dataclass(frozen=True)
class Store:
    """The SQLite file holding per-conversation cursors and the reply outbox."""

    path: str = "xmtp-supervisor.db"
    """SQLite file (WAL) with the cursors and the reply outbox."""
    durability: str = "batch"
    """``per-message`` commits the cursor after every message; ``batch`` commits in batches."""
    batch_size: int = 100
    """Batch durability: commit after this many messages ..."""
    batch_interval: float = _duration("1s")
    """... or after this long, whichever comes first (and always on shutdown)."""
    lookback: float = _duration("10m")
    """Catch-up re-reads this far behind each cursor: a message the stream skipped (libxmtp
    #2351) while later ones were handled is still found; ids handled in this window are kept
    on disk so nothing in it is handled twice."""
    lookback_max_ids: int = 1000
    """Handled ids remembered per conversation inside the lookback window (the newest)."""


@dataclass(frozen=True)
class Handlers:
    """Limits on message handlers."""

    timeout: float = _duration("30s")
    """A handler running longer is cut off (and counted)."""
    concurrency: int = 8
    """Conversations handled concurrently (one conversation is always in order)."""
    outbox_retry_initial: float = _duration("2s")
    """First retry delay of an unconfirmed reply."""
    outbox_retry_max: float = _duration("2m")
    """Cap of the reply retry delay."""


@dataclass(frozen=True)
class Logging:
    """Log format and volume."""

    env: str = "production"
    """``production``: JSON lines at ``info``; ``development``: readable console output."""
    level: str = "info"
    """debug, info, warning or error."""
    warn_interval: float = _duration("5m")
    """The same warning is logged at most once per interval, with a count of what was suppressed."""
    debug_content: bool = False
    """Let message content into debug logs; refused in production."""


@dataclass(frozen=True)
class Http:
    """The health, readiness, metrics and status endpoint."""

    enabled: bool = True
    """Serve /healthz, /readyz, /metrics and /status."""
    host: str = "127.0.0.1"
    """Bind address (loopback by default)."""
    port: int = field(default=9464, metadata={"min": 0})
    """TCP port (0 picks a free one)."""


@dataclass(frozen=True)
class Alerts:
    """When to raise an alert, and where to post it."""

    consecutive_failures: int = 5
    """Failed syncs/polls/opens in a row that raise an alert."""
    webhook_url: str = ""
    """Optional URL that receives each alert as a JSON POST."""
    webhook_timeout: float = _duration("5s")
    """Timeout of one webhook POST (no retries)."""
    rss_ceiling_mb: int = 512
    """RSS above this logs a (rate-limited) warning."""


@dataclass(frozen=True)
class Policy:
    """The whole, validated policy; build it with :func:`load_policy` or :meth:`from_mapping`."""

    timers: Timers = field(default_factory=Timers)
    breaker: Breaker = field(default_factory=Breaker)
    dedup: Dedup = field(default_factory=Dedup)
    store: Store = field(default_factory=Store)
    handlers: Handlers = field(default_factory=Handlers)
    logging: Logging = field(default_factory=Logging)
    http: Http = field(default_factory=Http)
    alerts: Alerts = field(default_factory=Alerts)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "config") -> Policy:
        """Build and validate a policy from nested sections, as parsed from TOML."""
        sections: dict[str, Any] = {}
        known = {f.name: f for f in fields(cls)}
        for name, value in data.items():
            if name not in known:
                raise PolicyError(
                    f"{source}: unknown section [{name}]; known sections: {', '.join(known)}"
                )
            if not isinstance(value, Mapping):
                raise PolicyError(f"{source}: [{name}] must be a table of keys, got {value!r}")
            section_type = known[name].default_factory
            sections[name] = _build_section(section_type, name, value, source)
        policy = cls(**sections)
        policy.validate()
        return policy

    def with_overrides(self, overrides: Mapping[str, Mapping[str, Any]]) -> Policy:
        """A new policy with some keys replaced, validated again."""
        merged = self.to_mapping()
        for section, values in overrides.items():
            merged.setdefault(section, {}).update(values)
        return Policy.from_mapping(merged)

    def validate(self) -> None:
        """Cross-field rules; each failure names the keys and the rule."""
        t, b, d = self.timers, self.breaker, self.dedup
        if t.stall_timeout < t.activity_check_interval:
            raise PolicyError(
                "timers.stall_timeout: must be at least timers.activity_check_interval "
                f"({format_duration(t.activity_check_interval)}), because a stall is only noticed "
                f"by the activity check; got {format_duration(t.stall_timeout)}"
            )
        if t.activity_warn_after > t.stall_timeout:
            raise PolicyError(
                "timers.activity_warn_after: must not exceed timers.stall_timeout "
                f"({format_duration(t.stall_timeout)}): the warning comes before the stall"
            )
        if b.backoff_max < b.backoff_initial:
            raise PolicyError(
                "breaker.backoff_max: must be at least breaker.backoff_initial "
                f"({format_duration(b.backoff_initial)})"
            )
        if d.evict > d.max_ids:
            raise PolicyError(
                f"dedup.evict: must be at most dedup.max_ids ({d.max_ids}); got {d.evict}"
            )
        if self.store.durability not in ("batch", "per-message"):
            raise PolicyError(
                f"store.durability: must be \"batch\" or \"per-message\", got "
                f"{self.store.durability!r}"
            )
        if self.logging.env not in ("production", "development"):
            raise PolicyError(
                "logging.env: must be \"production\" or \"development\", got "
                f"{self.logging.env!r}"
            )
        if self.logging.level not in ("debug", "info", "warning", "error"):
            raise PolicyError(
                "logging.level: must be one of debug, info, warning, error; got "
                f"{self.logging.level!r}"
            )
        if self.logging.debug_content and self.logging.env == "production":
            raise PolicyError(
                "logging.debug_content: message content may only be logged with "
                "logging.env = \"development\"; XMTP is end-to-end encrypted"
            )
        if not 0 <= self.http.port <= 65535:
            raise PolicyError(f"http.port: must be between 0 and 65535, got {self.http.port}")

    def to_mapping(self) -> dict[str, dict[str, Any]]:
        """Plain nested values (durations in seconds)."""
        return {
            f.name: dataclasses.asdict(getattr(self, f.name)) for f in fields(self)
        }

    def to_toml(self) -> str:
        """The effective policy as TOML, durations spelled with units."""
        lines: list[str] = []
        for f in fields(self):
            section = getattr(self, f.name)
            lines.append(f"[{f.name}]")
            for sf in fields(section):
                value = getattr(section, sf.name)
                lines.append(f"{sf.name} = {_toml_value(value, sf.metadata.get('kind'))}")
            lines.append("")
        return "\n".join(lines)


def _toml_value(value: Any, kind: str | None) -> str:
    if kind == "duration":
        return f'"{format_duration(value)}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def _build_section(section_type: Any, name: str, values: Mapping[str, Any], source: str) -> Any:
    known = {f.name: f for f in fields(section_type)}
    kwargs: dict[str, Any] = {}
    for key, raw in values.items():
        full = f"{name}.{key}"
        if key not in known:
            raise PolicyError(
                f"{source}: unknown key {full}; known keys in [{name}]: {', '.join(known)}"
            )
        kwargs[key] = _coerce(known[key], raw, full)
    return section_type(**kwargs)


def _coerce(f: dataclasses.Field[Any], raw: Any, key: str) -> Any:
    kind = f.metadata.get("kind")
    if kind == "duration":
        seconds = parse_duration(raw, key)
        if seconds <= 0:
            raise PolicyError(f"{key}: must be a positive duration, got {raw!r}")
        return seconds
    expected = f.type if isinstance(f.type, type) else {"int": int, "str": str, "bool": bool}.get(
        str(f.type), object
    )
    if expected is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "false", "1", "0", "yes", "no"):
            return raw.lower() in ("true", "1", "yes")
        raise PolicyError(f"{key}: expected true or false, got {raw!r}")
    if expected is int:
        if isinstance(raw, bool):
            raise PolicyError(f"{key}: expected a whole number, got {raw!r}")
        if isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
            raw = int(raw)
        if not isinstance(raw, int):
            raise PolicyError(f"{key}: expected a whole number, got {raw!r}")
        minimum = f.metadata.get("min", 1)
        if raw < minimum:
            raise PolicyError(f"{key}: must be at least {minimum}, got {raw}")
        return raw
    if expected is str:
        if not isinstance(raw, str):
            raise PolicyError(f"{key}: expected a string, got {raw!r}")
        return raw
    return raw


def env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Sections and keys from ``XMTP_SUPERVISOR__SECTION__KEY`` variables."""
    out: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX):].lower().split("__")
        if len(parts) != 2 or not all(parts):
            raise PolicyError(
                f"{name}: environment overrides are spelled {ENV_PREFIX}SECTION__KEY, "
                f"for example {ENV_PREFIX}TIMERS__SYNC_INTERVAL=5m"
            )
        out.setdefault(parts[0], {})[parts[1]] = value
    return out


def load_policy(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Policy:
    """The effective policy: defaults, then the TOML file, then environment overrides."""
    data: dict[str, dict[str, Any]] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise PolicyError(f"{path}: cannot read the config file ({exc.strerror})") from None
        try:
            parsed = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"{path}: not valid TOML ({exc})") from None
        for section, values in parsed.items():
            if not isinstance(values, dict):
                raise PolicyError(
                    f"{path}: top-level key {section!r} must be a [section] table"
                )
            data[section] = dict(values)
    for section, values in env_overrides(os.environ if environ is None else environ).items():
        data.setdefault(section, {}).update(values)
    return Policy.from_mapping(data, source)
