"""Stalled: tell a quiet stream (nothing to deliver) from a dead one (the network has more)."""

from __future__ import annotations

from fsm.errors import describe
from fsm.table import Event
from handlers.effects.context import EffectContext, Outcome
from handlers.effects.fetch import fetch_missed


async def run(ctx: EffectContext) -> Outcome:
    try:
        missed = await fetch_missed(ctx, "probe")
    except Exception as exc:  # classified by the core's error table
        return Event.PROBE_FAILED, {"error": describe(exc)}
    if missed:
        return Event.PROBE_BEHIND, {"missed": missed}
    return Event.PROBE_QUIET, {}
