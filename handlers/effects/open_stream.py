"""Open the all-messages stream; it counts as open only once libxmtp says it is ready."""

from __future__ import annotations

from fsm.errors import describe
from fsm.table import Event
from handlers.effects.context import EffectContext, Outcome


async def run(ctx: EffectContext) -> Outcome:
    on_message, on_error, on_close = ctx.stream_callbacks()
    try:
        stream = await ctx.network.open_stream(on_message, on_error, on_close)
    except Exception as exc:  # every failure to open is an event for the core
        ctx.rpc("open_stream", False)
        return Event.STREAM_OPEN_FAILED, {"error": str(exc) or describe(exc)}
    ctx.rpc("open_stream", True)
    ctx.outbox.wake()  # the node answers again: send what was queued
    previous = ctx.set_stream(stream)
    if previous is not None:
        await previous.close()
    return Event.STREAM_OPENED, {}
