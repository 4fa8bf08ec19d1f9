"""A worker-local cache of user states in front of the store (the source of truth).

Why it is safe: events are keyed by user, so one user's events come from one partition, and one
worker owns a partition at a time; while it owns it, nobody else writes that user's state, so its
own last write is the current state. Each entry remembers the partition its state came from, and
is a hit only for events of that same partition (a topic given more partitions moves keys: a user
whose events now arrive elsewhere is read again).

Ownership changes only at a rebalance:
- a revoke suspends the cache (`suspend`: nothing is a hit until the next assignment);
- an assignment in the group generation right after the last one this worker took part in keeps
  the entries of the partitions it owned in both (`retain`): nobody else owned them in between, as
  every generation's assignment is one decision of the group's leader;
- any other assignment (a generation missed: this worker was out of the group for a while, another
  may have owned its partitions), or an unknown generation, drops everything (`invalidate`).
Puts from a batch that began before a rebalance are dropped. A crash loses the cache, which is the
same as a miss. Entries enter only after their writes succeeded. Bounded (LRU), so memory does not
grow with the user base.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping, Sequence

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
        # user -> (cache generation, state, source partition or None when the caller gave none)
        self._entries: OrderedDict[str, tuple[int, UserState, str | None]] = OrderedDict()
        self._lock = threading.Lock()  # rebalance callbacks run on the event loop, batches in a worker thread

    def invalidate(self) -> None:
        """Partition ownership may have changed in ways this worker cannot see: nothing cached can be trusted."""
        with self._lock:
            self.generation += 1
            self._entries.clear()

    def suspend(self) -> None:
        """Partitions revoked: no entry is a hit, and no put from before lands, until `retain` or
        `invalidate` decides which entries the new assignment keeps."""
        with self._lock:
            self.generation += 1

    def retain(self, partitions: Collection[str]) -> int:
        """Keep only the entries of `partitions` (owned without a gap since they were written), valid
        in a new generation; returns how many were kept."""
        with self._lock:
            self.generation += 1
            kept: OrderedDict[str, tuple[int, UserState, str | None]] = OrderedDict()
            for user, (_, state, partition) in self._entries.items():
                if partition is not None and partition in partitions:
                    kept[user] = (self.generation, state, partition)
            self._entries = kept
            return len(kept)

    def get_many(
        self, user_ids: Sequence[str], partitions: Mapping[str, str] | None = None
    ) -> tuple[dict[str, UserState], list[str]]:
        """(cached states of this generation, the users to read from the store). `partitions`: the
        partition each user's events now come from; an entry from another partition is a miss."""
        found: dict[str, UserState] = {}
        missing: list[str] = []
        with self._lock:
            for u in user_ids:
                entry = self._entries.get(u)
                if (
                    entry is not None
                    and entry[0] == self.generation
                    and (partitions is None or entry[2] == partitions.get(u))
                ):
                    self._entries.move_to_end(u)
                    found[u] = entry[1]
                else:
                    missing.append(u)
        self.hits += len(found)
        self.misses += len(missing)
        return found, missing

    def put_many(
        self, states: Iterable[UserState], generation: int, partitions: Mapping[str, str] | None = None
    ) -> None:
        """Remember states written under `generation` (dropped when a rebalance came in between), each
        with the partition its events came from (`partitions`; without it the entry survives no
        rebalance)."""
        with self._lock:
            if generation != self.generation:
                return
            for s in states:
                where = partitions.get(s.user_id) if partitions is not None else None
                self._entries[s.user_id] = (generation, s, where)
                self._entries.move_to_end(s.user_id)
            while len(self._entries) > self.max_users:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
