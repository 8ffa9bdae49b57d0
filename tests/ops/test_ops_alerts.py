"""Alerts: one alert per episode, webhook POST to a real loopback server, failures logged once;
the memory check."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import pytest

from fsm.policy import Policy
from xmtp_supervisor.alerts import Alerter, check_memory
from xmtp_supervisor.metrics import Metrics


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]
    status = 200

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        body = json.loads(self.rfile.read(length))
        type(self).received.append({"body": body, "ctype": self.headers["Content-Type"]})
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A real HTTP server on loopback recording the JSON bodies posted to it."""
    handler = type("Hook", (_Hook,), {"received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        received: list[dict[str, Any]] = handler.received  # type: ignore[attr-defined]
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/secret-token", received
    finally:
        server.shutdown()
        server.server_close()


def _policy(url: str = "", n: int = 3) -> Policy:
    return Policy.from_mapping(
        {"alerts": {"consecutive_failures": n, "webhook_url": url, "webhook_timeout": "2s"}}
    )


def _events(logs: Any, name: str) -> list[dict[str, Any]]:
    return [e for e in map(json.loads, logs.lines()) if e["event"] == name]


@pytest.mark.anyio
async def test_consecutive_failures_alert_once_and_post(
    logs: Any, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = webhook
    metrics = Metrics()
    alerter = Alerter(_policy(url), metrics)
    async with anyio.create_task_group() as tg:
        tg.start_soon(alerter.run)
        fired = [alerter.record_failure(f"sync failed with {logs.db_key}", state="backoff")
                 for _ in range(7)]
        assert [a is not None for a in fired] == [False, False, True, False, False, False, False]
        alerter.record_success()
        for _ in range(3):
            alerter.record_failure("stream closed")
        alerter.breaker_opened(3, "3 restarts in 1h", state="cooldown")
        alerter.close()
    assert alerter.sent == 3
    assert [r["body"]["reason"] for r in received] == [
        "consecutive_failures", "consecutive_failures", "breaker_open",
    ]
    first = received[0]
    assert first["ctype"] == "application/json"
    assert first["body"]["consecutive_failures"] == 3 and first["body"]["state"] == "backoff"
    assert logs.db_key not in json.dumps(received)
    alerts = _events(logs, "alert")
    assert len(alerts) == 3 and alerts[0]["level"] == "error"
    assert alerts[2]["restarts_in_window"] == 3
    text = metrics.render().decode()
    assert 'xmtp_supervisor_alerts_total{reason="consecutive_failures"} 2.0' in text
    assert "xmtp_supervisor_consecutive_failures 3.0" in text


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.anyio
async def test_failing_webhook_is_logged_once(
    logs: Any, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    dead = f"http://127.0.0.1:{_closed_port()}/hooks/secret-token"
    metrics = Metrics()
    alerter = Alerter(_policy(dead, n=1), metrics)
    async with anyio.create_task_group() as tg:
        tg.start_soon(alerter.run)
        for _ in range(4):
            alerter.record_failure("down")
            alerter.record_success()
        alerter.close()
    failed = _events(logs, "alert_webhook_failed")
    assert len(failed) == 1
    assert "secret-token" not in logs.text  # the URL's path (often a token) is not logged
    assert "xmtp_supervisor_alert_webhook_failures_total 4.0" in metrics.render().decode()
    assert len(_events(logs, "alert")) == 4  # the alert itself is always logged

    # the webhook comes back: one recovery line, and a later failure is logged again
    url, received = webhook
    alerter.webhook_url = url
    alert = alerter.breaker_opened(3)
    assert await alerter.deliver(alert)
    assert len(received) == 1 and len(_events(logs, "alert_webhook_recovered")) == 1
    alerter.webhook_url = dead
    assert not await alerter.deliver(alert)
    assert len(_events(logs, "alert_webhook_failed")) == 2


@pytest.mark.anyio
async def test_webhook_error_status_counts_as_failure(
    logs: Any, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, _ = webhook
    alerter = Alerter(_policy(url))
    alert = alerter.breaker_opened(3)
    alerter.webhook_url = url.replace("/hooks/", "/")  # still served: 200
    assert await alerter.deliver(alert)

    def refuse(url: str, body: bytes, timeout: float) -> None:
        raise OSError("HTTP Error 500")

    failing = Alerter(_policy(url), post=refuse)
    assert not await failing.deliver(alert)
    assert len(_events(logs, "alert_webhook_failed")) == 1


def test_no_webhook_no_queue(logs: Any) -> None:
    alerter = Alerter(_policy("", n=1))
    for _ in range(50):  # nothing is queued, so nothing can fill up
        alerter.record_failure("x")
        alerter.record_success()
    assert len(_events(logs, "alert")) == 50
    assert _events(logs, "alert_webhook_failed") == []


def test_webhook_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="webhook_url"):
        Alerter(_policy("file:///etc/passwd"))


def test_memory_check_records_and_warns_rate_limited(logs: Any) -> None:
    metrics = Metrics()
    policy = Policy.from_mapping({"alerts": {"rss_ceiling_mb": 100}})
    report = check_memory(metrics, policy, {"dedup": 250, "outbox": 3}, {"dedup": 500},
                          rss=50 * 1024 * 1024)
    assert not report.over_ceiling
    for _ in range(3):
        report = check_memory(metrics, policy, {"dedup": 260}, rss=200 * 1024 * 1024)
    assert report.over_ceiling
    logs.clock.advance(policy.logging.warn_interval + 1)
    check_memory(metrics, policy, rss=201 * 1024 * 1024)
    warnings = _events(logs, "rss_above_ceiling")
    assert [w.get("suppressed") for w in warnings] == [None, 2]
    assert warnings[0]["rss_mb"] == 200.0 and warnings[0]["ceiling_mb"] == 100
    text = metrics.render().decode()
    assert "xmtp_supervisor_process_rss_bytes 2.10763776e+08" in text
    assert 'xmtp_supervisor_bounded_structure_size{structure="dedup"} 260.0' in text
    assert 'xmtp_supervisor_bounded_structure_capacity{structure="dedup"} 500.0' in text


def test_memory_check_reads_real_rss(logs: Any) -> None:
    report = check_memory(Metrics(), Policy())
    assert report.rss_bytes > 1024 * 1024


def test_breaker_open_detected_from_core_records(logs: Any) -> None:
    alerter = Alerter(_policy())  # breaker.max_restarts = 3

    def rec(event: str, dest: str, restarts: int, **data: Any) -> dict[str, Any]:
        return {"seq": 0, "at": 0.0, "event": event, "source": "x", "dest": dest,
                "data": {"restarts_in_window": restarts, **data}}

    assert alerter.observe_record(rec("stream_error", "restarting", 2)) is None
    assert alerter.observe_record(rec("stream_error", "restarting", 3)) is None
    assert alerter.observe_record(rec("stream_opened", "streaming", 3)) is None
    alert = alerter.observe_record(rec("stream_error", "backoff", 3))
    assert alert is not None and alert.reason == "breaker_open"
    assert alerter.observe_record(rec("backoff_elapsed", "backoff", 3)) is None  # still open
    assert alerter.observe_record(rec("poll_due", "backoff", 3, ignored="no_row")) is None
    assert alerter.observe_record(rec("healthy_period", "streaming", 1)) is None  # re-armed
    assert alerter.observe_record(rec("stream_error", "backoff", 3)) is not None
    assert len(_events(logs, "alert")) == 2
