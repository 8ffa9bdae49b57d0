"""Shared by catch-up, sync, probe and poll: sync, then fetch each conversation from the
lookback window behind its cursor, in order, through the message path (which drops what was
already handled, so a message the stream skipped between others is still found).

"Missed" counts messages the network holds that the stream never delivered and that are older
than a grace period (a message sent a moment ago may still be on its way down the stream); a
sync that finds any means the stream is dead even though the client never said so.

A fetch that starts while a freshly opened stream's messages are held releases them when it ends
(done, failed or cancelled): everything older has been submitted in order by then, and the held
ones that it already delivered are dropped as duplicates.
"""

from __future__ import annotations

import time

from fsm.errors import describe
from fsm.table import Event
from handlers.effects.context import EffectContext, Outcome
from xmtp_supervisor.message_path import Verdict

NEW = (Verdict.ACCEPTED, Verdict.UNDECODABLE)


async def fetch_missed(ctx: EffectContext, kind: str, *, full: bool = True) -> int:
    """Deliver whatever the stream missed; returns how many were older than the grace period.

    ``full`` syncs and re-reads every conversation; otherwise only those whose newest message on
    the network is newer than what was seen (one batch call). Raises what the network raised when
    nothing at all could be synced.
    """
    hold = ctx.held_inbound()
    try:
        return await _fetch(ctx, kind, full=full)
    finally:
        if hold is not None:
            ctx.release_inbound(hold)


async def _fetch(ctx: EffectContext, kind: str, *, full: bool) -> int:
    started_ns = time.time_ns()
    try:
        if full:
            conversation_ids = await ctx.network.sync_conversations()
        else:
            conversation_ids = await ctx.network.changed_conversations(ctx.seen_times())
    except Exception:
        ctx.rpc(kind, False)
        ctx.outbox.offline()  # new replies queue without blocking their handler for seconds
        raise
    ctx.rpc(kind, True)
    missed = 0
    for conversation_id in conversation_ids:
        after = ctx.read_from(conversation_id)
        for message in await ctx.network.fetch_after(conversation_id, after):
            ctx.note_seen(conversation_id, message.sent_at_ns)
            verdict = await ctx.path.submit(message)
            if verdict in NEW and message.sent_at_ns < started_ns - ctx.missed_grace_ns:
                missed += 1
    if missed:
        ctx.log.warning("stream_missed_messages", kind=kind, missed=missed)
    ctx.outbox.wake()  # the network answered: pending replies may go now
    return missed


async def judged(
    ctx: EffectContext, kind: str, *, failed: Event, quiet: Event, behind: Event
) -> Outcome:
    """Run :func:`fetch_missed` and name the outcome: failed (with the error for the core's
    error table), behind (the stream missed messages) or quiet."""
    full = ctx.full_sync_due()
    try:
        missed = await fetch_missed(ctx, kind, full=full)
    except Exception as exc:
        return failed, {"error": describe(exc)}
    if full:
        ctx.full_sync_done()
    return (behind, {"missed": missed}) if missed else (quiet, {})
