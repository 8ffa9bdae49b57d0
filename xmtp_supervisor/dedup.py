"""A bounded set of processed message ids: the hot path's first line against duplicates.

libxmtp has been seen streaming every message twice (libxmtp #1023), and catch-up re-fetches what
the stream may already have delivered, so each id is checked here. The set is bounded so memory
stays flat; once an id is evicted, the durable per-conversation cursor still rejects old messages.
"""

from __future__ import annotations

from itertools import islice

from fsm.policy import Dedup


class DedupSet:
    """Remembers up to ``max_ids`` ids; when full, forgets the oldest ``evict`` at once.

    A dict keeps insertion order, so membership, insertion and eviction of the oldest are O(1) per
    id (eviction in bulk amortises the cost over ``evict`` insertions).
    """

    __slots__ = ("_evict", "_ids", "_max_ids", "evicted")

    def __init__(self, max_ids: int = 500, evict: int = 250) -> None:
        if max_ids < 1 or not 1 <= evict <= max_ids:
            raise ValueError(f"need 1 <= evict <= max_ids, got max_ids={max_ids} evict={evict}")
        self._max_ids = max_ids
        self._evict = evict
        self._ids: dict[str, None] = {}
        self.evicted = 0
        """How many ids were forgotten so far (for metrics)."""

    @classmethod
    def from_policy(cls, policy: Dedup) -> DedupSet:
        """The set sized by ``Policy.dedup``."""
        return cls(policy.max_ids, policy.evict)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def size(self) -> int:
        """How many ids are remembered now (exported as a gauge)."""
        return len(self._ids)

    def add(self, message_id: str) -> bool:
        """Remember ``message_id``; False when it was already known (a duplicate)."""
        ids = self._ids
        if message_id in ids:
            return False
        if len(ids) >= self._max_ids:
            self._evict_oldest()
        ids[message_id] = None
        return True

    def _evict_oldest(self) -> None:
        ids = self._ids
        oldest = list(islice(ids, self._evict))
        for message_id in oldest:
            del ids[message_id]
        self.evicted += len(oldest)

    def snapshot(self) -> list[str]:
        """The remembered ids, oldest first (for tests and debugging)."""
        return list(self._ids)
