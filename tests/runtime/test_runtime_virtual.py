"""The runtime in virtual time against an in-memory network: hours of timers in milliseconds.

Unit tests of the runtime's wiring (one scheduler, one queue, scopes per state); the same
behaviours against the real libxmtp client and the devnode are in test_runtime_node.py.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from fake_network import FakeNetwork

from fsm.policy import Policy
from fsm.table import Event, State
from handlers.builtin import default_router
from handlers.effects import open_stream
from xmtp_supervisor.runtime import Supervisor, VirtualClock
from xmtp_supervisor.service import build_service
from xmtp_supervisor.store import Store

pytestmark = pytest.mark.anyio


@dataclass
class Rig:
    sup: Supervisor
    net: FakeNetwork
    clock: VirtualClock
    exit_code: list[int]

    async def advance(self, seconds: float, step: float = 30.0) -> None:
        remaining = seconds
        while remaining > 0:
            dt = min(step, remaining)
            await self.clock.advance(dt)
            remaining -= dt

    def say(self, conversation: str, text: str) -> None:
        self.net.deliver(conversation, text, time.time_ns())


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    net = FakeNetwork()
    store = Store(tmp_path / "agent.db", durability="per-message")
    clock = VirtualClock()
    sup = Supervisor(Policy(), net, store, default_router(), clock=clock, seed=1,
                     handle_signals=False)
    sup.missed_grace_ns = 0
    exit_code: list[int] = []
    async with anyio.create_task_group() as tg:

        async def main() -> None:
            exit_code.append(await sup.run())

        tg.start_soon(main)
        await clock.advance(0)
        yield Rig(sup, net, clock, exit_code)
        if not exit_code:
            sup.request_shutdown()
            for _ in range(20):
                await clock.advance(1)
                if exit_code:
                    break
        tg.cancel_scope.cancel()
    store.close()


async def test_opens_stream_echoes_and_shuts_down_cleanly(rig: Rig) -> None:
    assert rig.sup.state == State.STREAMING.value
    rig.say("c1", "hello")
    await rig.advance(1)
    assert rig.net.sent == [("c1", "hello")]
    rig.sup.request_shutdown()
    await rig.advance(2)
    assert rig.exit_code == [0]
    assert rig.sup.state == State.STOPPED.value


async def test_status_transitions_are_the_last_n_and_none_for_zero(rig: Rig) -> None:
    assert [t["dest"] for t in rig.sup.recent_transitions(5)] == ["starting", "streaming"]
    assert rig.sup.recent_transitions(1)[0]["dest"] == "streaming"
    assert rig.sup.recent_transitions(0) == []  # /status?n=0 (it returned every one)
    assert rig.sup.state_reason == "stream_opened"


async def test_timers_fire_on_schedule_across_virtual_hours(rig: Rig) -> None:
    await rig.advance(3 * 3600)
    syncs = rig.net.calls.get("sync", 0)
    # one catch-up after opening, one periodic sync every 5 min, one probe per 30-min stall
    assert 36 <= syncs <= 36 + 1 + 6
    assert rig.net.calls["open_stream"] == 1  # quiet is not dead: never restarted
    assert rig.sup.core.restart_times == []


async def test_stream_error_restarts_and_catches_up_what_was_missed(rig: Rig) -> None:
    rig.net.kill_streams()
    rig.say("c1", "sent while the stream was dead")  # no stream: only the network has it
    await rig.advance(1)
    assert rig.sup.state == State.STREAMING.value
    assert rig.net.calls["open_stream"] == 2
    assert ("c1", "sent while the stream was dead") in rig.net.sent


async def test_reopened_stream_waits_for_catch_up_so_order_holds(rig: Rig) -> None:
    """The fresh stream delivers a newer message at once; the one sent while no stream listened
    still reaches the handler first (chaos: stream-ends-normally once saw [.., 7, 5, ..])."""
    rig.say("c1", "first")  # a known conversation, so only the reconnect's catch-up fetches
    await rig.advance(1)
    rig.net.kill_streams(error=None)  # ended normally: a failure all the same
    rig.say("c1", "gap")
    rig.net.on_open = lambda: rig.say("c1", "after")
    await rig.advance(1)
    assert rig.sup.state == State.STREAMING.value
    assert [t for c, t in rig.net.sent if c == "c1"] == ["first", "gap", "after"]
    assert rig.sup.held_inbound() is None


async def test_a_stuck_catch_up_releases_the_stream_after_the_probe_timeout(rig: Rig) -> None:
    rig.say("c1", "first")
    await rig.advance(1)
    rig.net.fetch_blocked = anyio.Event()  # reads hang; the stream still works
    rig.net.kill_streams()
    await rig.advance(1)
    assert rig.sup.state == State.STREAMING.value and rig.sup.held_inbound() is not None
    rig.say("c1", "live")
    await rig.advance(30)
    assert ("c1", "live") not in rig.net.sent  # still waiting for the catch-up
    await rig.advance(31)  # probe_timeout (60 s) after the hold began
    assert ("c1", "live") in rig.net.sent
    assert rig.sup.held_inbound() is None
    rig.net.fetch_blocked.set()


async def test_a_failed_open_releases_the_hold(rig: Rig) -> None:
    rig.net.down = True
    outcome = await open_stream.run(rig.sup)
    assert outcome[0] is Event.STREAM_OPEN_FAILED
    assert rig.sup.held_inbound() is None  # nothing waits for a catch-up that never comes


async def test_history_from_before_the_first_start_is_never_replayed(rig: Rig) -> None:
    """A conversation whose history predates the agent: its first catch-up starts at the first
    start, and neither the lookback window of later catch-ups nor the first live message of
    the conversation reaches back into that history."""
    first_start = rig.sup.read_from("c2")
    rig.net.kill_streams()
    rig.net.deliver("c2", "history", first_start - 60 * 10**9)
    rig.say("c2", "new")
    await rig.advance(1)  # reconnect: the catch-up finds c2
    rig.say("c2", "live")  # the stream shows c2 for the first time: its own catch-up runs
    await rig.advance(1)
    rig.net.kill_streams()
    await rig.advance(1)  # another catch-up over the lookback window behind c2's cursor
    assert [t for c, t in rig.net.sent if c == "c2"] == ["new", "live"]
    assert rig.sup.read_from("c2") == first_start  # the window is clamped, not shifted


async def test_silent_stream_is_caught_by_the_next_sync(rig: Rig) -> None:
    for stream in rig.net.streams:
        stream.silent = True
    rig.say("c1", "into the void")
    await rig.advance(301)  # one sync interval
    assert len(rig.sup.core.restart_times) == 1
    assert rig.net.sent.count(("c1", "into the void")) == 1


async def test_cannot_open_degrades_to_polling_and_still_handles_messages(rig: Rig) -> None:
    rig.net.down = True
    rig.net.kill_streams()
    await rig.advance(120)
    assert rig.sup.state in (State.POLLING.value, State.BACKOFF.value)
    await rig.advance(300)
    assert rig.sup.state == State.POLLING.value
    rig.net.down = False
    rig.say("c2", "while polling")
    await rig.advance(121)
    assert ("c2", "while polling") in rig.net.sent
    await rig.advance(600)  # stream retry timer, through the breaker
    assert rig.sup.state == State.STREAMING.value


async def test_breaker_holds_when_the_stream_dies_every_ten_minutes(rig: Rig) -> None:
    for _ in range(12):
        await rig.advance(600)
        rig.net.kill_streams()
    await rig.advance(1)
    times = rig.sup.core.restart_times
    assert times
    for i, t in enumerate(times):
        assert sum(1 for u in times[i:] if u < t + 3600) <= 3


async def test_status_command_reports_state(rig: Rig) -> None:
    rig.say("c1", "/status")
    await rig.advance(1)
    reply = rig.net.sent[-1][1]
    assert "streaming" in reply


async def test_every_timer_is_cancelled_when_its_state_is_left(rig: Rig) -> None:
    armed_streaming = rig.sup._scheduler.armed
    assert armed_streaming == 4  # sync, health, activity, healthy_period
    rig.sup.request_shutdown()
    await rig.advance(2)
    assert rig.sup._scheduler.armed == 0


async def test_service_metrics_time_every_handled_message(tmp_path: Path) -> None:
    """build_service wires the handler-latency histogram into the message path."""
    net = FakeNetwork()
    store = Store(tmp_path / "agent.db", durability="per-message")
    clock = VirtualClock()
    policy = Policy.from_mapping({"http": {"enabled": False}})
    service = build_service(policy, net, store, default_router(), clock=clock,
                            handle_signals=False, seed=1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(service.run)
        await clock.advance(0)
        net.deliver("c1", "hello", time.time_ns())
        net.deliver("c1", "again", time.time_ns())
        await clock.advance(1)
        assert net.sent == [("c1", "hello"), ("c1", "again")]
        service.supervisor.request_shutdown()
        await clock.advance(5)
        tg.cancel_scope.cancel()
    store.close()
    count = service.metrics.registry.get_sample_value(
        "xmtp_supervisor_handler_latency_seconds_count")
    assert count == 2

