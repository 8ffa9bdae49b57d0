"""The chaos matrix (issue 6): named faults against the devnode with real libxmtp clients.

Each case sends numbered messages before, during and after its fault and ends in
:meth:`Rig.verify`: every message handled once and echoed once, per-conversation order kept,
restarts within the breaker's sliding window, bounded structures, the expected final state, and
a clean shutdown with exit code 0. Timers are scaled (``chaos_harness.SCALE``). Cases that need
a process of their own (signals, crash, config, DB key) are in ``test_chaos_process.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import grpc
import pytest
from chaos_harness import SCALE, Recorder, Rig, scaled_policy, supervised, until
from xmtp_bindings import xmtpv3

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
    await rig.wait_handled(await rig.send(5))
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
    await rig.wait_handled(await rig.send(4))
    for _ in range(3):
        rig.node.stop()
        await anyio.sleep(1.0)
        rig.node.start()
        await rig.send(3)
        await anyio.sleep(10 * 60 / SCALE - 1.0)  # every 10 virtual minutes
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


BURST = 1000


async def burst(rig: Rig) -> None:
    started = anyio.current_time()
    await rig.send(BURST)
    sent_in = anyio.current_time() - started
    await rig.verify(timeout=120)
    rig.result.notes = (f"{BURST} sent in {sent_in:.1f} s, all handled+echoed after "
                        f"{anyio.current_time() - started:.1f} s")


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
    await until(lambda: 2 in rig.rec.started, 15, lambda: "message 2 not started")
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
    from chaos_harness import RESULTS, CaseResult

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
