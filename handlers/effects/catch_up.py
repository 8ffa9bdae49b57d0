"""After every (re)connect: deliver what arrived while the stream was not listening."""

from __future__ import annotations

from fsm.errors import describe
from fsm.table import Event
from handlers.effects.context import EffectContext, Outcome
from handlers.effects.fetch import fetch_missed


async def run(ctx: EffectContext) -> Outcome | None:
    try:
        await fetch_missed(ctx, "catch_up", full=True)
    except Exception as exc:  # the next sync retries; the core counts it
        return Event.SYNC_FAILED, {"error": describe(exc)}
    ctx.full_sync_done()
    return None
