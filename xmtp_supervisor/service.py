"""Assemble a supervised agent with its operations layer: the same wiring for ``run`` and ``demo``.

Everything runs in the runtime's one task group: the core's scheduler and control queue, the
message path, the outbox, and here the loop heartbeat, the HTTP endpoint, the systemd notifier
and the alert webhook.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup

from fsm.policy import Policy
from fsm.table import State
from handlers.api import Router
from xmtp_supervisor.alerts import Alerter, check_memory
from xmtp_supervisor.http_endpoint import LoopHeartbeat, serve
from xmtp_supervisor.logs import get_logger, log_transition
from xmtp_supervisor.metrics import Metrics
from xmtp_supervisor.runtime import Clock, RuntimeHooks, Supervisor
from xmtp_supervisor.sdnotify import SystemdNotifier
from xmtp_supervisor.store import Store
from xmtp_supervisor.xmtp_adapter import Network


@dataclass
class Service:
    """A supervisor plus its metrics, alerts, endpoint and systemd integration."""

    supervisor: Supervisor
    metrics: Metrics
    alerter: Alerter
    notifier: SystemdNotifier
    heartbeat: LoopHeartbeat
    http_port: int | None = None
    on_http_ready: list[Callable[[int | None], None]] = field(default_factory=list)

    async def run(self) -> int:
        code = await self.supervisor.run()
        self.alerter.close()
        self.notifier.close()
        return code


def build_service(
    policy: Policy,
    network: Network,
    store: Store,
    router: Router,
    *,
    clock: Clock | None = None,
    handle_signals: bool = True,
    seed: int | None = None,
) -> Service:
    metrics = Metrics([s.value for s in State])
    alerter = Alerter(policy, metrics)
    notifier = SystemdNotifier()
    heartbeat = LoopHeartbeat()
    log = get_logger("xmtp_supervisor.service")
    # read when the supervisor is built: the message path times handlers only with an observer
    hooks = RuntimeHooks(latency=metrics.handler_latency.observe)
    sup = Supervisor(policy, network, store, router, clock=clock, seed=seed, hooks=hooks,
                     handle_signals=handle_signals)
    service = Service(sup, metrics, alerter, notifier, heartbeat)

    def on_record(record: dict[str, Any]) -> None:
        log_transition(record)
        metrics.observe_record(record)
        alerter.observe_record(record)
        if record["source"] != record["dest"] or record["event"] == "start":
            if record["dest"] == State.SHUTTING_DOWN.value:
                notifier.stopping(f"shutting down: {record['event']}")  # STOPPING=1 at once
            else:
                notifier.on_state(record["dest"], record["event"])
        metrics.set_consecutive_failures(sup.core.book.rpc_failures)

    def rpc(kind: str, ok: bool) -> None:
        metrics.rpc(kind, ok)
        if ok:
            alerter.record_success()
        else:
            alerter.record_failure(kind, state=sup.state)

    def health() -> dict[str, Any]:
        sizes = {"dedup": len(sup.path.dedup), "outbox": sup.outbox.pending,
                 "transitions": len(sup.recent), "backlog": sup.path.backlog,
                 "inbound": sup.inbound_queued}
        capacities = {"dedup": policy.dedup.max_ids, "transitions": sup.recent.maxlen}
        report = check_memory(metrics, policy, sizes, capacities)
        return {"rss_bytes": report.rss_bytes, "over_ceiling": report.over_ceiling}

    def alert(reason: str, detail: dict[str, Any]) -> None:
        # The table's ALERT actions coincide with what the alerter already raises from the
        # records (breaker opening) and the RPC outcomes (consecutive failures); it owns
        # de-duplication and delivery, so the action only leaves a debug trace here.
        log.debug("alert_action", reason=reason, state=sup.state, **detail)

    def refresh() -> None:
        metrics.sync_message_counters(sup.path.counters.as_dict())
        metrics.set_restarts_in_window(sup.restarts_in_window)
        metrics.set_bounded_size("dedup", len(sup.path.dedup), policy.dedup.max_ids)
        cursors = store.cursors()
        if cursors:
            newest = max(c.sent_at_ns for c in cursors.values())
            metrics.set_cursor_lag(time.time() - newest / 1e9)

    async def start_ops(tg: TaskGroup) -> None:
        tg.start_soon(heartbeat.run)
        tg.start_soon(alerter.run)
        tg.start_soon(notifier.watchdog_loop, heartbeat.healthy)
        service.http_port = await tg.start(serve, sup, metrics, policy, heartbeat)
        for callback in service.on_http_ready:
            callback(service.http_port)

    hooks.on_record.append(on_record)
    hooks.rpc = rpc
    hooks.health = health
    hooks.alert = alert
    hooks.services.append(start_ops)
    metrics.refreshers.append(refresh)
    return service


async def wait_for_state(sup: Supervisor, states: set[str], timeout: float) -> bool:
    """Poll the supervisor's state (demo and tests): True once it is in one of ``states``."""
    with anyio.move_on_after(timeout):
        while sup.state not in states:
            await anyio.sleep(0.05)
        return True
    return False
