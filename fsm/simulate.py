"""Simulation: the real core in virtual time against a scripted world.

The world plays the network and the xmtp client as they were observed against a local node: a
stream that errors, ends or goes silent while messages keep arriving; opening a stream while the
network is down ends after ~2 s; syncs during an outage fail after ~2 s; a sync finds what the
stream never delivered. It answers the core's effects with events, so a policy can be tried on
30 days of incidents in seconds, before deploy.

Scenario files are TOML::

    name = "my-incident"
    description = "what it reproduces"
    [traffic]
    message_interval = "1m"   # one peer message per interval ("0s": no traffic)
    conversations = 10
    [network]
    open_latency = "200ms"    # stream open when the node is up
    rpc_latency = "100ms"     # sync / poll / probe when the node is up
    down_delay = "2s"         # how long a call takes to fail while the node is down
    [[faults]]
    kind = "stream_error"     # stream_error | stream_end | silent | outage | refuse_open
    at = "10m"                # first occurrence
    every = "10m"             # optional: repeat
    duration = "30m"          # for silent / outage / refuse_open (silent: until restarted)
"""

from __future__ import annotations

import heapq
import math
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fsm.core import SupervisorCore
from fsm.effects import ArmTimer, CancelTimer, Effect, Perform
from fsm.policy import Policy, PolicyError, parse_duration
from fsm.table import Action, Event, State

FAULT_KINDS = ("stream_error", "stream_end", "silent", "outage", "refuse_open")
NETWORK_ACTIONS = (Action.OPEN_STREAM, Action.SYNC, Action.PROBE, Action.POLL, Action.CATCH_UP)


@dataclass(frozen=True)
class Fault:
    kind: str
    at: float
    every: float | None = None
    duration: float | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str = ""
    message_interval: float = 60.0
    conversations: int = 10
    open_latency: float = 0.2
    rpc_latency: float = 0.1
    down_delay: float = 2.0
    faults: tuple[Fault, ...] = ()

    @classmethod
    def from_toml(cls, text: str, source: str) -> Scenario:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"{source}: not valid TOML ({exc})") from None
        traffic = data.get("traffic", {})
        network = data.get("network", {})
        faults = []
        for i, raw in enumerate(data.get("faults", [])):
            where = f"{source}: faults[{i}]"
            kind = raw.get("kind")
            if kind not in FAULT_KINDS:
                raise PolicyError(f"{where}.kind: must be one of {', '.join(FAULT_KINDS)}; "
                                  f"got {kind!r}")
            unknown = set(raw) - {"kind", "at", "every", "duration"}
            if unknown:
                raise PolicyError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
            faults.append(Fault(
                kind,
                parse_duration(raw.get("at", 0), f"{where}.at"),
                parse_duration(raw["every"], f"{where}.every") if "every" in raw else None,
                parse_duration(raw["duration"], f"{where}.duration") if "duration" in raw else None,
            ))
        return cls(
            name=str(data.get("name", Path(source).stem)),
            description=str(data.get("description", "")),
            message_interval=parse_duration(traffic.get("message_interval", "1m"),
                                            "traffic.message_interval"),
            conversations=int(traffic.get("conversations", 10)),
            open_latency=parse_duration(network.get("open_latency", "200ms"),
                                        "network.open_latency"),
            rpc_latency=parse_duration(network.get("rpc_latency", "100ms"), "network.rpc_latency"),
            down_delay=parse_duration(network.get("down_delay", "2s"), "network.down_delay"),
            faults=tuple(faults),
        )


def builtin_scenarios() -> list[str]:
    folder = resources.files("fsm") / "scenarios"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_scenario(name_or_path: str) -> Scenario:
    """A shipped scenario by name (``flapping-10m``) or a TOML file of your own."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        return Scenario.from_toml(path.read_text(encoding="utf-8"), str(path))
    resource = resources.files("fsm") / "scenarios" / f"{name_or_path}.toml"
    if not resource.is_file():
        raise PolicyError(
            f"scenario {name_or_path!r}: not a shipped scenario ({', '.join(builtin_scenarios())})"
            " nor an existing .toml file"
        )
    return Scenario.from_toml(resource.read_text(encoding="utf-8"), name_or_path)


@dataclass
class Summary:
    scenario: str
    duration: float
    transitions: dict[tuple[str, str], int]
    restarts: int
    worst_hour_restarts: int
    time_in_state: dict[str, float]
    network_calls: int
    messages_sent: int
    messages_delivered: int
    detection_delays: list[float]
    final_state: str
    exit_code: int | None
    events: int
    alerts: int = 0
    silence_warnings: int = 0

    @property
    def calls_per_hour(self) -> float:
        return self.network_calls / (self.duration / 3600.0) if self.duration else 0.0

    def render(self) -> str:
        hours = self.duration / 3600.0
        lines = [
            f"scenario {self.scenario}: {hours:g} virtual hours, {self.events} control events",
            f"final state: {self.final_state} (exit code {self.exit_code})",
            f"restarts: {self.restarts} total, at most {self.worst_hour_restarts} in any "
            "sliding hour",
            f"supervisor network calls: {self.network_calls} ({self.calls_per_hour:.1f} per hour)",
            f"messages: {self.messages_sent} sent, {self.messages_delivered} delivered, "
            f"{self.messages_sent - self.messages_delivered} missing",
            f"alerts: {self.alerts}; silence warnings: {self.silence_warnings}",
        ]
        if self.detection_delays:
            worst = max(self.detection_delays)
            lines.append(f"silent-death detection: {len(self.detection_delays)} deaths, "
                         f"worst {worst:.0f} s")
        lines.append("time per state:")
        for state, seconds in sorted(self.time_in_state.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {state:<14} {seconds / 3600.0:10.2f} h  "
                         f"{100.0 * seconds / self.duration:6.2f} %")
        lines.append("transitions:")
        for (source, dest), n in sorted(self.transitions.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {source:>13} -> {dest:<14} {n}")
        return "\n".join(lines)


@dataclass
class _World:
    scenario: Scenario
    core: SupervisorCore
    queue: list[tuple[float, int, str, Any]] = field(default_factory=list)
    n: int = 0
    now: float = 0.0
    down: bool = False
    refuse_open: bool = False
    stream_open: bool = False
    stream_silent: bool = False
    silent_since: float | None = None
    pending_publish: int = 0
    undelivered: int = 0
    sent: int = 0
    delivered: int = 0
    network_calls: int = 0
    alerts: int = 0
    warnings: int = 0
    events: int = 0
    detection_delays: list[float] = field(default_factory=list)
    state_entered: float = 0.0
    time_in_state: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    exited: bool = False
    last_full_sync: float = -math.inf
    changed_since_sync: int = 0

    def at(self, when: float, kind: str, payload: Any = None) -> None:
        self.n += 1
        heapq.heappush(self.queue, (when, self.n, kind, payload))

    def feed(self, event: Event, data: dict[str, Any] | None = None) -> None:
        before = self.core.state
        effects = self.core.feed(event, self.now, data)
        self.events += 1
        after = self.core.state
        if after is not before:
            self.time_in_state[before.value] += self.now - self.state_entered
            self.state_entered = self.now
            if before is State.STREAMING and self.silent_since is not None:
                self.detection_delays.append(self.now - self.silent_since)
                self.silent_since = None
        self.perform(effects)

    def perform(self, effects: list[Effect]) -> None:
        sc = self.scenario
        for effect in effects:
            if isinstance(effect, ArmTimer):
                self.at(self.now + effect.delay, "timer", (effect.event, effect.token))
            elif isinstance(effect, CancelTimer):
                continue  # the core ignores stale tokens; the queue entry fires harmlessly
            elif isinstance(effect, Perform):
                self.perform_action(effect.action, sc)

    def perform_action(self, action: Action, sc: Scenario) -> None:
        if action in NETWORK_ACTIONS:
            self.network_calls += self.calls_for(action, sc)
        if action is Action.OPEN_STREAM:
            if self.down or self.refuse_open:
                self.at(self.now + sc.down_delay, "feed",
                        (Event.STREAM_OPEN_FAILED, {"error": "stream ended before it opened"}))
            else:
                self.at(self.now + sc.open_latency, "opened", None)
        elif action is Action.CLOSE_STREAM:
            self.stream_open = False
        elif action in (Action.SYNC, Action.PROBE, Action.POLL, Action.CATCH_UP):
            self.rpc(action, sc)
        elif action is Action.DRAIN:
            self.at(self.now, "feed", (Event.DRAINED, {}))
        elif action is Action.EXIT:
            self.exited = True
        elif action is Action.ALERT:
            self.alerts += 1
        elif action is Action.WARN_SILENCE:
            self.warnings += 1
        elif action is Action.HEALTH_CHECK:
            self.at(self.now, "feed", (Event.HEALTH_OK, {}))

    def calls_for(self, action: Action, sc: Scenario) -> int:
        """The runtime's cost model: opening is one call; catch-up and a full sync (at least
        every ``timers.full_sync_interval``) are one plus one per conversation; other syncs,
        probes and polls are two (welcomes + newest message of every conversation) plus one per
        conversation that changed."""
        if action is Action.OPEN_STREAM:
            return 1
        full_due = self.now - self.last_full_sync >= self.core.policy.timers.full_sync_interval
        if action is Action.CATCH_UP or full_due:
            self.last_full_sync = self.now
            self.changed_since_sync = 0
            return 1 + sc.conversations
        changed = min(sc.conversations, self.changed_since_sync)
        self.changed_since_sync = 0
        return 2 + changed

    def rpc(self, action: Action, sc: Scenario) -> None:
        failed, ok, behind = {
            Action.SYNC: (Event.SYNC_FAILED, Event.SYNC_OK, Event.SYNC_BEHIND),
            Action.PROBE: (Event.PROBE_FAILED, Event.PROBE_QUIET, Event.PROBE_BEHIND),
            Action.POLL: (Event.POLL_FAILED, Event.POLL_OK, Event.POLL_OK),
            Action.CATCH_UP: (Event.SYNC_FAILED, None, None),
        }[action]
        if self.down:
            self.at(self.now + sc.down_delay, "feed", (failed, {"error": "UNAVAILABLE"}))
            return
        missed = self.undelivered
        self.delivered += missed  # whatever the network holds is fetched and handled now
        self.undelivered = 0
        event = behind if missed else ok
        if event is not None:
            self.at(self.now + sc.rpc_latency, "feed", (event, {"missed": missed}))

    def message(self) -> None:
        self.sent += 1
        self.changed_since_sync += 1
        if self.down:
            self.pending_publish += 1  # the peer's own client publishes it when the node is back
        elif self.stream_open and not self.stream_silent:
            self.delivered += 1
            self.core.note_activity(self.now)
        else:
            self.undelivered += 1

    def fault(self, fault: Fault, starting: bool) -> None:
        kind = fault.kind
        if kind in ("stream_error", "stream_end") and starting and self.stream_open:
            self.stream_open = False
            if kind == "stream_error":
                self.at(self.now, "feed", (Event.STREAM_ERROR, {"error": "UNAVAILABLE: reset"}))
            else:
                self.at(self.now, "feed", (Event.STREAM_ENDED, {}))
        elif kind == "silent":
            if starting and self.stream_open and not self.stream_silent:
                self.stream_silent = True
                self.silent_since = self.now
        elif kind == "outage":
            self.down = starting
            if starting and self.stream_open:
                self.stream_open = False
                self.at(self.now + 0.005, "feed",
                        (Event.STREAM_ERROR, {"error": "UNAVAILABLE: connection refused"}))
            if not starting:
                self.undelivered += self.pending_publish
                self.pending_publish = 0
        elif kind == "refuse_open":
            self.refuse_open = starting


def simulate(
    scenario: Scenario,
    duration: float,
    policy: Policy | None = None,
    *,
    seed: int = 0,
    record: Any = None,
) -> Summary:
    """Run ``scenario`` for ``duration`` virtual seconds and summarise what the core did."""
    core = SupervisorCore(policy, seed=seed, record=record)
    world = _World(scenario, core)
    if scenario.message_interval > 0:
        world.at(scenario.message_interval, "message")
    for fault in scenario.faults:
        world.at(fault.at, "fault", (fault, True))
    world.at(duration, "shutdown")
    world.perform(core.start(0.0))
    world.events += 1

    while world.queue and not world.exited:
        when, _, kind, payload = heapq.heappop(world.queue)
        world.now = when
        if kind == "timer":
            event, token = payload
            if core.timers.get(event) is None or core.timers[event].token != token:
                continue  # cancelled: the runtime would have dropped it too
            world.feed(event, {"timer": token})
        elif kind == "feed":
            event, data = payload
            world.feed(event, data)
        elif kind == "opened":
            if core.state in (State.STARTING, State.RESTARTING):
                world.stream_open, world.stream_silent = True, False
                world.feed(Event.STREAM_OPENED)
        elif kind == "message":
            if when < duration:
                world.message()
                world.at(when + scenario.message_interval, "message")
        elif kind == "fault":
            fault, starting = payload
            world.fault(fault, starting)
            if starting and fault.duration is not None and fault.kind != "silent":
                world.at(when + fault.duration, "fault", (fault, False))
            if starting and fault.every is not None and when + fault.every < duration:
                world.at(when + fault.every, "fault", (fault, True))
        elif kind == "shutdown":
            world.feed(Event.SHUTDOWN)

    world.time_in_state[core.state.value] += world.now - world.state_entered
    return Summary(
        scenario=scenario.name,
        duration=duration,
        transitions=dict(core.transitions),
        restarts=len(core.restart_times),
        worst_hour_restarts=worst_window(core.restart_times, core.policy.breaker.window),
        time_in_state=dict(world.time_in_state),
        network_calls=world.network_calls,
        messages_sent=world.sent,
        messages_delivered=world.delivered,
        detection_delays=world.detection_delays,
        final_state=core.state.value,
        exit_code=core.exit_code,
        events=world.events,
        alerts=world.alerts,
        silence_warnings=world.warnings,
    )


def worst_window(times: list[float], window: float) -> int:
    """The most events inside any half-open sliding window ``(t - window, t]``."""
    worst = start = 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        worst = max(worst, end - start + 1)
    return worst
