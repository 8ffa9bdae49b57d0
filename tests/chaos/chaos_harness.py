"""The chaos matrix's rig: a DevNode, a real agent client under a :class:`Supervisor`, a real
peer client that sends numbered messages, and the checks every case shares.

Messages are ``n:<k>`` with ``k`` unique across the case; the agent's handler counts calls per
``k``, notes the order per conversation and replies ``echo:<k>`` through the outbox, so both
sides of "exactly once" are visible: handler calls at the agent and echoes at the peer.
Timers are the production defaults divided by :data:`SCALE` (5 virtual minutes = 5 s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import xmtp

from devnode import DevNode
from fsm.policy import Policy
from fsm.simulate import worst_window
from handlers.api import MessageContext, Router
from xmtp_supervisor import xmtp_compat
from xmtp_supervisor.runtime import Supervisor
from xmtp_supervisor.store import Store
from xmtp_supervisor.xmtp_adapter import XmtpNetwork

os.environ.setdefault("RUST_LOG", "off")

SCALE = 60.0
"""Every production interval is divided by this (1 virtual minute = 1 real second)."""

LIST_ALL = xmtp_compat.ascending()

DEDUP_MAX, DEDUP_EVICT = 64, 32
"""Small on purpose, so bursts and catch-ups exercise eviction and the cursor behind it."""


def scaled_policy(extra: dict[str, dict[str, Any]] | None = None) -> Policy:
    """Production defaults with every schedule scaled down; latency bounds stay real-ish."""
    base = Policy()
    t, b = base.timers, base.breaker
    timers = {name: f"{getattr(t, name) / SCALE:.4f}s" for name in (
        "sync_interval", "health_interval", "activity_check_interval", "activity_warn_after",
        "stall_timeout", "poll_interval", "stream_retry_interval", "full_sync_interval")}
    timers.update(open_timeout="5s", probe_timeout="5s", drain_deadline="3s")
    overrides: dict[str, dict[str, Any]] = {
        "timers": timers,
        "breaker": {name: f"{getattr(b, name) / SCALE:.4f}s" for name in (
            "window", "backoff_initial", "backoff_max", "healthy_reset_after")},
        "dedup": {"max_ids": DEDUP_MAX, "evict": DEDUP_EVICT},
        # production's handler timeout: reply() waits for the send, which takes ~9 s to fail
        # while the node is down (cases that test the timeout set their own)
        "handlers": {"timeout": "30s", "outbox_retry_initial": "200ms",
                     "outbox_retry_max": "1s"},
        "store": {"durability": "per-message"},
        "http": {"enabled": False},
    }
    for section, values in (extra or {}).items():
        overrides.setdefault(section, {}).update(values)
    return base.with_overrides(overrides)


@dataclass
class CaseResult:
    """One row of the table printed at the end of the suite."""

    case: str
    outcome: str = "FAILED"
    sent: int = 0
    handled: int = 0
    echoes: int = 0
    dups: int = 0
    restarts: int = 0
    final: str = "?"
    secs: float = 0.0
    notes: str = ""

    def cells(self) -> tuple[str, ...]:
        return (self.case, self.outcome, str(self.sent), str(self.handled), str(self.echoes),
                str(self.dups), str(self.restarts), self.final, f"{self.secs:.1f}", self.notes)


RESULTS: list[CaseResult] = []


def number_of(text: str, prefix: str = "n:") -> int | None:
    if not text.startswith(prefix):
        return None
    try:
        return int(text[len(prefix):])
    except ValueError:
        return None


@dataclass
class Recorder:
    """The agent's handler: counts, order, echo, and per-case misbehaviour."""

    calls: Counter[int] = field(default_factory=Counter)
    order: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    raise_on: set[int] = field(default_factory=set)
    hang_on: set[int] = field(default_factory=set)
    slow: dict[int, Callable[[], Awaitable[None]]] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds every handler call takes (a slow agent builds a backlog)."""
    foreign: list[str] = field(default_factory=list)
    seen: dict[int, list[tuple[str, str, int]]] = field(default_factory=lambda: defaultdict(list))
    """Per number: (conversation, message id, sent_at_ns) of every call, to explain a duplicate."""

    def router(self) -> Router:
        router = Router()

        @router.on_text
        async def handle(ctx: MessageContext) -> None:
            n = number_of(ctx.text)
            if n is None:
                self.foreign.append(ctx.text)
                return
            self.calls[n] += 1
            m = ctx.message
            self.seen[n].append((m.conversation_id[:8], m.id[:8], m.sent_at_ns))
            self.order[ctx.conversation_id].append(n)
            if n in self.hang_on:
                await anyio.sleep_forever()
            if n in self.slow:
                await self.slow[n]()
            if self.delay:
                await anyio.sleep(self.delay)
            await ctx.reply(f"echo:{n}")
            if n in self.raise_on:
                raise RuntimeError(f"handler fails on purpose for message {n}")

        return router


@dataclass
class Rig:
    node: DevNode
    agent: xmtp.Client
    peer: xmtp.Client
    conversations: list[Any]
    sup: Supervisor
    rec: Recorder
    policy: Policy
    result: CaseResult
    sent: list[int] = field(default_factory=list)
    exit_code: list[int] = field(default_factory=list)
    states: list[tuple[float, str]] = field(default_factory=list)

    async def send(self, count: int) -> list[int]:
        """Send the next ``count`` numbers, alternating conversations, each send awaited."""
        out = []
        for _ in range(count):
            n = len(self.sent)
            await self.conversations[n % len(self.conversations)].send(f"n:{n}")
            self.sent.append(n)
            out.append(n)
        return out

    async def wait_handled(self, numbers: list[int] | set[int], timeout: float = 30.0) -> None:
        await until(lambda: all(self.rec.calls[n] for n in numbers), timeout,
                    lambda: f"not handled: {sorted(n for n in numbers if not self.rec.calls[n])}")

    async def peer_echoes(self) -> Counter[int]:
        echoes: Counter[int] = Counter()
        for conversation in self.conversations:
            echoes.update(await echo_counts(self.peer, conversation))
        return echoes

    async def wait_echoes(self, numbers: set[int], timeout: float = 30.0) -> Counter[int]:
        return await wait_for_echoes(self.peer_echoes, numbers, timeout)

    async def settle(self, numbers: list[int]) -> None:
        """Wait until ``numbers`` are handled and their echoes reached the peer, so no reply is
        in flight when the next fault strikes (see the report: a reply in flight when the node
        dies can be published twice)."""
        await self.wait_handled(numbers)
        echoes = await self.wait_echoes(set(numbers))
        assert all(echoes[n] for n in numbers), f"echoes missing: {numbers} vs {echoes}"

    async def wait_state(self, state: str, timeout: float = 30.0) -> None:
        await until(lambda: self.sup.state == state, timeout,
                    lambda: f"state {self.sup.state!r}, wanted {state!r}")

    async def verify(
        self,
        *,
        handled: set[int] | None = None,
        echoed: set[int] | None = None,
        min_restarts: int = 0,
        final: str = "streaming",
        failed: int = 0,
        timed_out: int = 0,
        undecodable: int = 0,
        timeout: float = 30.0,
    ) -> None:
        """The checks every case makes; ``handled``/``echoed`` default to everything sent."""
        expect_handled = set(self.sent) if handled is None else handled
        expect_echo = expect_handled - self.rec.hang_on if echoed is None else echoed
        await self.wait_handled(expect_handled, timeout)
        echoes = await self.wait_echoes(expect_echo, timeout)
        await until(lambda: self.sup.state == final, timeout,
                    lambda: f"final state {self.sup.state!r}, expected {final!r}")
        await anyio.sleep(0.3)  # anything duplicated late shows up now
        calls, rec, sup, policy = self.rec.calls, self.rec, self.sup, self.policy
        res = self.result
        res.sent, res.handled = len(self.sent), sum(1 for n in self.sent if calls[n])
        res.dups = sum(c - 1 for c in calls.values() if c > 1)
        res.dups += sum(c - 1 for c in echoes.values() if c > 1)
        res.echoes = sum(echoes.values())
        res.restarts = len(sup.core.restart_times)
        res.final = sup.state
        # exactly once, at the agent and at the peer
        dup_calls = {n: c for n, c in calls.items() if c != 1}
        assert dup_calls == {}, (
            f"handler called more than once: {dup_calls}; first calls: "
            f"{[(n, rec.seen[n]) for n in sorted(dup_calls)[:3]]}; cursors "
            f"{sup.store.cursors()}")
        assert set(calls) == expect_handled, (
            f"handled {sorted(set(calls) ^ expect_handled)} unexpectedly / not at all")
        dup_echoes = {n: c for n, c in echoes.items() if c != 1}
        assert dup_echoes == {}, f"echo delivered more than once: {dup_echoes}"
        assert set(echoes) == expect_echo, f"echo mismatch {sorted(set(echoes) ^ expect_echo)}"
        assert rec.foreign == []
        # per-conversation order
        for conversation_id, seen in rec.order.items():
            assert seen == sorted(seen), f"order broken in {conversation_id[:8]}: {seen}"
        # the breaker's policy holds over any sliding window
        b = policy.breaker
        assert worst_window(sup.core.restart_times, b.window) <= b.max_restarts
        assert res.restarts >= min_restarts, f"expected >= {min_restarts} restarts"
        # bounded structures, nothing left behind
        assert len(sup.path.dedup) <= policy.dedup.max_ids
        assert sup.path.backlog == 0 and sup.path.in_flight == 0
        assert sup.outbox.pending == 0
        assert len(sup.recent) <= sup.recent.maxlen
        counters = sup.path.counters
        assert (counters.failed, counters.timed_out, counters.undecodable) == (
            failed, timed_out, undecodable)
        assert sup.state == final


async def until(pred: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    with anyio.move_on_after(timeout):
        while not pred():
            await anyio.sleep(0.02)
        return
    raise AssertionError(f"timed out after {timeout:g} s: {what()}")


async def make_clients(node: DevNode) -> tuple[xmtp.Client, xmtp.Client, list[Any]]:
    agent = await xmtp_compat.create_client(api_url=node.url)
    peer = await xmtp_compat.create_client(api_url=node.url)
    identifier, inbox_id, ffi = agent.account_identifier, agent.inbox_id, agent._client
    assert identifier is not None and inbox_id is not None and ffi is not None
    dm = await peer.conversations.new_dm(identifier.value)
    group = await xmtp_compat.new_group(peer, [inbox_id])
    await ffi.conversations().sync()
    return agent, peer, [dm, group]


@asynccontextmanager
async def supervised(
    name: str,
    tmp: Path,
    policy: Policy | None = None,
    rec: Recorder | None = None,
    network: Callable[[xmtp.Client], Any] | None = None,
) -> AsyncIterator[Rig]:
    """A fresh node, agent and peer; the supervisor running in a task group; a clean shutdown
    (exit code 0, state stopped) checked on the way out; the result row recorded either way."""
    result = CaseResult(name)
    RESULTS.append(result)
    started = time.monotonic()
    policy = policy or scaled_policy()
    rec = rec or Recorder()
    node = DevNode()
    node.start()
    try:
        agent, peer, conversations = await make_clients(node)
        net = network(agent) if network is not None else XmtpNetwork(agent)
        store = Store.from_policy(policy.store, tmp / "agent.db")
        sup = Supervisor(policy, net, store, rec.router(), seed=7, handle_signals=False)
        sup.missed_grace_ns = int(10e9 / SCALE)
        rig = Rig(node, agent, peer, conversations, sup, rec, policy, result)
        sup.hooks.on_state.append(lambda s: rig.states.append((time.monotonic(), s.value)))
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                rig.exit_code.append(await sup.run())

            tg.start_soon(run)
            await rig.wait_state("streaming", 30)
            yield rig
            node.faults.clear()
            if not node.running:
                node.start()
            sup.request_shutdown()
            await until(lambda: bool(rig.exit_code), 15, lambda: f"no exit in {sup.state}")
            assert rig.exit_code == [0] and sup.state == "stopped"
        store.close()
        result.outcome = "passed"
    finally:
        result.secs = time.monotonic() - started
        node.close()


# -- a supervised agent in its own process (signals, crashes, config, DB key) --------------------

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


@dataclass
class AgentProcess:
    """``xmtp-supervisor run --handlers chaos_agent_handlers`` with a persistent identity: the
    same wallet key, DB directory and key, and store file on every start."""

    tmp: Path
    api_url: str
    policy: Policy
    wallet_key: str = field(default_factory=xmtp_compat.new_wallet_key)
    db_key: str = field(default_factory=lambda: os.urandom(32).hex())
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def events_path(self) -> Path:
        return self.tmp / "events.jsonl"

    @property
    def address(self) -> str:
        from eth_account import Account

        return str(Account.from_key(self.wallet_key).address)

    def start(self, *, slow: str = "", slow_s: float = 0.0,
              db_key: str | None = None) -> subprocess.Popen[bytes]:
        config = self.tmp / "policy.toml"
        config.write_text(self.policy.to_toml(), encoding="utf-8")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)]),
            "XMTP_WALLET_KEY": self.wallet_key,
            "XMTP_ENV": "local",
            "XMTP_API_URL": self.api_url,
            "XMTP_DB_DIRECTORY": str(self.tmp / "xmtp-db"),
            "XMTP_DB_ENCRYPTION_KEY": db_key or self.db_key,
            "CHAOS_EVENTS": str(self.events_path),
            "CHAOS_SLOW": slow,
            "CHAOS_SLOW_S": str(slow_s),
            "RUST_LOG": "off",
        }
        self.starts += 1
        log = open(self.tmp / f"agent-{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "xmtp_supervisor.cli", "run", "--handlers",
             "chaos_agent_handlers", "--config", str(config), "--store",
             str(self.tmp / "agent-store.db")],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp,
        )
        log.close()
        return self.proc

    def log(self, n: int | None = None) -> str:
        return (self.tmp / f"agent-{n or self.starts}.log").read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        if not self.events_path.exists():
            return []
        lines = self.events_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def count(self, what: str) -> Counter[int]:
        return Counter(e["n"] for e in self.events() if e["ev"] == what)

    async def wait_ended(self, numbers: list[int], timeout: float = 30.0) -> None:
        await until(lambda: all(self.count("end")[n] for n in numbers), timeout,
                    lambda: f"not handled: {numbers}; events {self.events()}")

    async def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        await until(lambda: self.proc is not None and self.proc.poll() is not None, timeout,
                    lambda: "the agent process did not exit")
        code = self.proc.returncode
        assert code is not None
        return code

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


async def dm_when_ready(peer: xmtp.Client, address: str, timeout: float = 40.0) -> Any:
    """The peer's DM with the agent, once the agent's identity exists on the node."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await peer.conversations.new_dm(address)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await anyio.sleep(0.3)


async def wait_for_echoes(
    count: Callable[[], Awaitable[Counter[int]]], numbers: Iterable[int], timeout: float
) -> Counter[int]:
    """Poll ``count`` until every one of ``numbers`` was echoed or ``timeout`` passed; returns
    the last counts (the caller asserts on them)."""
    deadline = time.monotonic() + timeout
    while True:
        echoes = await count()
        if all(echoes[n] for n in numbers) or time.monotonic() > deadline:
            return echoes
        await anyio.sleep(0.3)


async def echo_counts(peer: xmtp.Client, conversation: Any) -> Counter[int]:
    await xmtp_compat.sync_conversation(conversation)
    echoes: Counter[int] = Counter()
    for raw in await xmtp_compat.ffi_of(conversation).find_messages(LIST_ALL):
        try:  # one case sends content nobody can decode, the peer included
            content = peer._decode_message(raw).content
        except Exception:
            continue
        if isinstance(content, str) and (n := number_of(content, "echo:")) is not None:
            echoes[n] += 1
    return echoes
