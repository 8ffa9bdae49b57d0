"""Alerts (consecutive failures, breaker open) and the memory check.

An alert is one ``alert`` log record on the ``xmtp_supervisor.alerts`` logger and, when
``alerts.webhook_url`` is set, one JSON POST. Raising is synchronous and cheap (the runtime calls it
from transition callbacks); posting happens in :meth:`Alerter.run`, one at a time, one attempt
each, from a small bounded queue: a flapping supervisor cannot turn into a webhook storm, and a
dead webhook is logged once until it works again.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import anyio

from fsm.policy import Policy
from xmtp_supervisor.logs import ALERTS_LOGGER, Redactor, get_logger, make_redactor
from xmtp_supervisor.metrics import Metrics, rss_bytes

QUEUE_SIZE = 16
"""Alerts waiting for the webhook; more are dropped (and counted as webhook failures)."""

PostFn = Callable[[str, bytes, float], None]


@dataclass(frozen=True)
class Alert:
    """One alert, as logged and as posted."""

    reason: str
    """``consecutive_failures`` or ``breaker_open``."""
    detail: str
    consecutive_failures: int
    restarts_in_window: int | None = None
    state: str | None = None
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def payload(self) -> dict[str, Any]:
        """The webhook body."""
        return {"service": "xmtp-supervisor", "host": socket.gethostname(), **asdict(self)}


def post_json(url: str, body: bytes, timeout: float) -> None:
    """POST ``body`` as JSON with the standard library; raises on any non-2xx answer."""
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "xmtp-supervisor"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read(65536)


def _safe_url(url: str) -> str:
    """Scheme and host only: webhook URLs often carry a token in the path."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}"


class Alerter:
    """Counts consecutive failures and raises alerts; :meth:`run` delivers them to the webhook."""

    def __init__(
        self,
        policy: Policy,
        metrics: Metrics | None = None,
        *,
        post: PostFn = post_json,
        redactor: Redactor | None = None,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.threshold = policy.alerts.consecutive_failures
        self.max_restarts = policy.breaker.max_restarts
        self._breaker_open = False
        self.webhook_url = policy.alerts.webhook_url
        self.timeout = policy.alerts.webhook_timeout
        if self.webhook_url and urlsplit(self.webhook_url).scheme not in ("http", "https"):
            raise ValueError("alerts.webhook_url: must be an http:// or https:// URL")
        self.metrics = metrics
        self._post = post
        self._redactor = redactor or make_redactor(policy)
        self._log = get_logger(ALERTS_LOGGER)
        self._send, self._receive = anyio.create_memory_object_stream[Alert](queue_size)
        self.consecutive_failures = 0
        self.webhook_failing = False
        self.sent = 0

    # raising ------------------------------------------------------------------------------

    def record_failure(self, detail: str = "", *, state: str | None = None) -> Alert | None:
        """One more failure; alerts exactly when the count reaches the threshold."""
        self.consecutive_failures += 1
        if self.metrics is not None:
            self.metrics.set_consecutive_failures(self.consecutive_failures)
        if self.consecutive_failures != self.threshold:
            return None
        return self._raise("consecutive_failures", detail, state=state)

    def record_success(self) -> None:
        """A success resets the count and re-arms the consecutive-failure alert."""
        self.consecutive_failures = 0
        if self.metrics is not None:
            self.metrics.set_consecutive_failures(0)

    def breaker_opened(
        self, restarts_in_window: int, detail: str = "", *, state: str | None = None
    ) -> Alert:
        """The restart breaker opened: always an alert (the breaker itself limits how often)."""
        return self._raise(
            "breaker_open", detail, state=state, restarts_in_window=restarts_in_window
        )

    def observe_record(self, record: Mapping[str, Any]) -> Alert | None:
        """Detect the breaker opening from a :class:`fsm.core.SupervisorCore` record.

        The breaker is open when the core goes to ``backoff`` instead of ``restarting`` because
        the window already holds ``breaker.max_restarts`` restarts. One alert per opening: it
        re-arms once the window has slid below the limit.
        """
        data = record.get("data") or {}
        restarts = data.get("restarts_in_window")
        if "ignored" in data or not isinstance(restarts, int):
            return None
        if restarts < self.max_restarts:
            self._breaker_open = False
            return None
        if record.get("dest") != "backoff" or self._breaker_open:
            return None
        self._breaker_open = True
        return self.breaker_opened(
            restarts,
            f"{restarts} restarts within the breaker window after {record.get('event')}",
            state=str(record.get("dest")),
        )

    def _raise(
        self,
        reason: str,
        detail: str,
        *,
        state: str | None,
        restarts_in_window: int | None = None,
    ) -> Alert:
        alert = Alert(
            reason=reason,
            detail=self._redactor.scrub(detail),
            consecutive_failures=self.consecutive_failures,
            restarts_in_window=restarts_in_window,
            state=state,
        )
        fields = {k: v for k, v in asdict(alert).items() if v is not None and k != "time"}
        self._log.error("alert", **fields)
        if self.metrics is not None:
            self.metrics.alert_raised(reason)
        if self.webhook_url:
            try:
                self._send.send_nowait(alert)
            except anyio.WouldBlock:
                self._webhook_failed("queue full")
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass  # shutting down: the alert is logged, there is no one left to post it
        return alert

    # delivering ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver queued alerts to the webhook, one attempt each; run it in the task group."""
        async with self._receive:
            async for alert in self._receive:
                await self.deliver(alert)

    async def deliver(self, alert: Alert) -> bool:
        """POST one alert; never raises (a broken webhook must not break the supervisor)."""
        body = json.dumps(alert.payload(), default=str).encode()
        try:
            with anyio.fail_after(self.timeout + 1.0):
                await anyio.to_thread.run_sync(
                    self._post, self.webhook_url, body, self.timeout, abandon_on_cancel=True
                )
        except (OSError, TimeoutError, ValueError, urllib.error.URLError) as exc:
            self._webhook_failed(f"{type(exc).__name__}: {exc}")
            return False
        self.sent += 1
        if self.webhook_failing:
            self.webhook_failing = False
            self._log.info("alert_webhook_recovered", webhook=_safe_url(self.webhook_url))
        return True

    def _webhook_failed(self, error: str) -> None:
        if self.metrics is not None:
            self.metrics.webhook_failed()
        if not self.webhook_failing:
            self.webhook_failing = True
            self._log.warning(
                "alert_webhook_failed",
                webhook=_safe_url(self.webhook_url),
                error=self._redactor.scrub(error.replace(self.webhook_url, _safe_url(
                    self.webhook_url))),
            )

    def close(self) -> None:
        """Stop accepting alerts; :meth:`run` returns after delivering what is queued."""
        self._send.close()


@dataclass(frozen=True)
class MemoryReport:
    """What one memory check found."""

    rss_bytes: int
    ceiling_bytes: int
    sizes: dict[str, int]

    @property
    def over_ceiling(self) -> bool:
        return self.rss_bytes > self.ceiling_bytes


def check_memory(
    metrics: Metrics,
    policy: Policy,
    sizes: Mapping[str, int] | None = None,
    capacities: Mapping[str, int] | None = None,
    *,
    rss: int | None = None,
) -> MemoryReport:
    """Record RSS and bounded-structure sizes; warn when RSS passes ``alerts.rss_ceiling_mb``.

    Call it from the runtime's periodic health check. The warning goes through the logging rate
    limiter (same event name every time), so a process that stays above the ceiling logs it once
    per ``logging.warn_interval`` with a ``suppressed`` count.
    """
    current = rss_bytes() if rss is None else rss
    sizes = dict(sizes or {})
    capacities = capacities or {}
    metrics.set_rss(current)
    for name, size in sizes.items():
        metrics.set_bounded_size(name, size, capacities.get(name))
    report = MemoryReport(current, policy.alerts.rss_ceiling_mb * 1024 * 1024, sizes)
    if report.over_ceiling:
        get_logger("xmtp_supervisor.memory").warning(
            "rss_above_ceiling",
            rss_mb=round(current / 1048576, 1),
            ceiling_mb=policy.alerts.rss_ceiling_mb,
            sizes=sizes,
        )
    return report

