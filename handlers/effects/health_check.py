"""Record the process's health: RSS and the size of every bounded structure. Local only: the
network's health is judged by syncs and the stream, not by extra calls."""

from __future__ import annotations

from fsm.table import Event
from handlers.effects.context import EffectContext, Outcome


async def run(ctx: EffectContext) -> Outcome:
    report = ctx.health()
    if report.get("over_ceiling"):
        return Event.HEALTH_FAILED, {"rss_bytes": report.get("rss_bytes", 0)}
    return Event.HEALTH_OK, {}
