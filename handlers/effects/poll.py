"""Graceful degradation: while the stream is down, sync and fetch after the cursors."""

from __future__ import annotations

from fsm.errors import describe
from fsm.table import Event
from handlers.effects.context import EffectContext, Outcome
from handlers.effects.fetch import fetch_missed


async def run(ctx: EffectContext) -> Outcome:
    try:
        fetched = await fetch_missed(ctx, "poll")
    except Exception as exc:  # classified by the core's error table
        return Event.POLL_FAILED, {"error": describe(exc)}
    return Event.POLL_OK, {"missed": fetched}
