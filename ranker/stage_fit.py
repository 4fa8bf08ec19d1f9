"""Training the ranking stage (ranker.stage) on the validation targets of a bundle's own split.

Leakage: the sequential model never trained on a validation target (it only early-stopped on
them), and the co-visitation is fitted on the training sequences alone, so the features of a
validation candidate are what they would be for an unseen next purchase. Test targets are never
read. The number of boosting rounds is chosen by cross-validation over the validation users (folds
by a hash of their id); the model that ships then learns from all of them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from encoders.session import create_session
from ranker.bundle import ModelBundle, fuse_items, write_manifest
from ranker.data import (
    Split,
    build_catalog,
    cold_item_ids,
    drop_cold_items,
    leave_one_out,
    train_all_but_last,
    user_sequences,
)
from ranker.stage import FEATURES, RETRIEVERS, CoVisitation, RankingStage, StageConfig, choose_quotas, top_rows
from shopdata.loader import Dataset

__all__ = ["add_ranking_stage", "fewest_rounds", "fit_stage", "stage_scores"]

log = logging.getLogger("fusionrec.stage")

#: users with their validation target among the candidates needed for training (and a quarter as
#: many for early stopping); below that the bundle ranks with the sequential model alone
MIN_USERS = 40

#: the ranker's number of boosting rounds is chosen by this many folds of the validation users (each
#: early-stopped on its own fold, their curves averaged); the shipped model then learns from them all
CV_FOLDS = 5

#: users scored per chunk (features are [users, candidates, features] and [users, candidates, text dim])
CHUNK = 512

#: share of the trained items the ranker learns from as if they were new (no popularity, no co-visits,
#: fused without their ID embedding): every validation target is an item with events, so without them
#: the ranker would learn that an item without events never wins, and bury every new item
NEW_ITEM_SHARE = 0.2

#: the sequential and co-visit candidate counts move from their defaults only when counts chosen on
#: validation find this much more of its targets (relative): Scientific +7% (0.257 -> 0.276, kept), a shop
#: with long repetitive histories (bench/long_shop.py) +32% (0.496 -> 0.654, moved)
QUOTA_MIN_GAIN = 0.1
#: the ranker keeps the fewest boosting rounds whose held-out NDCG@10 is within this share of the best:
#: the worker evaluates every tree for every candidate, and the curve is flat near its top (one fit of
#: the same data stopped at 47 rounds, another at 102, for the same quality)
ROUND_TOLERANCE = 0.005


def _fold(user: str, folds: int) -> int:
    """The user's cross-validation fold, by a hash of the id (the same on every run)."""
    return int(hashlib.sha256(user.encode()).hexdigest()[:8], 16) % folds


def _lgb_set(
    lgb: Any, xs: list[np.ndarray], ys: list[np.ndarray], sizes: list[int], keep: np.ndarray, reference: Any = None
) -> Any:
    """A LightGBM ranking dataset of the users (query groups) where `keep` is true."""
    picked = np.flatnonzero(keep)
    return lgb.Dataset(
        np.vstack([xs[i] for i in picked]),
        np.concatenate([ys[i] for i in picked]),
        group=[sizes[i] for i in picked],
        feature_name=list(FEATURES),
        reference=reference,
    )


def stage_scores(
    stage: RankingStage,
    bundle: ModelBundle,
    split: Split,
    progress: bool = False,
    new_share: float = 0.0,
    new_extra: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(full-ranking scores [users, n_items], sequential-model scores [users, n_items]) in bundle
    row order for `split` (1-based catalog indices = row + 1): the stage's candidates get their
    model scores, every other item its sequential score far below them. What `evaluate` scores.
    Third: [users, n_items] the new items worth a slot in each list (RankingStage.new_eligible at
    `new_share`, among the stage's rows and `new_extra` more new items, as RankingStage.rerank_new
    gives them to the worker; all False at 0)."""
    n = len(bundle.item_ids)
    full = np.empty((len(split.users), n), dtype=np.float32)
    seq_all = np.empty((len(split.users), n), dtype=np.float32)
    new_all = np.zeros((len(split.users), n), dtype=bool)
    for lo in range(0, len(split.users), CHUNK):
        hist = [[i - 1 for i in h] for h in split.histories[lo : lo + CHUNK]]
        types = split.history_types[lo : lo + CHUNK]
        vectors = bundle.user_vectors(hist, types)
        seq = vectors @ bundle.item_vectors.T
        seq_all[lo : lo + len(hist)] = seq
        seq_rows = top_rows(seq, stage.config.seq_top)
        rows, scores, new = stage.rerank_new(
            vectors, bundle.item_vectors, bundle.item_categories, hist, types, seq_rows, new_share, new_extra
        )
        block = seq - 1e4  # below any model score
        finite = np.isfinite(scores)
        u = np.repeat(np.arange(len(hist)), rows.shape[1]).reshape(rows.shape)
        block[u[finite], rows[finite]] = scores[finite]  # an unscored new arrival keeps its text-order score
        full[lo : lo + len(hist)] = block
        new &= finite
        new_all[lo + u[new], rows[new]] = True
        if progress:
            log.info("stage_scores users=%d/%d", min(lo + CHUNK, len(split.users)), len(split.users))
    return full, seq_all, new_all


def fewest_rounds(curve: Sequence[float], tolerance: float) -> int:
    """The fewest rounds (1-based) whose score is within `tolerance` (a share) of the curve's best."""
    if not curve:
        raise ValueError("an empty validation curve")
    floor = max(curve) * (1.0 - tolerance)
    return next(i + 1 for i, score in enumerate(curve) if score >= floor)


def _pretend_new(item_ids: Sequence[str], counts: np.ndarray, share: float) -> np.ndarray:
    """[n] bool: items with events that the ranker learns from as new ones, by a hash of the id (salted:
    not the cold-items protocol's hash, so they are other items than a cold bundle's held-out ones)."""
    picked = set(cold_item_ids(item_ids, share, salt=b"stage-new:"))
    return np.array([i in picked for i in item_ids], dtype=bool) & (counts > 0)


def _counts(rows: Sequence[Sequence[int]], n: int) -> np.ndarray:
    """[n] events per bundle row in `rows` (0-based sequences)."""
    return np.bincount(np.fromiter((r for s in rows for r in s), dtype=np.int64), minlength=n)[:n]


def _fused_as_new(bundle: ModelBundle, rows: np.ndarray, text: np.ndarray, brands: np.ndarray) -> np.ndarray:
    """The bundle's item vectors for `rows` as the items topic would fuse them new: text (the bundle's
    text vectors), category and brand through item_fusion.onnx, no ID embedding, popularity bucket 0."""
    session = create_session(bundle.folder / "item_fusion.onnx")
    feed = {
        "text_vectors": text[rows],
        "item_rows": np.zeros(len(rows), np.int64),
        "categories": bundle.item_categories[rows].astype(np.int64),
        "brands": brands[rows].astype(np.int64),
        "pop_buckets": np.zeros(len(rows), np.int64),
    }
    return fuse_items(session, feed)


def fit_stage(
    bundle: ModelBundle,
    train: Sequence[Sequence[int]],
    valid: Split,
    brands: np.ndarray,
    *,
    config: StageConfig = StageConfig(),
    seed: int = 0,
    threads: int = 0,
    rounds: int = 500,
    new_item_share: float = NEW_ITEM_SHARE,
    choose: bool = True,
    given: Sequence[Sequence[int]] | None = None,
) -> tuple[RankingStage, dict[str, Any]]:
    """The stage for `bundle`: the ranker learns from `valid`'s targets with co-visitation and
    popularity counted on `train` (1-based sequences), as they were before those targets; the stage
    it returns counts them on `given` (SplitData.given: every event before the test targets, the
    validation targets included; default `train`), so it ranks with the shop's latest events, as a
    deployed model and item-kNN do. `brands`: brand index per bundle row. Returns (stage, info for
    stage.json).

    The ranker learns from features where `new_item_share` of the items look new (_pretend_new:
    popularity 0, out of the co-visitation, fused as new items, in users' histories too); the stage
    it returns has every item's real popularity and co-visits. With `choose`, the candidate counts of
    the sequential and co-visit retrievers (their sum as in `config`; the text retriever's is kept)
    are chosen on the same validation targets (ranker.stage.choose_quotas) and saved with the stage
    when they hold QUOTA_MIN_GAIN more of them than the defaults."""
    import lightgbm as lgb

    started = time.perf_counter()
    n = len(bundle.item_ids)
    rows = [[i - 1 for i in s] for s in train]
    covisit = CoVisitation.fit(rows, n, config.window, config.neighbours)
    counts = _counts(rows, n)
    text_path = bundle.folder / "text_vectors.npy"
    text = np.load(text_path).astype(np.float32) if text_path.is_file() else np.zeros((n, 1), np.float32)
    log_pop = np.log1p(counts.astype(np.float32))
    stage = RankingStage(config, covisit, text, log_pop, brands, threads=threads)
    learn, item_vectors = stage, bundle.item_vectors
    pretend = _pretend_new(bundle.item_ids, counts, new_item_share) if new_item_share > 0 else np.zeros(n, bool)
    if pretend.any() and (bundle.folder / "item_fusion.onnx").is_file() and text_path.is_file():
        kept = [[r for r in s if not pretend[r]] for s in rows]
        learn = RankingStage(
            config,
            CoVisitation.fit(kept, n, config.window, config.neighbours),
            text,
            np.where(pretend, 0.0, log_pop).astype(np.float32),
            brands,
            threads=threads,
        )
        item_vectors = bundle.item_vectors.copy()
        item_vectors[pretend] = _fused_as_new(bundle, np.flatnonzero(pretend), text, np.asarray(brands))
    else:
        pretend[:] = False
    chunks = []
    ranks = []
    for lo in range(0, len(valid.users), CHUNK):
        hist = [[i - 1 for i in h] for h in valid.histories[lo : lo + CHUNK]]
        types = valid.history_types[lo : lo + CHUNK]
        vectors = bundle.encoder.encode_rows(item_vectors, hist, types, batch_size=512)
        chunks.append((lo, hist, types, vectors))
        if choose:
            ranks.append(learn.target_ranks(vectors, item_vectors, hist, valid.targets[lo : lo + CHUNK] - 1))
    quota_info: dict[str, Any] = {}
    if choose and ranks:
        every = np.vstack(ranks)
        text_hit = every[:, 2] < config.text_top
        default = (config.seq_top, config.cov_top)
        chosen = choose_quotas(every[:, :2], sum(default), covered=text_hit)
        recall = {
            q: float((text_hit | (every[:, :2] < np.array(q)[None, :]).any(axis=1)).mean()) for q in (default, chosen)
        }
        # the defaults stay unless the shop's validation says they miss much: a small gain in candidate
        # recall is within what the ranker's own noise gives and costs items without events their places
        quotas = chosen if recall[chosen] >= recall[default] * (1.0 + QUOTA_MIN_GAIN) else default
        config = replace(config, **{f"{r}_top": q for r, q in zip(RETRIEVERS, quotas, strict=True)})
        stage.config = learn.config = config
        quota_info = {
            "quotas": dict(zip(RETRIEVERS, quotas, strict=True)),
            "quota_recall": {"default": round(recall[default], 5), "best": round(recall[chosen], 5)},
        }
        log.info(
            "ranking_stage candidate counts %s: validation targets among the candidates %.3f with the "
            "defaults %s, %.3f with the best counts %s",
            quotas,
            recall[default],
            default,
            recall[chosen],
            chosen,
        )
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    sizes: list[int] = []
    folds: list[int] = []
    found = 0
    for lo, hist, types, vectors in chunks:
        seq_rows = top_rows(vectors @ item_vectors.T, config.seq_top)
        cands, ok, feats = learn.features(vectors, item_vectors, bundle.item_categories, hist, types, seq_rows)
        targets = valid.targets[lo : lo + CHUNK] - 1
        for u in range(len(hist)):
            label = (cands[u] == targets[u]) & ok[u]
            if not label.any():
                continue  # the target is in no retriever's candidates: nothing to learn about the order
            found += 1
            xs.append(feats[u][ok[u]])
            ys.append(label[ok[u]].astype(np.int32))
            sizes.append(int(ok[u].sum()))
            folds.append(_fold(valid.users[lo + u], CV_FOLDS))
    if found < MIN_USERS + MIN_USERS // 4:
        raise ValueError(
            f"only {found} validation users have their target among the candidates: too few to train a "
            f"ranking stage (at least {MIN_USERS + MIN_USERS // 4})"
        )
    params = {
        "objective": "lambdarank",
        "metric": "ndcg",
        "ndcg_eval_at": [10],
        "learning_rate": 0.05,
        "num_leaves": 31,
        "min_data_in_leaf": 50,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambdarank_truncation_level": 20,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": threads,
        "verbose": -1,
    }
    fold_of = np.array(folds)
    curves = []
    for k in range(CV_FOLDS):
        inside = fold_of == k
        if not inside.any() or inside.all():
            continue  # a tiny shop: a fold without users (or with all of them) says nothing
        train_set = _lgb_set(lgb, xs, ys, sizes, ~inside)
        valid_set = _lgb_set(lgb, xs, ys, sizes, inside, reference=train_set)
        curve: dict[str, Any] = {}
        lgb.train(
            params,
            train_set,
            rounds,
            valid_sets=[valid_set],
            callbacks=[lgb.early_stopping(40, verbose=False), lgb.record_evaluation(curve)],
        )
        curves.append(np.asarray(curve["valid_0"]["ndcg@10"], dtype=np.float64))
    if not curves:
        raise ValueError("every validation user fell in one cross-validation fold: nothing to choose the rounds on")
    # the folds' curves averaged over the rounds every fold ran: one fold's curve was noisy (the same
    # data once stopped at 47 rounds, once at 102; a cold-items bundle at 7), their mean much less so
    span = min(len(c) for c in curves)
    mean_curve = np.mean([c[:span] for c in curves], axis=0)
    at_best = int(np.argmax(mean_curve)) + 1
    best = fewest_rounds(list(mean_curve[:at_best]), ROUND_TOLERANCE)
    # the model that ships learns from every user, for the rounds the folds chose
    final = lgb.train(params, _lgb_set(lgb, xs, ys, sizes, np.ones(len(sizes), bool)), best)
    if given is not None:
        shipped = [[i - 1 for i in s] for s in given]
        stage = RankingStage(
            config,
            CoVisitation.fit(shipped, n, config.window, config.neighbours),
            text,
            np.log1p(_counts(shipped, n).astype(np.float32)),
            brands,
            threads=threads,
        )
    stage.booster = lgb.Booster(model_str=final.model_to_string())
    stage.threads = 1
    info = {
        "trained_on": "validation targets (each user's second-to-last event); test targets never read",
        "users": len(valid.users),
        "users_with_target_in_candidates": found,
        "candidate_recall": round(found / max(len(valid.users), 1), 5),
        **quota_info,
        "new_item_share": new_item_share,
        "new_item_candidates": config.new_top,
        "learned_as_new_items": int(pretend.sum()),
        "learned_as_new_targets": int(sum(bool(pretend[t - 1]) for t in valid.targets)),
        # what the shipped co-visitation and popularity were counted on (the ranker learned from `train`'s)
        "statistics_events": int(sum(len(s) for s in (train if given is None else given))),
        "statistics_from": "training sequences" if given is None else "every event before the test targets",
        "train_users": found,
        "cv_folds": len(curves),
        "rounds": best,
        "rounds_at_best": at_best,
        "early_stopping_ndcg@10": round(float(mean_curve[best - 1]), 6),
        "early_stopping_ndcg@10_best": round(float(mean_curve[at_best - 1]), 6),
        "seconds": round(time.perf_counter() - started, 1),
        "importance_gain": {
            f: round(float(v), 1) for f, v in zip(FEATURES, stage.booster.feature_importance("gain"), strict=True)
        },
    }
    log.info(
        "ranking_stage rounds=%d candidate_recall=%.3f seconds=%.0f", best, info["candidate_recall"], info["seconds"]
    )
    return stage, info


def add_ranking_stage(
    dataset: Dataset,
    out: Path,
    seed: int | None = None,
    config: StageConfig = StageConfig(),
    new_item_share: float = NEW_ITEM_SHARE,
) -> dict[str, Any]:
    """(Re)fit the ranking stage of the bundle at `out` on the data it was trained on (same split,
    same cold items), without retraining the sequential model; rewrites ranking/ and the manifest
    (a new version). ValueError when `dataset` is not the bundle's training data."""
    bundle = ModelBundle.load(out)
    info = {k: v for k, v in bundle.manifest.items() if k not in {"format", "version", "files", "role"}}
    trained_on = info.get("data", {}).get("digest")
    if trained_on != dataset.digest():
        raise ValueError(
            f"{out} was trained on data with digest {trained_on}, not {dataset.name} ({dataset.digest()}): "
            "the ranking stage must learn from the bundle's own validation split"
        )
    catalog = build_catalog(dataset)
    seqs = user_sequences(dataset, catalog)
    data = leave_one_out(seqs) if info.get("protocol") == "leave-one-out" else train_all_but_last(seqs)
    index = catalog.index()
    data = drop_cold_items(data, {index[i] for i in info.get("cold_items", {}).get("items", [])})
    stage, stage_info = fit_stage(
        bundle,
        data.train,
        data.valid,
        catalog.brands[1:],
        config=config,
        seed=info.get("seed", 0) if seed is None else seed,
        new_item_share=new_item_share,
        given=data.given,
    )
    if (out / "ranking").exists():
        shutil.rmtree(out / "ranking")
    stage.save(out / "ranking", {k: v for k, v in stage_info.items() if k != "seconds"})
    for key in ("ranking_seconds", "onnx_top10_agreement", "fit_seconds"):
        info.pop(key, None)
    manifest = write_manifest(out, {**info, "ranking": {k: v for k, v in stage_info.items() if k != "seconds"}})
    extra: dict[str, Any] = {
        k: bundle.manifest[k] for k in ("onnx_top10_agreement", "fit_seconds") if k in bundle.manifest
    }
    manifest.update({**extra, "ranking_seconds": stage_info["seconds"]})
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest
