"""The breaker opened or failures reached the alert threshold: one alert event (and webhook)."""

from __future__ import annotations

from handlers.effects.context import EffectContext, Outcome


async def run(ctx: EffectContext) -> Outcome | None:
    ctx.alert("breaker_open_or_failures", {})
    return None
