"""A batch's results as plain rows: what the worker's writer process receives, and what the
Cassandra store binds directly. No driver import here, so any store's writer can use it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from ranker.state import UserState, state_from_dict, state_to_dict
from schemas.recommendations import RecommendationList, ScoredItem

__all__ = ["result_rows", "results_from_rows"]


def result_rows(lists: Sequence[RecommendationList], states: Sequence[UserState]) -> list[list[Any]]:
    """One row of plain values per user: [user_id, item_ids, scores, model_version, config_digest,
    source, generated_at (ms), newest_event_ts, state JSON]; list fields are None for a user with a
    state only, and the state None for a list only. JSON-serialisable."""
    states_by_user = {s.user_id: s for s in states}
    rows: list[list[Any]] = []
    for r in lists:
        s = states_by_user.pop(r.user_id, None)
        rows.append([
            r.user_id, [i.item_id for i in r.items], [i.score for i in r.items], r.model_version, r.config_digest,
            r.source, r.generated_at, r.newest_event_ts,
            None if s is None else orjson.dumps(state_to_dict(s)).decode(),
        ])  # fmt: skip
    for s in states_by_user.values():
        rows.append([s.user_id, None, None, None, None, None, None, None, orjson.dumps(state_to_dict(s)).decode()])
    return rows


def results_from_rows(rows: Sequence[Sequence[Any]]) -> tuple[list[RecommendationList], list[UserState]]:
    """The inverse of `result_rows` (for stores that take objects)."""
    lists: list[RecommendationList] = []
    states: list[UserState] = []
    for user_id, ids, scores, version, digest, source, generated_at, newest, state in rows:
        if ids is not None:
            lists.append(
                RecommendationList(
                    user_id=user_id,
                    items=tuple(ScoredItem(i, s) for i, s in zip(ids, scores, strict=True)),
                    model_version=version,
                    config_digest=digest,
                    generated_at=generated_at,
                    newest_event_ts=newest,
                    source=source,
                )
            )
        if state is not None:
            states.append(state_from_dict(orjson.loads(state)))
    return lists, states
