"""Handlers for the chaos matrix's agent subprocess (``xmtp-supervisor run --handlers``).

Every call is appended to ``$CHAOS_EVENTS`` (one JSON line at start and at end, flushed), so the
test sees what a process that was killed had done. Messages listed in ``$CHAOS_SLOW`` sleep
``$CHAOS_SLOW_S`` seconds before replying: a slow handler for SIGTERM to interrupt.
"""

from __future__ import annotations

import json
import os

import anyio

from handlers.api import MessageContext, Router

router = Router()
_SLOW = {int(n) for n in os.environ.get("CHAOS_SLOW", "").split(",") if n}
_SLOW_S = float(os.environ.get("CHAOS_SLOW_S", "0"))


def _note(n: int, what: str) -> None:
    with open(os.environ["CHAOS_EVENTS"], "a", encoding="utf-8") as events:
        events.write(json.dumps({"n": n, "ev": what, "pid": os.getpid()}) + "\n")
        events.flush()
        os.fsync(events.fileno())


@router.on_text
async def numbered(ctx: MessageContext) -> None:
    """Note ``n:<k>``, maybe sleep, reply ``echo:<k>``."""
    if not ctx.text.startswith("n:"):
        return
    n = int(ctx.text[2:])
    _note(n, "start")
    if n in _SLOW:
        await anyio.sleep(_SLOW_S)
    await ctx.reply(f"echo:{n}")
    _note(n, "end")
