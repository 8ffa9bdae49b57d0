"""What the operations layer reads from the running supervisor.

The runtime implements :class:`SupervisorView`; the HTTP endpoint only reads it, from the same event
loop, so plain attributes are enough (no locking, no copies beyond what ``recent_transitions``
returns).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

READY_STATES: frozenset[str] = frozenset({"streaming", "polling"})
"""States in which messages are being received; ``/readyz`` answers 200 only in these."""


@runtime_checkable
class SupervisorView(Protocol):
    """A read-only view of the supervisor for ``/readyz`` and ``/status``.

    Times are ``time.monotonic()`` seconds, the clock the runtime's timers use; the endpoint turns
    them into ages and wall-clock timestamps.
    """

    @property
    def state(self) -> str:
        """The current state name, as in the transition table."""
        ...

    @property
    def state_since(self) -> float:
        """Monotonic time the current state was entered."""
        ...

    @property
    def state_reason(self) -> str:
        """Why the supervisor is in this state (the last trigger or error, already log-safe)."""
        ...

    @property
    def started_at(self) -> float:
        """Monotonic time the supervisor started."""
        ...

    @property
    def restarts_in_window(self) -> int:
        """Restarts counted in the breaker's sliding window."""
        ...

    @property
    def counters(self) -> Mapping[str, int]:
        """Running totals (messages received/handled/deduplicated/failed, restarts, ...)."""
        ...

    def recent_transitions(self, n: int) -> list[dict[str, Any]]:
        """The last ``n`` transition records, oldest first, JSON-serialisable."""
        ...


class TransitionHistory:
    """The last ``maxlen`` transition records, for ``/status``; bounded so it never grows.

    Usable directly as (part of) the core's ``record`` hook; ``recent`` backs
    :meth:`SupervisorView.recent_transitions`.
    """

    def __init__(self, maxlen: int = 200) -> None:
        self.maxlen = maxlen
        self._records: deque[dict[str, Any]] = deque(maxlen=maxlen)

    def __call__(self, record: Mapping[str, Any]) -> None:
        self._records.append(dict(record))

    def __len__(self) -> int:
        return len(self._records)

    def recent(self, n: int) -> list[dict[str, Any]]:
        """The last ``n`` records, oldest first."""
        if n <= 0:
            return []
        return list(self._records)[-n:]
