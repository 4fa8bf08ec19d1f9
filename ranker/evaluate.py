"""`fusionrec evaluate`: full-ranking evaluation of a bundle beside baselines, scored by the same code
in the same run, under each protocol (PROTOCOLS). No torch: the bundle's ONNX user encoder does the work.

- published: every catalog item is a candidate, nothing removed (RecBole's full ranking, the
  protocol of the UniSRec / VQ-Rec / MISSRec figures);
- production: the user's history is removed from the candidates; a target in the history cannot be
  shown, so it is a miss (what a shop that never re-recommends a seen item gets);
- cold-items: production, over the users whose target is one of the items the bundle was trained
  without (`fusionrec train --cold-items`); absent for a bundle without them.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ranker.baselines import ItemKNN, popularity_scores, text_profile_scores
from ranker.bundle import PRETRAINED_TEXT, ModelBundle
from ranker.data import Catalog, Split, SplitData, build_catalog, holdout_split, leave_one_out, user_sequences
from ranker.metrics import summarize, target_ranks
from ranker.ranking import RankingPolicy, with_new_item_slots
from ranker.stage_fit import stage_scores
from schemas.errors import ConfigError
from shopdata.loader import Dataset

__all__ = ["PROTOCOLS", "evaluate", "read_holdout"]

log = logging.getLogger("fusionrec.evaluate")

#: positions of each list that follow the worker's new-arrival slots: the longest cut-off any metric reads
SLOT_DEPTH = 50

#: Protocol name -> one line for the report.
PROTOCOLS = {
    "published": "full ranking over every catalog item, nothing removed (RecBole; the papers' protocol)",
    "production": "full ranking, the user's history removed from the candidates; a target in the history is a miss",
    "cold-items": "production, over users whose target is an item held out of training (`train --cold-items`)",
}


def read_holdout(path: Path) -> list[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not {"user_id", "item_id"} <= set(reader.fieldnames or []):
            raise ValueError(f"{path}: a hold-out file has columns user_id,item_id (got {reader.fieldnames})")
        return [(r["user_id"], r["item_id"]) for r in reader]


def _crosses(split: Split, catalog: Catalog) -> np.ndarray:
    cats = catalog.categories
    return np.array([cats[t] not in {cats[i] for i in h} for t, h in zip(split.targets, split.histories, strict=True)])


def _score_model(
    scores: np.ndarray, split: Split, catalog: Catalog, remove_history: bool
) -> tuple[dict[str, float], np.ndarray]:
    exclude = [[i - 1 for i in h] for h in split.histories] if remove_history else None
    ranks, n_cand = target_ranks(scores, split.targets - 1, exclude)
    masked = scores.copy()
    for u, rows in enumerate(exclude or []):
        masked[u, rows] = -np.inf
    k = min(10, catalog.n_items - 1)
    top10 = np.argpartition(-masked, k, axis=1)[:, :10] if len(masked) else np.zeros((0, 10), np.int64)
    return summarize(ranks, n_cand, top10, catalog.n_items, _crosses(split, catalog)), ranks


def _with_new_slots(
    scores: np.ndarray, new: np.ndarray, split: Split, remove_history: bool, policy: RankingPolicy, depth: int = 0
) -> np.ndarray:
    """`scores` [users, n_items] re-ordered as the worker lists them with the new-arrival slots
    (RankingPolicy.new_items_*, ranker.ranking.with_new_item_slots) over each user's first `depth`
    positions (default SLOT_DEPTH, the longest list the metrics read), after the history is removed
    when the protocol removes it: those positions get scores above every other item, in their new
    order; the rest keep theirs. `new`: [users, n_items] the new items worth a slot for that user
    (ranker.stage_fit.stage_scores)."""
    masked = scores.copy()
    if remove_history:
        for u, h in enumerate(split.histories):
            masked[u, [i - 1 for i in h]] = -np.inf
    d = min(depth or SLOT_DEPTH, scores.shape[1])
    eligible_all = new & np.isfinite(masked)
    width = min(d + int(eligible_all.sum(axis=1).max(initial=0)), scores.shape[1])
    if d == 0 or width == 0:
        return scores
    # each user's first d items and every new item worth a slot, best first: what the slots draw from
    key = np.where(eligible_all, np.inf, masked)
    top = np.argpartition(-key, width - 1, axis=1)[:, :width]
    order = np.argsort(-np.take_along_axis(masked, top, axis=1), axis=1, kind="stable")
    rows = np.take_along_axis(top, order, axis=1)
    picked = np.take_along_axis(masked, rows, axis=1)
    eligible = np.take_along_axis(eligible_all, rows, axis=1)
    rows, picked = with_new_item_slots(rows, picked, eligible, d, policy.new_items_after, policy.new_items_every)
    rows, picked = rows[:, :d], picked[:, :d]
    finite = np.isfinite(picked)
    best = np.where(finite, picked, -np.inf).max(axis=1, initial=0.0)
    lifted = best[:, None] + 1.0 + (d - np.arange(d, dtype=np.float64))[None, :]
    users = np.broadcast_to(np.arange(len(rows))[:, None], rows.shape)
    out = scores.astype(np.float64)
    out[users[finite], rows[finite]] = lifted[finite]
    return out


def _subset(split: Split, rows: list[int]) -> Split:
    return Split(
        users=[split.users[r] for r in rows],
        histories=[split.histories[r] for r in rows],
        history_types=[split.history_types[r] for r in rows],
        targets=split.targets[rows],
    )


def _to_row(bundle: ModelBundle, catalog: Catalog) -> np.ndarray:
    """Bundle row of each catalog item (catalog index - 1 -> row)."""
    row = {item_id: r for r, item_id in enumerate(bundle.item_ids)}
    missing = [i for i in catalog.ids if i not in row]
    if missing:
        raise ValueError(f"{len(missing)} catalog items are unknown to bundle {bundle.version}, e.g. {missing[:3]}")
    return np.array([row[i] for i in catalog.ids])


def _rows_split(bundle: ModelBundle, split: Split, catalog: Catalog) -> Split:
    """The split with its histories and targets as 1-based bundle rows (row + 1)."""
    to_row = _to_row(bundle, catalog)
    return Split(
        users=split.users,
        histories=[[int(to_row[i - 1]) + 1 for i in h] for h in split.histories],
        history_types=split.history_types,
        targets=to_row[split.targets - 1] + 1,
    )


def _in_catalog_order(bundle: ModelBundle, catalog: Catalog, scores: np.ndarray) -> np.ndarray:
    return scores[:, _to_row(bundle, catalog)]


def _bundle_scores(bundle: ModelBundle, split: Split, catalog: Catalog) -> np.ndarray:
    """The bundle's user encoder alone (no ranking stage), in catalog order."""
    rows = _rows_split(bundle, split, catalog)
    scores = bundle.scores([[i - 1 for i in h] for h in rows.histories], rows.history_types)
    return _in_catalog_order(bundle, catalog, scores)


def evaluate(
    dataset: Dataset, bundle_dir: Path, holdout: Path | None = None, policy: RankingPolicy = RankingPolicy()
) -> dict[str, Any]:
    """Every model under every protocol (module docstring). `policy`: the new-arrival slots the
    worker's lists follow (its worker.new_items_* settings), applied to `fusionrec`'s lists here too."""
    started = time.perf_counter()
    catalog = build_catalog(dataset)
    seqs = user_sequences(dataset, catalog)
    data: SplitData = holdout_split(seqs, read_holdout(holdout), catalog) if holdout else leave_one_out(seqs)
    split = data.test
    # the baselines count every event before the test targets, as the bundle's ranking stage does
    # (SplitData.given): item-kNN fitted on fewer events than the model would flatter the model
    train_for_baselines = data.given or data.train
    bundle = ModelBundle.load(bundle_dir)
    trained_on = bundle.manifest.get("protocol")
    if holdout is None and trained_on == "all-but-last":
        raise ConfigError(
            f"{bundle_dir} was trained with --protocol all-but-last: it learned from each user's last event, "
            "which leave-one-out would score as the test target; evaluate it with --holdout FILE, or train "
            "with --protocol leave-one-out to score this split"
        )
    if holdout is not None and trained_on == "leave-one-out":
        log.warning(
            "evaluate_holdout bundle=%s protocol=leave-one-out: its model never learned from each user's last two "
            "given events; `train --protocol all-but-last` learns from every event but the last (for a hold-out "
            "and for deployment)",
            bundle_dir,
        )
    cold_ids = set(bundle.manifest.get("cold_items", {}).get("items", []))
    index = catalog.index()
    cold = {index[i] for i in cold_ids if i in index}
    if cold:  # the baselines learn without them too: co-occurrence cannot know an item never seen
        train_for_baselines = [[i for i in seq if i not in cold] for seq in train_for_baselines]
    text = np.load(bundle_dir / "text_vectors.npy") if (bundle_dir / "text_vectors.npy").is_file() else None
    stage = bundle.ranking_stage(threads=0)
    new_slots: dict[str, np.ndarray] = {}  # model -> [users, n_items] new items worth a slot
    scorers: dict[str, Callable[[], np.ndarray]] = {}
    if stage is not None:
        rows_split = _rows_split(bundle, split, catalog)
        extra = len(policy.new_slots(SLOT_DEPTH))
        full, _, new = stage_scores(stage, bundle, rows_split, new_share=policy.new_share, new_extra=extra)
        fused = _in_catalog_order(bundle, catalog, full)
        del full
        scorers["fusionrec"] = lambda: fused
        if new.any():  # the lists with their new-arrival slots, and without them beside
            new_slots["fusionrec"] = _in_catalog_order(bundle, catalog, new)
            scorers["fusionrec:no-new-slots"] = lambda: fused
    else:
        scorers["fusionrec"] = lambda: _bundle_scores(bundle, split, catalog)
    scorers |= {
        "popularity": lambda: np.array(popularity_scores(train_for_baselines, catalog.n_items, len(split.users))),
        "item-knn": lambda: ItemKNN(train_for_baselines, catalog.n_items).scores(split.histories),
    }
    if stage is not None:  # each retriever of the ranking stage alone: what the learned stage adds
        scorers["retriever:sequential"] = lambda: _bundle_scores(bundle, split, catalog)
        scorers["retriever:co-visit"] = lambda: _in_catalog_order(
            bundle,
            catalog,
            stage.covisit.scores(
                [[i - 1 for i in h] for h in _rows_split(bundle, split, catalog).histories],
                len(bundle.item_ids),
                stage.config.recent,
                stage.config.decay,
            ),
        )

    def text_only(vectors: np.ndarray) -> Callable[[], np.ndarray]:
        padded = np.vstack([np.zeros((1, vectors.shape[1]), np.float32), vectors])
        return lambda: text_profile_scores(split.histories, padded)

    pretrained = bundle_dir / PRETRAINED_TEXT
    if pretrained.is_file():  # a tuned tower: text-only stays the pretrained encoder, the tuned one beside it
        if text is not None:
            scorers["text-only:tuned"] = text_only(text)
        text = np.load(pretrained)
    if text is not None:
        scorers["text-only"] = text_only(text)
    for name, variant in bundle.variants().items():
        scorers[f"fusion:{name}"] = lambda v=variant: _bundle_scores(v, split, catalog)  # type: ignore[misc]
    cold_rows = [r for r, t in enumerate(split.targets) if int(t) in cold]
    cold_split = _subset(split, cold_rows)
    protocols: dict[str, dict[str, Any]] = {
        p: {"description": d, "results": {}, "n_users": len(split.users)} for p, d in PROTOCOLS.items()
    }
    if cold:
        protocols["cold-items"].update(n_users=len(cold_rows), n_cold_items=len(cold))
    else:
        del protocols["cold-items"]
    ranks: dict[str, dict[str, np.ndarray]] = {p: {} for p in protocols}
    for name, fn in scorers.items():
        scores = fn()
        new_ = new_slots.get(name)
        for p, remove in (("published", False), ("production", True)):
            listed = scores if new_ is None else _with_new_slots(scores, new_, split, remove, policy)
            protocols[p]["results"][name], ranks[p][name] = _score_model(listed, split, catalog, remove)
        if cold:
            part = scores[cold_rows]
            if new_ is not None:
                part = _with_new_slots(part, new_[cold_rows], cold_split, True, policy)
            protocols["cold-items"]["results"][name], ranks["cold-items"][name] = _score_model(
                part, cold_split, catalog, True
            )
    chosen = bundle.manifest.get("chosen_variant", "fusionrec")
    alone = "retriever:sequential" if stage is not None else "fusionrec"  # the chosen variant, before any stage
    for p in protocols:
        protocols[p]["results"][f"fusion:{chosen}"] = protocols[p]["results"][alone]
        ranks[p][f"fusion:{chosen}"] = ranks[p][alone]
    lengths = np.array([len(h) for h in split.histories])
    return {
        "protocol": "holdout" if holdout else "leave-one-out",
        "n_users": len(split.users),
        "n_items": catalog.n_items,
        "bundle": bundle.version,
        "chosen_variant": chosen,
        "ranking_stage": bundle.manifest.get("ranking"),
        "new_item_slots": {
            "after": policy.new_items_after,
            "every": policy.new_items_every,
            "share": policy.new_items_share,
        },
        "seconds": round(time.perf_counter() - started, 1),
        "results": protocols["production"]["results"],  # before protocols existed: kept for old readers
        "protocols": protocols,
        "_ranks": ranks["production"],
        "_protocol_ranks": ranks,
        "_history_lengths": lengths,
    }
