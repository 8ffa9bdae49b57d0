"""The operations layer wired to the real state-machine core as docs/operations.md says, driven
through a demo-shaped incident: secrets in the environment and in messages, /metrics and /readyz
read over real HTTP as the state moves, sd_notify on a real socket, the breaker alert."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest
from sd_socket import pending

from fsm.core import SupervisorCore
from fsm.policy import Policy
from fsm.table import Event, State
from fsm.translog import read_log, replay
from xmtp_supervisor.alerts import Alerter, check_memory
from xmtp_supervisor.http_endpoint import LoopHeartbeat, serve
from xmtp_supervisor.logs import get_logger, log_transition
from xmtp_supervisor.metrics import Metrics
from xmtp_supervisor.sdnotify import SystemdNotifier
from xmtp_supervisor.status import SupervisorView, TransitionHistory

TEXTS = ["the launch code is 0000", "dinner at eight?", "my recovery words are apple banana"]


class CoreView:
    """What the runtime's view could look like: the core plus a few timestamps."""

    def __init__(self, core: SupervisorCore, history: TransitionHistory) -> None:
        self.core = core
        self.history = history
        self.started_at = self.state_since = time.monotonic()
        self.state_reason = "starting"
        self.counts: dict[str, int] = {"messages_received": 0, "messages_handled": 0}

    @property
    def state(self) -> str:
        return self.core.state.value

    @property
    def restarts_in_window(self) -> int:
        return self.core.restarts_in_window()

    @property
    def counters(self) -> Mapping[str, int]:
        return self.counts

    def recent_transitions(self, n: int) -> list[dict[str, Any]]:
        return self.history.recent(n)


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _metric(text: str, line_prefix: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_prefix} not in /metrics")


@pytest.mark.anyio
async def test_demo_shaped_incident(
    make_logs: Any, notify_socket: socket.socket, tmp_path: Path
) -> None:
    policy = Policy.from_mapping({"http": {"port": 0}})
    translog = tmp_path / "transitions.jsonl"
    cap = make_logs(policy, str(translog))
    metrics = Metrics([s.value for s in State])
    notifier = SystemdNotifier()
    alerter = Alerter(policy, metrics)
    history = TransitionHistory()
    hot = get_logger("xmtp_supervisor.hot_path")
    view: CoreView

    def on_record(record: dict[str, Any]) -> None:
        changed = record["source"] != record["dest"] or record["event"] == "start"
        log_transition(record)
        metrics.observe_record(record)
        alerter.observe_record(record)
        history(record)
        if changed and "ignored" not in record["data"]:
            view.state_since = time.monotonic()
            view.state_reason = record["event"]
            notifier.on_state(record["dest"], record["event"])

    core = SupervisorCore(policy, seed=3, record=on_record)
    view = CoreView(core, history)
    assert isinstance(view, SupervisorView)
    heartbeat = LoopHeartbeat(interval=0.05)

    async with anyio.create_task_group() as tg:
        tg.start_soon(heartbeat.run)
        tg.start_soon(alerter.run)
        port = await tg.start(serve, view, metrics, policy, heartbeat)

        async def get(path: str) -> tuple[int, bytes]:
            return await anyio.to_thread.run_sync(_get, port, path)

        core.start(0.0)
        assert (await get("/readyz"))[0] == 503
        core.feed(Event.STREAM_OPENED, 1.0)
        metrics.rpc("open_stream")
        assert (await get("/readyz"))[0] == 200

        for i, text in enumerate(TEXTS):
            metrics.message_received()
            view.counts["messages_received"] += 1
            hot.info("message_received", message_id=f"{i:064x}", text=text,
                     sender_key=cap.wallet_key)
            hot.debug("decoded", content=text)
            metrics.message_handled(0.01)
            view.counts["messages_handled"] += 1
        metrics.message_received()
        metrics.message_deduplicated()
        check_memory(metrics, policy, {"dedup": 3, "history": len(history)},
                     {"dedup": policy.dedup.max_ids, "history": history.maxlen})

        status, body = await get("/metrics")
        before = body.decode()
        assert _metric(before, 'xmtp_supervisor_state{state="streaming"}') == 1
        assert _metric(before, "xmtp_supervisor_messages_received_total") == 4
        assert _metric(before, "xmtp_supervisor_messages_deduplicated_total") == 1

        # the injected faults: the stream keeps failing until the breaker opens
        at = 1.0
        while core.state is not State.BACKOFF:
            at += 30.0
            if core.state is State.STREAMING:
                metrics.rpc("open_stream", ok=False)
                alerter.record_failure(f"stream error (db key {cap.db_key})", state="streaming")
                core.feed(Event.STREAM_ERROR, at, {"error": f"reset by peer {cap.db_key}"})
            else:
                core.feed(Event.STREAM_OPENED, at)
        status, body = await get("/readyz")
        assert status == 503 and json.loads(body)["state"] == "backoff"
        after = (await get("/metrics"))[1].decode()
        assert _metric(after, 'xmtp_supervisor_state{state="backoff"}') == 1
        assert _metric(after, 'xmtp_supervisor_state{state="streaming"}') == 0
        assert _metric(after, "xmtp_supervisor_restarts_in_window") == 3
        assert _metric(
            after, 'xmtp_supervisor_transitions_total{dest="restarting",source="streaming"}'
        ) == 3
        assert _metric(after, 'xmtp_supervisor_alerts_total{reason="breaker_open"}') == 1

        core.feed(Event.BACKOFF_ELAPSED, at + 60.0)
        assert core.state is State.POLLING
        status, body = await get("/readyz")
        assert status == 200 and json.loads(body)["state"] == "polling"
        status, body = await get("/status?n=100")
        data = json.loads(body)
        assert data["state"] == "polling" and data["restarts_in_window"] == 3
        assert [t["dest"] for t in data["transitions"]][:2] == ["starting", "streaming"]

        notifier.stopping("shutting down")
        alerter.close()
        tg.cancel_scope.cancel()

    datagrams = [d.decode() for d in pending(notify_socket)]
    assert sum("READY=1" in d for d in datagrams) == 1
    assert datagrams[-1].startswith("STOPPING=1")
    assert any(d.startswith("STATUS=backoff") for d in datagrams)

    everything = cap.text + translog.read_text() + "".join(datagrams)
    for secret in (cap.wallet_key, cap.wallet_key[2:], cap.db_key):
        assert secret.lower() not in everything.lower()
    for text in TEXTS:
        assert text not in everything
    assert len([line for line in cap.lines() if '"event":"alert"' in line.replace(" ", "")]) == 1
    assert replay(list(read_log(translog))).ok
