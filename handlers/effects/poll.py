"""Graceful degradation: while the stream is down, sync and fetch after the cursors. What a
poll finds is expected (there is no stream to miss it), so found or not, the poll is ok."""

from __future__ import annotations

from fsm.table import Event
from handlers.effects.context import EffectContext, Outcome
from handlers.effects.fetch import judged


async def run(ctx: EffectContext) -> Outcome:
    return await judged(ctx, "poll", failed=Event.POLL_FAILED, quiet=Event.POLL_OK,
                        behind=Event.POLL_OK)
