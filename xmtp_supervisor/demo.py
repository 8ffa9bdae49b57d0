"""``xmtp-supervisor demo``: the supervised echo agent against a local node, through real faults.

Why it exists: a new user should see, on a fresh machine with no wallet and no internet, what the
supervisor promises — every message handled once through a stream error, a silent stall, a node
outage and a node restart — and be able to check it, not take it on trust. So everything is real
except the network: a :class:`devnode.DevNode` on loopback, two real libxmtp clients (the agent,
with a persistent encrypted database, and a scripted peer), the same ``build_service`` wiring as
``run``. Faults are injected at the node, as a user would meet them. The verdict comes from the
peer's side of the conversation (what the network actually holds), not from the agent's counters.

Timers are scaled down (seconds instead of minutes) so every fault is detected and recovered
within about a minute; the output says so.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import anyio
from xmtp_bindings import xmtpv3

from devnode import DevNode
from fsm.policy import Policy, format_duration
from fsm.table import Event, State
from handlers.builtin import default_router
from xmtp_supervisor import xmtp_compat
from xmtp_supervisor.logs import configure_logging
from xmtp_supervisor.service import build_service, wait_for_state
from xmtp_supervisor.store import Store
from xmtp_supervisor.xmtp_adapter import XmtpNetwork

OUTAGE_SECONDS = 20.0
"""The outage the issue asks for; fixed, whatever the duration."""

MIN_DURATION = 55.0
"""Shortest run that fits all four faults and the recovery from each (see :func:`schedule`)."""

SEND_INTERVAL = 1.0
"""The peer's pace: one numbered message a second."""

FAULT_WAIT = 20.0
"""Each fault waits for the agent to be streaming again (bounded), so each one hits a healthy
agent even when the previous recovery took longer than the schedule assumed."""

SETTLE = 6.0
"""The peer keeps sending at least this long after the last fault."""

CATCH_UP_TIMEOUT = 45.0
"""Bound on waiting, after the peer stops, for every message to be echoed."""

MISSED_GRACE_NS = 2 * 1_000_000_000
"""Scaled from the runtime's 10 s: a message older than this found by a sync means the stream
missed it; small enough that a 5 s sync catches a silent stall at once."""

DEMO_TIMERS: dict[str, dict[str, Any]] = {
    "timers": {
        "sync_interval": "5s",
        "activity_check_interval": "5s",
        "activity_warn_after": "10s",
        "stall_timeout": "20s",
        "poll_interval": "3s",
        "stream_retry_interval": "8s",
        "full_sync_interval": "30s",
        "health_interval": "10s",
        "open_timeout": "5s",
        "probe_timeout": "5s",
        "drain_deadline": "5s",
    },
    "breaker": {
        "backoff_initial": "1s",
        "backoff_max": "3s",
        "window": "30s",
        "healthy_reset_after": "15s",
    },
    "handlers": {"outbox_retry_initial": "1s", "outbox_retry_max": "3s"},
    "logging": {"level": "warning", "warn_interval": "10s"},
}
"""Production timers are minutes; these are seconds, so the whole story fits in a minute."""


@dataclass(frozen=True)
class Fault:
    """One scheduled fault: when (seconds after the peer starts) and what."""

    at: float
    name: str


def schedule(duration: float) -> list[Fault]:
    """Spread the four faults over ``duration``, leaving each one time to be recovered.

    Stream error early; the silent stall after the restart settled (detected by a 5 s sync,
    switched off once detected, at most 12 s); the 20 s outage; the node restart at least 10 s
    after the outage (polling retries the stream every 8 s) and at least 6 s before the end.
    """
    outage_at = max(18.0, 0.30 * duration)
    restart_at = max(outage_at + OUTAGE_SECONDS + 10.0, 0.82 * duration)
    restart_at = min(restart_at, duration - 6.0)
    return [
        Fault(max(4.0, 0.07 * duration), "stream error"),
        Fault(max(8.0, 0.14 * duration), "silent stall"),
        Fault(outage_at, "outage"),
        Fault(restart_at, "node restart"),
    ]


@dataclass
class Timeline:
    """What the demo saw, printed live and summed up at the end."""

    out: TextIO
    started: float = field(default_factory=time.monotonic)
    state_time: dict[str, float] = field(default_factory=dict)
    transitions: list[tuple[float, str, str, str]] = field(default_factory=list)
    _state: str = State.STARTING.value
    _since: float | None = None
    _watches: list[tuple[frozenset[str], Callable[[], None]]] = field(default_factory=list)

    def once(self, events: set[str], callback: Callable[[], None]) -> None:
        """Call ``callback`` from the record hook on the next of ``events``: synchronously, so a
        fault can be switched off before the runtime acts on the transition."""
        self._watches.append((frozenset(events), callback))

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, text: str) -> None:
        print(f"{self.elapsed():6.1f}s  {text}", file=self.out, flush=True)

    def on_record(self, record: dict[str, Any]) -> None:
        """Runtime hook: one printed line per state change, and time per state."""
        at = float(record["at"])
        for watch in [w for w in self._watches if record["event"] in w[0]]:
            self._watches.remove(watch)
            watch[1]()
        if self._since is None:
            self._since = at
        if record["source"] == record["dest"]:
            return
        source = record["source"]
        self.state_time[source] = self.state_time.get(source, 0.0) + at - self._since
        self._since, self._state = at, record["dest"]
        self.transitions.append((self.elapsed(), record["event"], record["source"],
                                 record["dest"]))
        self.say(f"{record['event']:<20} {record['source']} → {record['dest']}")

    def close(self, now: float) -> None:
        if self._since is not None:
            self.state_time[self._state] = (self.state_time.get(self._state, 0.0)
                                            + max(0.0, now - self._since))
            self._since = now


@dataclass
class Peer:
    """The scripted user: numbered messages at a steady pace; a failed send is retried with the
    same label (the network may or may not have taken it; the verdict counts what it holds)."""

    conversation: Any
    next_number: int = 1
    attempts: int = 0
    failures: int = 0
    stop: anyio.Event = field(default_factory=anyio.Event)

    async def run(self) -> None:
        while not self.stop.is_set():
            tick = anyio.current_time()
            label = f"msg {self.next_number:03d}"
            self.attempts += 1
            try:
                await self.conversation.send(label)
            except Exception:  # the node is down: same label again next tick
                self.failures += 1
            else:
                self.next_number += 1
            with anyio.move_on_after(max(0.0, tick + SEND_INTERVAL - anyio.current_time())):
                await self.stop.wait()

    @property
    def sent(self) -> int:
        return self.next_number - 1


@dataclass
class Tally:
    """The verdict, from the peer's synced view of the conversation."""

    sent: int
    other: int
    """Non-text messages from the peer (the DM's membership message): handled, not echoed."""
    echoed: int
    lost: list[str]
    duplicated: list[str]


async def published(client: Any, conversation: Any, sender: str) -> list[str | None]:
    """What ``sender`` published in ``conversation`` (synced first): texts, None for other
    content (the DM's membership message, which the agent also handles).

    Only published messages: a send that failed stays in the local database as unpublished and
    was never on the network (libxmtp does not retry it), so it must not count as sent.
    """
    await xmtp_compat.sync_conversation(conversation)
    raw = await xmtp_compat.ffi_of(conversation).find_messages(
        xmtp_compat.ascending(delivery_status=xmtpv3.FfiDeliveryStatus.PUBLISHED))
    contents: list[str | None] = []
    for message in raw:
        if message.sender_inbox_id == sender:
            content = client._decode_message(message).content
            contents.append(content if isinstance(content, str) else None)
    return contents


async def tally(peer_client: Any, conversation: Any, agent_inbox: str) -> Tally:
    """Per label: copies the peer published vs echoes the agent published."""
    from_peer = await published(peer_client, conversation, peer_client.inbox_id)
    sent = Counter(text for text in from_peer if text is not None)
    echoes = Counter(text for text in await published(peer_client, conversation, agent_inbox)
                     if text is not None)
    labels = sorted(set(sent) | set(echoes))
    lost = [label for label in labels if echoes[label] < sent[label]]
    duplicated = [label for label in labels if echoes[label] > sent[label]]
    return Tally(sum(sent.values()), len(from_peer) - sum(sent.values()),
                 sum(echoes.values()), lost, duplicated)


async def inject(fault: Fault, node: DevNode, timeline: Timeline) -> None:
    """Inject one fault and return once it is switched off again (the node is back)."""
    if fault.name == "stream error":
        timeline.say("** fault: stream error (node aborts every subscription: UNAVAILABLE)")
        node.faults.abort_streams()
    elif fault.name == "silent stall":
        timeline.say("** fault: silent stall (subscriptions open, nothing delivered)")
        detected = anyio.Event()

        def detected_now() -> None:
            # Off before the stream is reopened, or the new subscription would be silent too.
            node.faults.set_silent(False)
            detected.set()

        timeline.once({Event.SYNC_BEHIND.value, Event.PROBE_BEHIND.value}, detected_now)
        node.faults.set_silent(True)
        with anyio.move_on_after(12.0):
            await detected.wait()
        node.faults.set_silent(False)
        timeline.say("** fault over: node delivers again"
                     + ("" if detected.is_set() else " (no sync noticed the silence in 12 s)"))
    elif fault.name == "outage":
        timeline.say(f"** fault: outage (node stopped for {OUTAGE_SECONDS:.0f} s)")
        await anyio.to_thread.run_sync(node.stop)
        await anyio.sleep(OUTAGE_SECONDS)
        await anyio.to_thread.run_sync(node.start)
        timeline.say(f"** fault over: node back on {node.url} with its data")
    elif fault.name == "node restart":
        timeline.say("** fault: node restart (stop + start, data kept)")
        await anyio.to_thread.run_sync(lambda: node.restart(keep_data=True))


def demo_policy(http_port: int) -> Policy:
    overrides = {section: dict(values) for section, values in DEMO_TIMERS.items()}
    overrides["http"] = {"host": "127.0.0.1", "port": http_port}
    return Policy().with_overrides(overrides)


def describe_timers(policy: Policy) -> str:
    t, b = policy.timers, policy.breaker
    f = format_duration
    return (
        f"demo timers (scaled down from minutes): sync {f(t.sync_interval)}, activity check "
        f"{f(t.activity_check_interval)}, warn {f(t.activity_warn_after)}, stall "
        f"{f(t.stall_timeout)}, poll {f(t.poll_interval)}, stream retry "
        f"{f(t.stream_retry_interval)}, full sync {f(t.full_sync_interval)}, health "
        f"{f(t.health_interval)}, backoff "
        f"{f(b.backoff_initial)}..{f(b.backoff_max)}, breaker {b.max_restarts} restarts / "
        f"{f(b.window)}, missed-message grace {MISSED_GRACE_NS // 1_000_000_000}s; catch-up "
        f"lookback {f(policy.store.lookback)} (not scaled: every catch-up re-reads the whole "
        "demo conversation and dedup must drop each repeat)"
    )


async def run_demo(duration: float, http_port: int, out: TextIO = sys.stdout) -> int:
    """The whole demo; returns the exit code (0 only if nothing was lost or duplicated)."""
    if duration < MIN_DURATION:
        print(f"demo: --duration must be at least {format_duration(MIN_DURATION)} to fit the "
              f"four faults (the outage alone is {OUTAGE_SECONDS:.0f} s)", file=sys.stderr)
        return 2
    workdir = tempfile.mkdtemp(prefix="xmtp-supervisor-demo-")
    policy = demo_policy(http_port)
    log_file = open(os.path.join(workdir, "supervisor.log"), "w", encoding="utf-8")  # noqa: SIM115
    logging_setup = configure_logging(policy, stream=log_file)
    code = 1
    try:
        code = await _run(duration, policy, workdir, log_file, out)
    finally:
        logging_setup.close()
        log_file.close()
        if code == 0:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept for inspection: {workdir} (supervisor.log, databases)", file=out)
    return code


@contextlib.contextmanager
def native_stderr_to(file: TextIO) -> Iterator[None]:
    """Send file descriptor 2 to ``file`` for a moment: sqlcipher prints a harmless warning
    ("no codec attached to db") straight to it when an encrypted database is created, which
    would land in the middle of the demo's output."""
    sys.stderr.flush()
    file.flush()
    saved = os.dup(2)
    try:
        os.dup2(file.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


async def _run(
    duration: float, policy: Policy, workdir: str, log_file: TextIO, out: TextIO
) -> int:
    timeline = Timeline(out)
    print(describe_timers(policy), file=out)
    with DevNode() as node:
        timeline.say(f"local node on {node.url} (in-process, loopback)")
        with native_stderr_to(log_file):
            agent_client = await xmtp_compat.create_client(
                api_url=node.url, db_path=os.path.join(workdir, "agent.db3"),
                db_encryption_key=os.urandom(32),
            )
        peer_client = await xmtp_compat.create_client(api_url=node.url)
        network = XmtpNetwork(agent_client)
        store = Store.from_policy(policy.store, os.path.join(workdir, "supervisor.db"))
        service = build_service(policy, network, store, default_router(), handle_signals=False)
        sup = service.supervisor
        sup.missed_grace_ns = MISSED_GRACE_NS
        sup.hooks.on_record.append(timeline.on_record)
        service.on_http_ready.append(
            lambda port: timeline.say(f"metrics: curl http://127.0.0.1:{port}/metrics")
            if port is not None else None
        )
        exit_code: int | None = None
        result: Tally | None = None
        peer: Peer | None = None
        caught_up = False
        faults = schedule(duration)
        marks: list[tuple[Fault, float, int]] = []

        async def run_service() -> None:
            nonlocal exit_code
            exit_code = await service.run()

        async with anyio.create_task_group() as tg:
            tg.start_soon(run_service)
            if not await wait_for_state(sup, {State.STREAMING.value}, 30.0):
                timeline.say("agent did not reach streaming in 30 s")
                sup.request_shutdown()
                return 1
            identifier = agent_client.account_identifier
            assert identifier is not None  # a created client always has its identifier
            dm = await peer_client.conversations.new_dm(identifier.value)
            peer = Peer(dm)
            timeline.say(f"peer opens a DM and sends one message every {SEND_INTERVAL:g} s "
                         f"for {format_duration(duration)}")
            peer_started = anyio.current_time()
            tg.start_soon(peer.run)
            last_fault = peer_started
            for fault in faults:
                await anyio.sleep(max(0.0, peer_started + fault.at - anyio.current_time()))
                if not await wait_for_state(sup, {State.STREAMING.value}, FAULT_WAIT):
                    timeline.say(f"agent not streaming {FAULT_WAIT:.0f} s past the schedule")
                marks.append((fault, timeline.elapsed(), len(timeline.transitions)))
                await inject(fault, node, timeline)
                last_fault = anyio.current_time()
            await anyio.sleep(max(0.0, peer_started + duration - anyio.current_time(),
                                  last_fault + SETTLE - anyio.current_time()))
            peer.stop.set()
            timeline.say(f"peer stops after {peer.sent} messages; waiting for every echo")
            with anyio.move_on_after(CATCH_UP_TIMEOUT):
                while True:
                    with contextlib.suppress(Exception):  # a sync may fail right after faults
                        result = await tally(peer_client, dm, network.inbox_id)
                        if not result.lost and result.sent >= peer.sent:
                            caught_up = True
                            break
                    await anyio.sleep(1.0)
            timeline.say("all echoes seen" if caught_up else "gave up waiting for echoes")
            sup.request_shutdown()
        timeline.close(sup.clock.now())
        result = await tally(peer_client, dm, network.inbox_id)
        node_counters = node.faults.counters()
        store.close()

    assert peer is not None
    handled = sup.path.counters.handled
    lost, duplicated = _losses(result, handled)
    ok = exit_code == 0 and lost == 0 and duplicated == 0
    _summary(out, timeline, result, peer, handled, lost, duplicated, sup.counters,
             sup.rpc_counts, node_counters, exit_code)
    _recoveries(out, timeline, marks)
    print("RESULT: " + ("OK, 0 lost, 0 duplicated" if ok else "FAILED"), file=out, flush=True)
    return 0 if ok else 1


def _recoveries(out: TextIO, timeline: Timeline, marks: list[tuple[Fault, float, int]]) -> None:
    """Per fault: did the supervisor restart the stream, and how long until it streamed again."""
    print("fault recovery", file=out)
    for fault, at, index in marks:
        back = next(((t, source) for t, _event, source, dest in timeline.transitions[index:]
                     if dest == State.STREAMING.value and source == State.RESTARTING.value),
                    None)
        verdict = (f"restarted, streaming again {back[0] - at:.1f} s after injection"
                   if back is not None else "no restart seen")
        print(f"  {fault.name:<14} at {at:5.1f}s  {verdict}", file=out)
    print(file=out, flush=True)


def _losses(result: Tally, handled: int) -> tuple[int, int]:
    """(lost, duplicated): what the peer's tally names, plus any gap between the handler calls
    and what was sent (texts and membership messages)."""
    expected = result.sent + result.other
    return (len(result.lost) + max(0, expected - handled),
            len(result.duplicated) + max(0, handled - expected))


def _summary(
    out: TextIO,
    timeline: Timeline,
    result: Tally,
    peer: Peer,
    handled: int,
    lost: int,
    duplicated: int,
    counters: Any,
    rpc_counts: dict[str, int],
    node_counters: dict[str, int],
    exit_code: int | None,
) -> None:
    rows = [
        ("messages sent (published by the peer)", str(result.sent)),
        ("  peer send attempts that failed (retried)", str(peer.failures)),
        ("messages handled (agent)", f"{handled}  (expected {result.sent} texts + "
         f"{result.other} membership message{'s' if result.other != 1 else ''})"),
        ("replied (echoes seen by the peer)", str(result.echoed)),
        ("lost", str(lost) + (f"  {', '.join(result.lost)}" if result.lost else "")),
        ("duplicated", str(duplicated)
         + (f"  {', '.join(result.duplicated)}" if result.duplicated else "")),
        ("re-reads dropped by dedup (lookback)", str(counters.get("deduplicated", 0))),
        ("restarts", str(counters.get("restarts_total", 0))),
        ("supervisor exit code", str(exit_code)),
    ]
    print("\nsummary", file=out)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}", file=out)
    print("\ntime per state", file=out)
    for state in State:
        seconds = timeline.state_time.get(state.value, 0.0)
        if seconds > 0:
            print(f"  {state.value:<{width}}  {seconds:6.1f} s", file=out)
    print("\nsupervisor RPCs (ok / failed)", file=out)
    for kind in sorted({k.removesuffix("_failed") for k in rpc_counts}):
        print(f"  {kind:<{width}}  {rpc_counts.get(kind, 0)} / "
              f"{rpc_counts.get(kind + '_failed', 0)}", file=out)
    print("\nnode RPC calls (agent and peer)", file=out)
    for name, count in sorted(node_counters.items()):
        print(f"  {name:<{width}}  {count}", file=out)
    print(file=out, flush=True)
