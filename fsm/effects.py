"""What the sans-I/O core asks the runtime to do: perform an action, arm or cancel a timer."""

from __future__ import annotations

from dataclasses import dataclass

from fsm.table import Action, Event


@dataclass(frozen=True, slots=True)
class Perform:
    """Run the handler for ``action``; its outcome comes back as an event."""

    action: Action


@dataclass(frozen=True, slots=True)
class ArmTimer:
    """Deliver ``event`` with ``{"timer": token}`` after ``delay`` seconds, unless cancelled."""

    event: Event
    token: int
    delay: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    event: Event
    token: int


Effect = Perform | ArmTimer | CancelTimer
