"""The chaos matrix (issue 6): named faults against the devnode with real libxmtp clients.

Each case sends numbered messages before, during and after its fault and ends in
:meth:`Rig.verify`: every message handled once and echoed once, per-conversation order kept,
restarts within the breaker's sliding window, bounded structures, the expected final state, and
a clean shutdown with exit code 0. Timers are scaled (``chaos_harness.SCALE``). Cases that need
a process of their own (signals, crash, config, DB key) are in ``test_chaos_process.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import grpc
import pytest
from chaos_harness import (
    DEDUP_MAX,
    RESULTS,
    SCALE,
    AgentProcess,
    CaseResult,
    Recorder,
    Rig,
    dm_when_ready,
    echo_counts,
    scaled_policy,
    supervised,
    until,
    wait_for_echoes,
)
from xmtp_bindings import xmtpv3

from devnode import DevNode
from fsm.policy import Policy
from fsm.simulate import load_scenario, simulate
from xmtp_supervisor import xmtp_compat

pytestmark = [pytest.mark.chaos, pytest.mark.anyio]

Case = Callable[[Rig], Awaitable[None]]


async def stream_error(rig: Rig) -> None:
    await rig.wait_handled(await rig.send(5))
    rig.node.faults.abort_streams(grpc.StatusCode.UNAVAILABLE)
    await rig.send(5)  # while the stream is down: catch-up must find these
    await rig.wait_state("streaming")
    await rig.send(5)
    await rig.verify(min_restarts=1)


async def stream_end(rig: Rig) -> None:
    await rig.wait_handled(await rig.send(5))
    rig.node.faults.end_streams()  # ends with OK: still a failure for the supervisor
    await rig.send(5)
    await rig.wait_state("streaming")
    await rig.send(5)
    await rig.verify(min_restarts=1)


async def silent_stream(rig: Rig) -> None:
    await rig.wait_handled(await rig.send(5))
    since = anyio.current_time()
    rig.node.faults.set_silent(True)
    marker = len(rig.states)
    # messages keep arriving; only a sync sees them; detection within 5 virtual minutes
    with anyio.move_on_after(5 * 60 / SCALE + 3):
        while len(rig.states) == marker or all(s == "streaming" for _, s in rig.states[marker:]):
            await rig.send(1)
            await anyio.sleep(0.3)
    detected = anyio.current_time() - since
    rig.node.faults.set_silent(False)
    assert any(s != "streaming" for _, s in rig.states[marker:]), "silent stream not detected"
    rig.result.notes = f"detected after {detected * SCALE:.0f} virtual s"
    await rig.wait_state("streaming")
    await rig.send(5)
    await rig.verify(min_restarts=1)


async def node_down(rig: Rig) -> None:
    await rig.settle(await rig.send(5))
    rig.node.stop()
    await anyio.sleep(5 * 60 / SCALE)  # 5 virtual minutes
    rig.node.start()
    # the peer's client cannot publish during the outage either: its "during" messages go out
    # as soon as the node is back, while the agent is still backing off or polling
    await rig.send(5)
    await rig.wait_state("streaming", 40)
    await rig.send(5)
    await rig.verify(min_restarts=1, timeout=40)


async def node_flapping(rig: Rig) -> None:
    await rig.settle(await rig.send(4))
    for _ in range(3):
        rig.node.stop()
        await anyio.sleep(1.0)
        rig.node.start()
        flap_started = anyio.current_time()
        await rig.settle(await rig.send(3))
        # every 10 virtual minutes
        await anyio.sleep(max(0.0, 10 * 60 / SCALE - (anyio.current_time() - flap_started)))
    await rig.wait_state("streaming", 40)
    await rig.send(4)
    await rig.verify(min_restarts=1, timeout=40)


async def _refused(rig: Rig, code: grpc.StatusCode) -> None:
    await rig.wait_handled(await rig.send(5))
    # the agent's syncs start with the welcome query: refuse it (the peer's sends do not use it)
    rig.node.faults.refuse(code, {"QueryWelcomeMessages"})
    await rig.send(3)
    rig.node.faults.abort_streams()  # and lose the stream while syncs are refused
    await rig.send(3)
    await anyio.sleep(3 * rig.policy.timers.sync_interval)
    failures = sum(v for k, v in rig.sup.rpc_counts.items() if k.endswith("_failed"))
    rig.node.faults.refuse(None)
    rig.result.notes = f"{failures} refused supervisor RPCs"
    assert failures >= 1
    await rig.wait_state("streaming", 40)
    await rig.send(5)
    await rig.verify(min_restarts=1, timeout=40)


async def sync_unavailable(rig: Rig) -> None:
    await _refused(rig, grpc.StatusCode.UNAVAILABLE)


async def rate_limited(rig: Rig) -> None:
    await _refused(rig, grpc.StatusCode.RESOURCE_EXHAUSTED)


async def handler_raises(rig: Rig) -> None:
    rig.rec.raise_on.update({2, 7, 8})
    await rig.send(10)
    await rig.verify(failed=3)


async def handler_hangs(rig: Rig) -> None:
    rig.rec.hang_on.add(3)
    await rig.send(10)  # 3 hangs; 5, 7, 9 share its conversation and wait for the timeout
    await rig.verify(timed_out=1)


BURST = int(os.environ.get("CHAOS_BURST", "1000"))
"""10 000 is the issue's figure; the peer's awaited sends run at ~80/s here (1000 take ~13 s),
so 10 000 would take minutes. ``CHAOS_BURST=3000`` (~100 s, 1500 per conversation inside the
lookback window) currently fails: messages handled 4-5 times; ``lookback-ids-evicted`` below
reproduces the cause in 2 s."""


async def burst(rig: Rig) -> None:
    started = anyio.current_time()
    await rig.send(BURST)
    sent_in = anyio.current_time() - started
    await rig.verify(timeout=120)
    rig.result.notes = (f"{BURST} sent in {sent_in:.1f} s, all handled+echoed after "
                        f"{anyio.current_time() - started:.1f} s")


async def burst_behind_catch_up(rig: Rig) -> None:
    """A slow agent with more queued messages than the dedup set holds, then a stream death:
    catch-up re-fetches messages that are still queued and whose ids were evicted."""
    rig.rec.delay = 0.03
    await rig.send(150)
    queued = rig.sup.path.backlog
    rig.result.notes = f"{queued} queued when the stream died (dedup holds {DEDUP_MAX})"
    assert queued > DEDUP_MAX, "precondition: the backlog must outgrow the dedup set"
    rig.node.faults.abort_streams()
    await rig.send(10)
    await rig.verify(min_restarts=1, timeout=60)


LOOKBACK_IDS = 20


async def lookback_ids_evicted(rig: Rig) -> None:
    """More handled messages inside the lookback window than ``store.lookback_max_ids``, then a
    stream death: catch-up re-reads the window. The production shape is a burst of > 1000 per
    conversation within 10 minutes (``CHAOS_BURST=3000`` shows it at the default bound)."""
    await rig.settle(await rig.send(4 * LOOKBACK_IDS))  # 40 per conversation, all in the window
    rig.node.faults.abort_streams()
    await rig.send(4)
    await rig.verify(min_restarts=1)


async def undecodable(rig: Rig) -> None:
    await rig.wait_handled(await rig.send(3))
    # bytes that are not an EncodedContent protobuf: the agent's decoder must fail on them
    await xmtp_compat.ffi_of(rig.conversations[0]).send(
        b"\xff\x00not-encoded-content", xmtpv3.FfiSendMessageOpts(should_push=True))
    await rig.send(3)
    await rig.verify(undecodable=1)


async def reply_while_down(rig: Rig) -> None:
    down = anyio.Event()
    rig.rec.slow[2] = down.wait  # message 2's handler replies only once the node is down
    await rig.send(3)
    await until(lambda: 2 in rig.rec.calls, 15, lambda: "message 2 not started")
    await rig.settle([0, 1])
    rig.node.stop()
    down.set()
    await anyio.sleep(3.0)  # the send fails (libxmtp leaves it unpublished) and is queued
    rig.node.start()
    await rig.wait_state("streaming", 40)
    await rig.send(3)
    await rig.verify(min_restarts=1, timeout=40)


CASES: dict[str, tuple[Case, dict[str, dict[str, object]] | None]] = {
    "stream-error": (stream_error, None),
    "stream-ends-normally": (stream_end, None),
    "silent-stream": (silent_stream, None),
    "node-down-5vmin": (node_down, None),
    "node-flapping-3x": (node_flapping, None),
    "sync-refused-unavailable": (sync_unavailable, None),
    "rate-limited-resource-exhausted": (rate_limited, None),
    "handler-raises": (handler_raises, None),
    "handler-hangs": (handler_hangs, {"handlers": {"timeout": "1s"}}),
    f"burst-{BURST}": (burst, None),
    "burst-behind-catch-up": (burst_behind_catch_up, None),
    "lookback-ids-evicted": (lookback_ids_evicted,
                             {"store": {"lookback_max_ids": LOOKBACK_IDS}}),
    "undecodable-message": (undecodable, None),
    # production's 30 s handler timeout: reply() may wait for a send that fails after ~9 s
    "reply-while-node-down": (reply_while_down, {"handlers": {"timeout": "30s"}}),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_chaos(name: str, tmp_path: Path) -> None:
    case, extra = CASES[name]
    async with supervised(name, tmp_path, scaled_policy(extra), Recorder()) as rig:
        await case(rig)


def test_flapping_24_virtual_hours() -> None:
    """The 24-hour flapping incident in virtual time through the real core (issue 6)."""
    result = CaseResult("node-flapping-24vh (simulated)")
    RESULTS.append(result)
    policy = Policy()
    summary = simulate(load_scenario("flapping-10m"), 24 * 3600.0, policy, seed=1)
    result.sent, result.handled = summary.messages_sent, summary.messages_delivered
    result.restarts, result.final = summary.restarts, summary.final_state
    result.notes = (f"worst hour {summary.worst_hour_restarts} restarts, "
                    f"{summary.calls_per_hour:.0f} calls/h")
    assert summary.messages_delivered == summary.messages_sent
    assert summary.worst_hour_restarts <= policy.breaker.max_restarts
    assert summary.final_state == "stopped" and summary.exit_code == 0
    result.outcome = "passed"


# -- cases that need the agent in a process of its own ------------------------------------------


async def _echoes_settled(ap: AgentProcess, peer: Any, dm: Any, numbers: list[int],
                          timeout: float = 30.0) -> Counter[int]:
    await wait_for_echoes(lambda: echo_counts(peer, dm), numbers, timeout)
    await anyio.sleep(0.5)  # a duplicate would show up now
    return await echo_counts(peer, dm)


def _exactly_once(ap: AgentProcess, echoes: Counter[int], numbers: list[int]) -> None:
    starts, ends = ap.count("start"), ap.count("end")
    assert {n: starts[n] for n in numbers if starts[n] != 1} == {}, "handler starts != 1"
    assert {n: ends[n] for n in numbers if ends[n] != 1} == {}, "handler ends != 1"
    assert set(starts) == set(numbers)
    assert {n: echoes[n] for n in numbers if echoes[n] != 1} == {}, "echo count != 1"


async def sigterm_slow_handler(tmp: Path, result: CaseResult) -> None:
    with DevNode() as node:
        peer = await xmtp_compat.create_client(api_url=node.url)
        ap = AgentProcess(tmp, node.url, scaled_policy({"timers": {"drain_deadline": "6s"},
                                                          "handlers": {"timeout": "10s"}}))
        try:
            ap.start(slow="2", slow_s=2.0)
            dm = await dm_when_ready(peer, ap.address)
            await dm.send("n:0")
            await ap.wait_ended([0], 40)
            for n in range(1, 5):
                await dm.send(f"n:{n}")
            await until(lambda: ap.count("start")[2] == 1, 20, lambda: "n:2 never started")
            assert ap.proc is not None
            ap.proc.send_signal(signal.SIGTERM)  # n:2's handler is sleeping now
            code = await ap.wait_exit(15)
            assert code == 0, ap.log()
            assert ap.count("end")[2] == 1, "the slow handler was not drained"
            assert "Traceback" not in ap.log()
            ap.start()  # n:3 and n:4 were queued behind n:2: the next process handles them
            await ap.wait_ended(list(range(5)), 40)
            echoes = await _echoes_settled(ap, peer, dm, list(range(5)))
            _exactly_once(ap, echoes, list(range(5)))
            ap.proc.send_signal(signal.SIGTERM)
            assert await ap.wait_exit(15) == 0
            result.sent, result.handled = 5, len(ap.count("end"))
            result.echoes, result.final = sum(echoes.values()), f"exit {code}"
            result.notes = "slow handler drained on SIGTERM, exit 0; queued ones after restart"
        finally:
            ap.stop()


async def sigkill_restart(tmp: Path, result: CaseResult) -> None:
    with DevNode() as node:
        peer = await xmtp_compat.create_client(api_url=node.url)
        ap = AgentProcess(tmp, node.url, scaled_policy())
        try:
            ap.start()
            dm = await dm_when_ready(peer, ap.address)
            for n in range(5):
                await dm.send(f"n:{n}")
            await ap.wait_ended(list(range(5)), 40)
            await _echoes_settled(ap, peer, dm, list(range(5)))
            assert ap.proc is not None
            ap.proc.kill()  # SIGKILL: no drain, no flush
            assert await ap.wait_exit(10) == -signal.SIGKILL
            for n in range(5, 10):  # sent while the agent is dead
                await dm.send(f"n:{n}")
            ap.start()
            await ap.wait_ended(list(range(10)), 40)
            echoes = await _echoes_settled(ap, peer, dm, list(range(10)))
            _exactly_once(ap, echoes, list(range(10)))
            databases = list((tmp / "xmtp-db").glob("*.db3"))
            assert len(databases) == 1, "a second XMTP database: a new installation"
            ap.proc.send_signal(signal.SIGTERM)
            assert await ap.wait_exit(15) == 0
            result.sent, result.handled = 10, len(ap.count("end"))
            result.echoes, result.final = sum(echoes.values()), "exit 0"
            result.notes = "killed while idle; 5 sent while dead, caught up on the same data"
        finally:
            ap.stop()


async def wrong_db_key(tmp: Path, result: CaseResult) -> None:
    with DevNode() as node:
        ap = AgentProcess(tmp, node.url, scaled_policy())
        try:
            ap.start()  # creates the encrypted DB
            await until(lambda: bool(list((tmp / "xmtp-db").glob("*.db3"))), 30,
                        lambda: "no XMTP database created")
            await anyio.sleep(2.0)
            assert ap.proc is not None
            ap.proc.send_signal(signal.SIGTERM)
            assert await ap.wait_exit(15) == 0
            started = anyio.current_time()
            ap.start(db_key=os.urandom(32).hex())
            code = await ap.wait_exit(30)
            took = anyio.current_time() - started
            log = ap.log()
            result.final, result.notes = f"exit {code}", f"exited after {took:.1f} s"
            assert code not in (0, None), log
            assert "Traceback" not in log, log[-3000:]
            assert log.count("agent_started") == 0
            assert "XMTP_DB_ENCRYPTION_KEY" in log, "the message must name the variable"
            assert log.count("xmtp-supervisor run: fatal") == 1, "one attempt, no restart loop"
        finally:
            ap.stop()


async def invalid_config(tmp: Path, result: CaseResult) -> None:
    bad = tmp / "bad.toml"
    bad.write_text('[timers]\nsync_interval = "soon"\n', encoding="utf-8")
    for args in (["check-config", str(bad)], ["run", "--config", str(bad)]):
        proc = subprocess.run([sys.executable, "-m", "xmtp_supervisor.cli", *args],
                              capture_output=True, text=True, timeout=60, cwd=tmp,
                              env={**os.environ, "XMTP_WALLET_KEY": "0x" + "11" * 32,
                                   "XMTP_ENV": "local"})
        assert proc.returncode == 2, (args, proc.returncode, proc.stderr)
        assert "timers.sync_interval" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    result.final, result.notes = "exit 2", "check-config and run name timers.sync_interval"


PROCESS_CASES: dict[str, Callable[[Path, CaseResult], Awaitable[None]]] = {
    "sigterm-during-slow-handler": sigterm_slow_handler,
    "sigkill-and-restart-same-data": sigkill_restart,
    "invalid-config": invalid_config,
    "wrong-db-encryption-key": wrong_db_key,
}


@pytest.mark.parametrize("name", list(PROCESS_CASES))
async def test_chaos_process(name: str, tmp_path: Path) -> None:
    result = CaseResult(name)
    RESULTS.append(result)
    started = anyio.current_time()
    try:
        await PROCESS_CASES[name](tmp_path, result)
        result.outcome = "passed"
    finally:
        result.secs = anyio.current_time() - started
