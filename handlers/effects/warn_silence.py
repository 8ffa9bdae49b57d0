"""Silent past ``activity_warn_after``: a warning, once per silent spell; no action."""

from __future__ import annotations

from handlers.effects.context import EffectContext, Outcome


async def run(ctx: EffectContext) -> Outcome | None:
    ctx.log.warning("stream_silent", warn_after_s=ctx.policy.timers.activity_warn_after)
    return None
