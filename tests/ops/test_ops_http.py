"""The operations endpoint over real HTTP on loopback, against a fake SupervisorView."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

from fsm.policy import Policy
from xmtp_supervisor.http_endpoint import LoopHeartbeat, serve
from xmtp_supervisor.metrics import Metrics
from xmtp_supervisor.status import SupervisorView

POLICY = Policy.from_mapping({"http": {"port": 0}})


@dataclass
class FakeView:
    state: str = "connecting"
    state_reason: str = "opening the stream"
    state_since: float = field(default_factory=time.monotonic)
    started_at: float = field(default_factory=lambda: time.monotonic() - 60)
    restarts_in_window: int = 1
    counters: Mapping[str, int] = field(
        default_factory=lambda: {"messages_received": 3, "messages_handled": 2}
    )
    transitions: list[dict[str, Any]] = field(default_factory=list)

    def recent_transitions(self, n: int) -> list[dict[str, Any]]:
        return self.transitions[-n:] if n else []


def _get(port: int, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


async def get(port: int, path: str) -> tuple[int, str, bytes]:
    return await anyio.to_thread.run_sync(_get, port, path)


async def raw(port: int, request: bytes) -> bytes:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(request)
        data = b""
        try:
            while True:
                data += await stream.receive()
        except anyio.EndOfStream:
            pass
    return data


def test_fake_view_satisfies_protocol() -> None:
    assert isinstance(FakeView(), SupervisorView)


@pytest.mark.anyio
async def test_endpoints_over_http() -> None:
    view = FakeView()
    metrics = Metrics(["idle", "connecting", "streaming", "polling"])
    metrics.set_state("connecting")
    heartbeat = LoopHeartbeat(interval=0.05)
    async with anyio.create_task_group() as tg:
        tg.start_soon(heartbeat.run)
        port = await tg.start(serve, view, metrics, POLICY, heartbeat)
        assert isinstance(port, int) and port > 0

        status, ctype, body = await get(port, "/healthz")
        assert status == 200 and ctype == "application/json"
        assert json.loads(body)["healthy"] is True

        status, _, body = await get(port, "/readyz")
        assert status == 503
        ready = json.loads(body)
        assert ready == {**ready, "ready": False, "state": "connecting",
                         "reason": "opening the stream"}

        view.state, view.state_reason = "streaming", "stream open"
        metrics.record_transition("connecting", "streaming")
        metrics.message_received(3)
        metrics.message_handled(0.02)
        metrics.rpc("open_stream")
        status, _, body = await get(port, "/readyz")
        assert status == 200 and json.loads(body)["state"] == "streaming"
        view.state = "polling"
        assert (await get(port, "/readyz"))[0] == 200

        status, ctype, body = await get(port, "/metrics")
        text = body.decode()
        assert status == 200 and ctype.startswith("text/plain")
        assert 'xmtp_supervisor_state{state="streaming"} 1.0' in text
        assert 'xmtp_supervisor_state{state="connecting"} 0.0' in text
        assert 'xmtp_supervisor_transitions_total{dest="streaming",source="connecting"} 1.0' in text
        assert "xmtp_supervisor_messages_received_total 3.0" in text
        assert 'xmtp_supervisor_rpcs_total{kind="open_stream",outcome="ok"} 1.0' in text
        assert "xmtp_supervisor_handler_latency_seconds_count 1.0" in text

        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_status_json_redacts_and_limits(secret_env: tuple[str, str]) -> None:
    wallet, _ = secret_env
    view = FakeView(state="streaming")
    view.transitions = [
        {"source": "a", "dest": "b", "trigger": f"t{i}", "reason": f"key {wallet}"}
        for i in range(30)
    ]
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve, view, Metrics(), POLICY)
        status, ctype, body = await get(port, "/status")
        assert status == 200 and ctype == "application/json"
        data = json.loads(body)
        assert data["state"] == "streaming" and data["ready"] is True
        assert data["restarts_in_window"] == 1
        assert data["counters"] == {"messages_received": 3, "messages_handled": 2}
        assert data["uptime_seconds"] >= 59
        assert len(data["transitions"]) == 20
        assert data["transitions"][-1]["trigger"] == "t29"
        assert wallet[2:].lower() not in body.decode().lower()
        data = json.loads((await get(port, "/status?n=3"))[2])
        assert [t["trigger"] for t in data["transitions"]] == ["t27", "t28", "t29"]
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_healthz_503_when_heartbeat_is_stale() -> None:
    now = [100.0]
    heartbeat = LoopHeartbeat(interval=1.0, stale_after=10.0, clock=lambda: now[0])
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve, FakeView(), Metrics(), POLICY, heartbeat)
        assert (await get(port, "/healthz"))[0] == 200
        now[0] += 30.0  # the loop did not beat for 30 s
        status, _, body = await get(port, "/healthz")
        assert status == 503
        assert json.loads(body)["healthy"] is False
        heartbeat.beat()
        assert (await get(port, "/healthz"))[0] == 200
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_bad_requests_do_not_break_the_server() -> None:
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve, FakeView(), Metrics(), POLICY)
        assert (await get(port, "/nope"))[0] == 404
        assert (await raw(port, b"POST /healthz HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(
            b"HTTP/1.1 405 "
        )
        assert (await raw(port, b"garbage\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
        assert (await raw(port, b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 2000)).startswith(
            b"HTTP/1.1 431 "
        )
        head = await raw(port, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
        async with await anyio.connect_tcp("127.0.0.1", port):
            pass  # connect and hang up without a request
        assert (await get(port, "/healthz"))[0] == 200
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_broken_view_gives_500_not_a_crash(logs: Any) -> None:
    class Broken(FakeView):
        def recent_transitions(self, n: int) -> list[dict[str, Any]]:
            raise RuntimeError("boom")

    async with anyio.create_task_group() as tg:
        port = await tg.start(serve, Broken(), Metrics(), POLICY)
        assert (await get(port, "/status"))[0] == 500
        assert (await get(port, "/healthz"))[0] == 200
        tg.cancel_scope.cancel()
    assert "http_handler_failed" in logs.text


@pytest.mark.anyio
async def test_disabled_endpoint_starts_nothing() -> None:
    policy = Policy.from_mapping({"http": {"enabled": False}})
    async with anyio.create_task_group() as tg:
        assert await tg.start(serve, FakeView(), Metrics(), policy) is None
