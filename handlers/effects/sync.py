"""The periodic sync, which is also a probe: messages it finds that the stream never
delivered mean the stream is dead, so a silent stall is caught within one sync interval."""

from __future__ import annotations

from fsm.table import Event
from handlers.effects.context import EffectContext, Outcome
from handlers.effects.fetch import judged


async def run(ctx: EffectContext) -> Outcome:
    return await judged(ctx, "sync", failed=Event.SYNC_FAILED, quiet=Event.SYNC_OK,
                        behind=Event.SYNC_BEHIND)
