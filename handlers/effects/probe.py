"""Stalled: tell a quiet stream (nothing to deliver) from a dead one (the network has more)."""

from __future__ import annotations

from fsm.table import Event
from handlers.effects.context import EffectContext, Outcome
from handlers.effects.fetch import judged


async def run(ctx: EffectContext) -> Outcome:
    return await judged(ctx, "probe", failed=Event.PROBE_FAILED, quiet=Event.PROBE_QUIET,
                        behind=Event.PROBE_BEHIND)
