"""The periodic sync, which is also a probe: messages it finds that the stream never
delivered mean the stream is dead, so a silent stall is caught within one sync interval."""

from __future__ import annotations

from fsm.errors import describe
from fsm.table import Event
from handlers.effects.context import EffectContext, Outcome
from handlers.effects.fetch import fetch_missed


async def run(ctx: EffectContext) -> Outcome:
    try:
        missed = await fetch_missed(ctx, "sync")
    except Exception as exc:  # classified by the core's error table
        return Event.SYNC_FAILED, {"error": describe(exc)}
    if missed:
        return Event.SYNC_BEHIND, {"missed": missed}
    return Event.SYNC_OK, {}
