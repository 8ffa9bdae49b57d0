"""Prometheus metrics for the supervisor, on a registry of its own.

A private :class:`~prometheus_client.CollectorRegistry` per :class:`Metrics` keeps tests (and two
supervisors in one process) from colliding on the global registry. Label values are bounded: states
and structures are names from code, RPC kinds are a fixed set.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

PREFIX = "xmtp_supervisor"
RPC_KINDS: tuple[str, ...] = (
    "open_stream", "catch_up", "sync", "poll", "probe", "health", "send",
)
"""Supervisor calls into the SDK, counted by kind and outcome."""
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
"""Handler latency buckets up to the default handler timeout (30 s) and beyond."""
CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The content type matching :meth:`Metrics.render`."""


def rss_bytes() -> int:
    """Resident set size of this process, in bytes.

    ``/proc/self/statm`` gives the current value on Linux; elsewhere ``getrusage`` only knows the
    peak (``ru_maxrss``, KiB on Linux, bytes on macOS), which is still an upper bound.
    """
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            resident_pages = int(f.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)


class Metrics:
    """Every metric the supervisor exports; the runtime calls the methods, ``/metrics`` renders."""

    def __init__(
        self,
        states: Iterable[str] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._clock = clock
        self._state: str | None = None
        self._state_since = clock()
        r = self.registry
        self.state = Gauge(
            f"{PREFIX}_state", "1 for the current supervisor state, 0 for the others",
            ["state"], registry=r,
        )
        self.transitions = Counter(
            f"{PREFIX}_transitions", "State transitions by source and destination",
            ["source", "dest"], registry=r,
        )
        self.restarts_in_window = Gauge(
            f"{PREFIX}_restarts_in_window", "Restarts counted in the breaker's sliding window",
            registry=r,
        )
        self.state_seconds = Gauge(
            f"{PREFIX}_state_seconds", "Seconds spent in the current state", registry=r,
        )
        self.state_seconds.set_function(lambda: max(0.0, self._clock() - self._state_since))
        self.messages_received = Counter(
            f"{PREFIX}_messages_received", "Messages received from stream or poll", registry=r,
        )
        self.messages_handled = Counter(
            f"{PREFIX}_messages_handled", "Messages a handler completed", registry=r,
        )
        self.messages_deduplicated = Counter(
            f"{PREFIX}_messages_deduplicated", "Messages dropped as already processed",
            registry=r,
        )
        self.messages_failed = Counter(
            f"{PREFIX}_messages_failed", "Messages whose handler raised or timed out", registry=r,
        )
        self.handler_latency = Histogram(
            f"{PREFIX}_handler_latency_seconds", "Handler run time per message",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.consecutive_failures = Gauge(
            f"{PREFIX}_consecutive_failures", "Failures since the last success", registry=r,
        )
        self.rss = Gauge(
            f"{PREFIX}_process_rss_bytes", "Resident set size at the last memory check",
            registry=r,
        )
        self.bounded_size = Gauge(
            f"{PREFIX}_bounded_structure_size", "Entries in a bounded in-memory structure",
            ["structure"], registry=r,
        )
        self.bounded_capacity = Gauge(
            f"{PREFIX}_bounded_structure_capacity", "Configured bound of that structure",
            ["structure"], registry=r,
        )
        self.rpcs = Counter(
            f"{PREFIX}_rpcs", "Supervisor calls into the SDK by kind and outcome",
            ["kind", "outcome"], registry=r,
        )
        self.cursor_lag = Gauge(
            f"{PREFIX}_cursor_lag_seconds",
            "Age of the newest processed message's timestamp (how far behind the cursor is)",
            registry=r,
        )
        self.loop_lag = Gauge(
            f"{PREFIX}_event_loop_lag_seconds", "Event loop lag at the last heartbeat", registry=r,
        )
        self.alerts = Counter(
            f"{PREFIX}_alerts", "Alerts raised by reason", ["reason"], registry=r,
        )
        self.webhook_failures = Counter(
            f"{PREFIX}_alert_webhook_failures", "Alert webhook posts that failed", registry=r,
        )
        self.refreshers: list[Callable[[], None]] = []
        """Called before each render: pull counters the hot path keeps as plain integers."""
        self._seen: dict[str, int] = {}
        for state in states:
            self.state.labels(state=state).set(0)
        for kind in RPC_KINDS:
            for outcome in ("ok", "error"):
                self.rpcs.labels(kind=kind, outcome=outcome)

    # state machine -------------------------------------------------------------------------

    def set_state(self, state: str, since: float | None = None) -> None:
        """Mark ``state`` current (entered at monotonic ``since``, default now); re-entering the
        current state keeps its start time unless ``since`` is given."""
        if self._state is not None and self._state != state:
            self.state.labels(state=self._state).set(0)
        self.state.labels(state=state).set(1)
        if state != self._state or since is not None:
            self._state_since = self._clock() if since is None else since
        self._state = state

    def record_transition(self, source: str, dest: str, since: float | None = None) -> None:
        """Count a transition and make ``dest`` the current state."""
        self.transitions.labels(source=source, dest=dest).inc()
        self.set_state(dest, since)

    def observe_record(self, record: Mapping[str, Any]) -> None:
        """Update from one :class:`fsm.core.SupervisorCore` record: the core's ``record`` hook
        can call this directly. Ignored events (``data.ignored``) change nothing but the restart
        count the core reports."""
        data = record.get("data") or {}
        if "ignored" not in data:
            self.record_transition(str(record["source"]), str(record["dest"]))
        if isinstance(data.get("restarts_in_window"), int):
            self.set_restarts_in_window(data["restarts_in_window"])

    def set_restarts_in_window(self, count: int) -> None:
        """The breaker's current restart count within its window."""
        self.restarts_in_window.set(count)

    def set_consecutive_failures(self, count: int) -> None:
        """Failures since the last success (the alerter's input, exported for dashboards)."""
        self.consecutive_failures.set(count)

    # hot path ------------------------------------------------------------------------------

    def message_received(self, count: int = 1) -> None:
        """Messages delivered by the stream or a poll, before dedup."""
        self.messages_received.inc(count)

    def message_deduplicated(self) -> None:
        """A message skipped because its id was already processed."""
        self.messages_deduplicated.inc()

    def message_handled(self, latency: float) -> None:
        """A handler finished successfully after ``latency`` seconds."""
        self.messages_handled.inc()
        self.handler_latency.observe(latency)

    def message_failed(self, latency: float | None = None) -> None:
        """A handler raised or timed out (after ``latency`` seconds, if known)."""
        self.messages_failed.inc()
        if latency is not None:
            self.handler_latency.observe(latency)

    def rpc(self, kind: str, ok: bool = True) -> None:
        """One supervisor call into the SDK; ``kind`` must be one of :data:`RPC_KINDS`."""
        if kind not in RPC_KINDS:
            raise ValueError(f"unknown RPC kind {kind!r}; expected one of {', '.join(RPC_KINDS)}")
        self.rpcs.labels(kind=kind, outcome="ok" if ok else "error").inc()

    def set_cursor_lag(self, seconds: float) -> None:
        """How far behind now the newest processed message is."""
        self.cursor_lag.set(max(0.0, seconds))

    # health --------------------------------------------------------------------------------

    def set_rss(self, value: int) -> None:
        """Resident set size in bytes."""
        self.rss.set(value)

    def set_bounded_size(self, structure: str, size: int, capacity: int | None = None) -> None:
        """Current size (and bound) of a bounded structure: dedup set, outbox, history, ..."""
        self.bounded_size.labels(structure=structure).set(size)
        if capacity is not None:
            self.bounded_capacity.labels(structure=structure).set(capacity)

    def set_loop_lag(self, seconds: float) -> None:
        """Event loop lag measured by the heartbeat."""
        self.loop_lag.set(seconds)

    def alert_raised(self, reason: str) -> None:
        """An alert was emitted (``consecutive_failures`` or ``breaker_open``)."""
        self.alerts.labels(reason=reason).inc()

    def webhook_failed(self) -> None:
        """An alert webhook post failed."""
        self.webhook_failures.inc()

    # export --------------------------------------------------------------------------------

    def sync_message_counters(self, counts: Mapping[str, int]) -> None:
        """Catch the message counters up with the hot path's own integer counters (keys
        ``received``, ``handled``, ``deduplicated``, ``failed``, ``timed_out``), so no metric
        call sits on the per-message path."""
        targets = {"received": self.messages_received, "handled": self.messages_handled,
                   "deduplicated": self.messages_deduplicated,
                   "failed": self.messages_failed, "timed_out": self.messages_failed}
        for key, counter in targets.items():
            value = counts.get(key, 0)
            delta = value - self._seen.get(key, 0)
            if delta > 0:
                counter.inc(delta)
                self._seen[key] = value

    def render(self) -> bytes:
        """All metrics in the Prometheus text exposition format (see :data:`CONTENT_TYPE`)."""
        for refresh in self.refreshers:
            refresh()
        return generate_latest(self.registry)
