"""Shutting down: stop taking messages, let in-flight handlers finish up to the deadline, close
the stream, flush the cursors."""

from __future__ import annotations

from fsm.table import Event
from handlers.effects import close_stream
from handlers.effects.context import EffectContext, Outcome


async def run(ctx: EffectContext) -> Outcome:
    # 80 %: the core's drain_deadline timer is the backstop, this leaves time to flush
    budget = ctx.policy.timers.drain_deadline * 0.8
    started = ctx.now()
    result = await ctx.path.drain(budget)
    # replies still pending stay in the store and are resumed by the next start
    await ctx.outbox.drain(max(0.0, budget - (ctx.now() - started)))
    await close_stream.run(ctx)
    return Event.DRAINED, {"finished": result.finished, "cut": result.cut}
