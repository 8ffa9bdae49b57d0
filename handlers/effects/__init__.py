"""Effect handlers: one module per action of the transition table, named after what it does.

Each exposes ``async def run(ctx: EffectContext) -> Outcome | None``; the outcome is the event
the core is fed next (``None`` when the action has nothing to report). :data:`HANDLERS` maps
every :class:`fsm.table.Action` to its handler; a test checks that none is missing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fsm.table import Action
from handlers.effects import (
    alert,
    catch_up,
    close_stream,
    drain,
    health_check,
    open_stream,
    poll,
    probe,
    sync,
    warn_silence,
)
from handlers.effects.context import EffectContext, Outcome

Handler = Callable[[EffectContext], Awaitable[Outcome | None]]

HANDLERS: dict[Action, Handler] = {
    Action.OPEN_STREAM: open_stream.run,
    Action.CLOSE_STREAM: close_stream.run,
    Action.CATCH_UP: catch_up.run,
    Action.SYNC: sync.run,
    Action.PROBE: probe.run,
    Action.POLL: poll.run,
    Action.HEALTH_CHECK: health_check.run,
    Action.WARN_SILENCE: warn_silence.run,
    Action.ALERT: alert.run,
    Action.DRAIN: drain.run,
}
"""``Action.EXIT`` has no handler: the runtime itself ends when the core reaches its final state."""

__all__ = ["HANDLERS", "EffectContext", "Handler", "Outcome"]
