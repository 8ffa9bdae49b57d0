"""The operations endpoint: ``/healthz``, ``/readyz``, ``/metrics``, ``/status`` over HTTP/1.1.

A deliberately small server on anyio: it runs in the supervisor's own task group and event loop (no
threads), so a blocked loop shows up as a failing liveness probe, which is the point. One request
per connection, ``Connection: close``, bounded header size and read time, a bounded number of
concurrent connections; any error in a connection stays in that connection.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

from fsm.policy import Policy
from xmtp_supervisor.logs import Redactor, get_logger, make_redactor
from xmtp_supervisor.metrics import CONTENT_TYPE, Metrics
from xmtp_supervisor.status import READY_STATES, SupervisorView

MAX_HEADER_BYTES = 8192
READ_TIMEOUT = 5.0
MAX_CONNECTIONS = 16
STATUS_TRANSITIONS = 20
"""Transitions in ``/status`` by default; ``?n=`` asks for up to :data:`MAX_STATUS_TRANSITIONS`."""
MAX_STATUS_TRANSITIONS = 200

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class LoopHeartbeat:
    """Measures event-loop responsiveness: a task that sleeps ``interval`` and records how late
    it woke up.

    ``healthy()`` is false when the last beat is older than ``stale_after``: the loop was blocked
    (or the heartbeat task died). Both ``/healthz`` and the systemd watchdog use it.
    """

    def __init__(
        self,
        interval: float = 1.0,
        stale_after: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.stale_after = stale_after
        self.clock = clock
        self.last_beat = clock()
        self.lag = 0.0

    def beat(self, lag: float = 0.0) -> None:
        """Record a beat now, with the measured lag."""
        self.last_beat = self.clock()
        self.lag = max(0.0, lag)

    def age(self) -> float:
        """Seconds since the last beat."""
        return max(0.0, self.clock() - self.last_beat)

    def healthy(self) -> bool:
        """True while the loop keeps beating."""
        return self.age() <= self.stale_after

    async def run(self) -> None:
        """Beat forever; run it in the supervisor's task group."""
        while True:
            before = self.clock()
            await anyio.sleep(self.interval)
            self.beat(self.clock() - before - self.interval)


class _BadRequest(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class OpsServer:
    """Request routing and rendering, separate from the socket loop so it can be unit-tested."""

    def __init__(
        self,
        view: SupervisorView,
        metrics: Metrics,
        policy: Policy,
        heartbeat: LoopHeartbeat,
        *,
        redactor: Redactor | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.view = view
        self.metrics = metrics
        self.policy = policy
        self.heartbeat = heartbeat
        self.redactor = redactor or make_redactor(policy)
        self.clock = clock
        self.wall_clock = wall_clock

    def handle(self, method: str, target: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for one request."""
        if method not in ("GET", "HEAD"):
            return _json(405, {"error": "method not allowed"})
        url = urlsplit(target)
        if url.path == "/healthz":
            return self.healthz()
        if url.path == "/readyz":
            return self.readyz()
        if url.path == "/metrics":
            self.metrics.set_loop_lag(self.heartbeat.lag)
            return 200, CONTENT_TYPE, self.metrics.render()
        if url.path == "/status":
            return self.status(_query_int(url.query, "n", STATUS_TRANSITIONS))
        return _json(404, {"error": "not found", "paths": ["/healthz", "/readyz", "/metrics",
                                                           "/status"]})

    def healthz(self) -> tuple[int, str, bytes]:
        healthy = self.heartbeat.healthy()
        body = {
            "healthy": healthy,
            "heartbeat_age_seconds": round(self.heartbeat.age(), 3),
            "stale_after_seconds": self.heartbeat.stale_after,
            "loop_lag_seconds": round(self.heartbeat.lag, 3),
        }
        return _json(200 if healthy else 503, body)

    def readyz(self) -> tuple[int, str, bytes]:
        state = self.view.state
        ready = state in READY_STATES
        body = {
            "ready": ready,
            "state": state,
            "reason": self.redactor.value(self.view.state_reason, "reason"),
            "state_seconds": round(max(0.0, self.clock() - self.view.state_since), 3),
        }
        return _json(200 if ready else 503, body)

    def status(self, n: int) -> tuple[int, str, bytes]:
        view = self.view
        now = self.clock()
        wall = self.wall_clock()
        n = max(0, min(n, MAX_STATUS_TRANSITIONS))
        body = {
            "state": view.state,
            "reason": self.redactor.value(view.state_reason, "reason"),
            "ready": view.state in READY_STATES,
            "since": _iso(wall - (now - view.state_since)),
            "state_seconds": round(max(0.0, now - view.state_since), 3),
            "started_at": _iso(wall - (now - view.started_at)),
            "uptime_seconds": round(max(0.0, now - view.started_at), 3),
            "restarts_in_window": view.restarts_in_window,
            "breaker_window_seconds": self.policy.breaker.window,
            "max_restarts": self.policy.breaker.max_restarts,
            "counters": dict(view.counters),
            "loop": {
                "healthy": self.heartbeat.healthy(),
                "lag_seconds": round(self.heartbeat.lag, 3),
            },
            "transitions": [self.redactor.mapping(t) for t in view.recent_transitions(n)],
        }
        return _json(200, body)


def _query_int(query: str, name: str, default: int) -> int:
    values = parse_qs(query).get(name)
    if not values:
        return default
    try:
        return int(values[0])
    except ValueError:
        return default


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def _json(status: int, body: Any) -> tuple[int, str, bytes]:
    text = json.dumps(body, default=str, allow_nan=False, separators=(",", ":"))
    return status, "application/json", text.encode() + b"\n"


async def _read_head(stream: anyio.abc.ByteStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEADER_BYTES:
            raise _BadRequest(431)
        chunk = await stream.receive(4096)
        data += chunk
    return data.split(b"\r\n\r\n", 1)[0]


def _parse_request_line(head: bytes) -> tuple[str, str]:
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise _BadRequest(400)
    try:
        return parts[0].decode("ascii"), parts[1].decode("ascii")
    except UnicodeDecodeError:
        raise _BadRequest(400) from None


def _response(status: int, content_type: str, body: bytes, *, head_only: bool) -> bytes:
    headers = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    return headers.encode("ascii") + (b"" if head_only else body)


async def serve(
    view: SupervisorView,
    metrics: Metrics,
    policy: Policy,
    heartbeat: LoopHeartbeat | None = None,
    redactor: Redactor | None = None,
    *,
    task_status: anyio.abc.TaskStatus[int | None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the endpoint until cancelled: ``port = await tg.start(serve, view, metrics, policy,
    heartbeat)`` (positional, since ``TaskGroup.start`` passes no keyword arguments).

    ``task_status.started`` receives the bound port (useful with ``http.port = 0``), or ``None``
    when ``http.enabled`` is false, in which case this returns at once. Without a ``heartbeat``
    one is created and run here; pass the runtime's own so the watchdog and ``/healthz`` agree.
    """
    log = get_logger("xmtp_supervisor.http")
    if not policy.http.enabled:
        task_status.started(None)
        return
    listener = await anyio.create_tcp_listener(
        local_host=policy.http.host, local_port=policy.http.port
    )
    port = int(listener.extra(SocketAttribute.local_port))
    limiter = anyio.CapacityLimiter(MAX_CONNECTIONS)
    async with anyio.create_task_group() as tg:
        if heartbeat is None:
            heartbeat = LoopHeartbeat()
            tg.start_soon(heartbeat.run)
        app = OpsServer(view, metrics, policy, heartbeat, redactor=redactor)

        async def handle(stream: anyio.abc.SocketStream) -> None:
            async with limiter, stream:
                await _handle_connection(app, stream, log)

        log.info("http_listening", host=policy.http.host, port=port)
        task_status.started(port)
        async with listener:
            await listener.serve(handle)


async def _handle_connection(app: OpsServer, stream: anyio.abc.SocketStream, log: Any) -> None:
    """One request, one response; errors end this connection only."""
    head_only = False
    try:
        try:
            with anyio.fail_after(READ_TIMEOUT):
                head = await _read_head(stream)
            method, target = _parse_request_line(head)
            head_only = method == "HEAD"
            status, ctype, body = app.handle(method, target)
        except TimeoutError:
            status, ctype, body = _json(408, {"error": "request timeout"})
        except _BadRequest as exc:
            status, ctype, body = _json(exc.status, {"error": _REASONS[exc.status].lower()})
        except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
            return
        except Exception as exc:  # a bug in a view must not take the supervisor down
            log.error("http_handler_failed", error_type=type(exc).__name__, error=str(exc))
            status, ctype, body = _json(500, {"error": "internal error"})
        await stream.send(_response(status, ctype, body, head_only=head_only))
    except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError,
            ConnectionError):
        pass
