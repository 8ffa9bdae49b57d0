"""The runtime on the real xmtp SDK (libxmtp) against the devnode: messages sent across a stream
error, a silent stall, an outage and a process restart are each handled exactly once, in order;
polling takes over when the stream cannot be opened."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import grpc
import pytest

from devnode import DevNode
from fsm.policy import Policy
from handlers.api import MessageContext, Router
from xmtp_supervisor import xmtp_compat
from xmtp_supervisor.runtime import Supervisor
from xmtp_supervisor.store import Store
from xmtp_supervisor.xmtp_adapter import XmtpNetwork

pytestmark = [pytest.mark.anyio, pytest.mark.node]

FAST = Policy().with_overrides({
    "timers": {"sync_interval": "2s", "activity_check_interval": "2s",
               "activity_warn_after": "4s", "stall_timeout": "6s", "poll_interval": "1s",
               "stream_retry_interval": "3s", "health_interval": "5s", "open_timeout": "5s",
               "probe_timeout": "5s", "drain_deadline": "3s"},
    "breaker": {"backoff_initial": "200ms", "backoff_max": "1s", "window": "1m",
                "max_restarts": 10},
    "store": {"durability": "per-message"},
})


@dataclass
class Agent:
    node: DevNode
    key: str
    db_dir: Path
    handled: list[str] = field(default_factory=list)
    sup: Supervisor | None = None
    _cancel: Callable[[], None] | None = None

    def router(self) -> Router:
        router = Router()

        @router.on_text
        async def record(ctx: MessageContext) -> None:
            self.handled.append(ctx.text)

        return router

    async def start(self, tg: Any, policy: Policy = FAST) -> Supervisor:
        client = await xmtp_compat.create_client(
            api_url=self.node.url, wallet_key=self.key, db_path=str(self.db_dir / "xmtp.db3"),
            db_encryption_key="ab" * 32)
        store = Store(self.db_dir / "supervisor.db", durability=policy.store.durability)
        sup = Supervisor(policy, XmtpNetwork(client), store, self.router(), seed=5,
                         handle_signals=False)
        sup.missed_grace_ns = 500_000_000
        self.sup = sup
        scope = anyio.CancelScope()

        async def run() -> None:
            with scope:
                await sup.run()
            store.close()

        tg.start_soon(run)
        self._cancel = scope.cancel
        assert await until(lambda: sup.state == "streaming", 30)
        return sup

    def kill(self) -> None:
        """Like SIGKILL: no drain, no flush beyond what per-message durability wrote."""
        assert self._cancel is not None
        self._cancel()


async def until(predicate: Callable[[], bool], timeout: float) -> bool:
    with anyio.move_on_after(timeout):
        while not predicate():
            await anyio.sleep(0.05)
        return True
    return False


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[DevNode, Agent, Any]]:
    with DevNode() as node:
        agent = Agent(node, "0x" + secrets.token_hex(32), tmp_path)
        async with anyio.create_task_group() as tg:
            yield node, agent, tg
            if agent.sup is not None and agent.sup.state != "stopped":
                agent.sup.request_shutdown()
                await until(lambda: agent.sup is not None and agent.sup.state == "stopped", 10)
            tg.cancel_scope.cancel()


async def test_each_fault_loses_nothing_and_duplicates_nothing(world: Any) -> None:
    node, agent, tg = world
    sup = await agent.start(tg)
    peer = await xmtp_compat.create_client(api_url=node.url)
    from eth_account import Account

    dm = await peer.conversations.new_dm(Account.from_key(agent.key).address.lower())
    sent: list[str] = []

    async def send(n: int) -> None:
        for _ in range(n):
            text = f"msg {len(sent) + 1:03d}"
            await dm.send(text)
            sent.append(text)

    await send(3)
    assert await until(lambda: len(agent.handled) == 3, 20)

    node.faults.abort_streams()  # stream error
    await send(3)
    assert await until(lambda: len(agent.handled) == 6, 20)

    node.faults.set_silent(True)  # silent stall: caught by the next sync
    await send(3)
    assert await until(lambda: len(agent.handled) == 9, 20)
    node.faults.set_silent(False)
    assert len(sup.core.restart_times) >= 2

    node.stop()  # outage: the stream dies, syncs fail, then everything recovers
    await anyio.sleep(3)
    node.start()
    await send(3)
    assert await until(lambda: len(agent.handled) == 12, 40)

    agent.kill()  # process killed and restarted on the same data
    await anyio.sleep(0.5)
    await send(3)
    await agent.start(tg)
    assert await until(lambda: len(agent.handled) == 15, 30)
    await anyio.sleep(3)  # a periodic sync or two: nothing may come twice

    assert agent.handled == sent  # exactly once, in order
    restarts = sup.core.restart_times
    for i, t in enumerate(restarts):
        assert sum(1 for u in restarts[i:] if u < t + FAST.breaker.window) <= 10


async def test_polling_handles_messages_when_the_stream_cannot_open(world: Any) -> None:
    node, agent, tg = world
    sup = await agent.start(tg)
    peer = await xmtp_compat.create_client(api_url=node.url)
    from eth_account import Account

    dm = await peer.conversations.new_dm(Account.from_key(agent.key).address.lower())
    await dm.send("before")
    assert await until(lambda: agent.handled == ["before"], 20)

    node.faults.refuse(grpc.StatusCode.UNAVAILABLE,
                       {"SubscribeGroupMessages", "SubscribeWelcomeMessages"})
    node.faults.abort_streams()
    assert await until(lambda: sup.state == "polling", 30)
    await dm.send("while polling")
    assert await until(lambda: agent.handled == ["before", "while polling"], 20)
    assert sup.state == "polling"

    node.faults.refuse(None)
    assert await until(lambda: sup.state == "streaming", 30)
    await dm.send("after")
    assert await until(lambda: agent.handled == ["before", "while polling", "after"], 20)
