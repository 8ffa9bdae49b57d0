"""Close the current stream, if any; its late callbacks are ignored (a new generation)."""

from __future__ import annotations

from handlers.effects.context import EffectContext, Outcome


async def run(ctx: EffectContext) -> Outcome | None:
    stream = ctx.set_stream(None)
    if stream is not None:
        await stream.close()
    return None
