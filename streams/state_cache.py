"""A worker-local cache of user states in front of the store (the source of truth).

Why it is safe: events are keyed by user, so one user's events come from one partition, and one
worker owns a partition at a time; while it owns it, nobody else writes that user's state, so its
own last write is the current state. Ownership changes only at a rebalance, and every rebalance
bumps `generation`: entries from an older generation are misses and are read again from the
store. A crash loses the cache, which is the same as a miss. Entries enter only after their
writes succeeded. Bounded (LRU), so memory does not grow with the user base.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from ranker.state import UserState

__all__ = ["StateCache"]


class StateCache:
    def __init__(self, max_users: int = 200_000) -> None:
        if max_users < 1:
            raise ValueError("max_users must be >= 1")
        self.max_users = max_users
        self.generation = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, tuple[int, UserState]] = OrderedDict()
        self._lock = threading.Lock()  # rebalance callbacks run on the event loop, batches in a worker thread

    def invalidate(self) -> None:
        """Partition ownership may have changed (rebalance): nothing cached can be trusted."""
        with self._lock:
            self.generation += 1
            self._entries.clear()

    def get_many(self, user_ids: Sequence[str]) -> tuple[dict[str, UserState], list[str]]:
        """(cached states of this generation, the users to read from the store)."""
        found: dict[str, UserState] = {}
        missing: list[str] = []
        with self._lock:
            for u in user_ids:
                entry = self._entries.get(u)
                if entry is not None and entry[0] == self.generation:
                    self._entries.move_to_end(u)
                    found[u] = entry[1]
                else:
                    missing.append(u)
        self.hits += len(found)
        self.misses += len(missing)
        return found, missing

    def put_many(self, states: Iterable[UserState], generation: int) -> None:
        """Remember states written under `generation`; dropped when a rebalance came in between."""
        with self._lock:
            if generation != self.generation:
                return
            for s in states:
                self._entries[s.user_id] = (generation, s)
                self._entries.move_to_end(s.user_id)
            while len(self._entries) > self.max_users:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
