"""Open the all-messages stream; it counts as open only once libxmtp says it is ready.

What the new stream delivers is held until the catch-up behind the cursors has run: a message
sent while no stream listened must reach its handler before a newer one the stream brings.
"""

from __future__ import annotations

from fsm.errors import describe
from fsm.table import Event
from handlers.effects.context import EffectContext, Outcome


async def run(ctx: EffectContext) -> Outcome:
    on_message, on_error, on_close = ctx.stream_callbacks()
    hold = ctx.hold_inbound()
    opened = False
    try:
        stream = await ctx.network.open_stream(on_message, on_error, on_close)
        opened = True
    except Exception as exc:  # every failure to open is an event for the core
        ctx.rpc("open_stream", False)
        return Event.STREAM_OPEN_FAILED, {"error": str(exc) or describe(exc)}
    finally:
        if not opened:  # failed or cancelled: no catch-up follows to release the hold
            ctx.release_inbound(hold)
    ctx.rpc("open_stream", True)
    ctx.outbox.wake()  # the node answers again: send what was queued
    previous = ctx.set_stream(stream)
    if previous is not None:
        await previous.close()
    return Event.STREAM_OPENED, {}
