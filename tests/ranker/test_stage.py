"""The learned ranking stage (ranker.stage): co-visitation equals item-kNN's weighting, history
features on hand-made cases, the re-ranked list's shape, the same ranking offline (evaluate) and
online (the worker's BundleRanker), and `fusionrec train-stage`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ranker.baselines import ItemKNN
from ranker.bundle import ModelBundle
from ranker.data import Split, build_catalog, leave_one_out, user_sequences
from ranker.evaluate import _with_new_slots
from ranker.online import BundleRanker
from ranker.ranking import new_item_slots
from ranker.stage import FEATURES, CoVisitation, RankingStage, StageConfig
from ranker.stage_fit import CV_FOLDS, ROUND_TOLERANCE, _fold, fewest_rounds, stage_scores
from ranker.state import UserState
from schemas.events import EVENT_TYPE_INDEX
from shopdata.loader import load_dataset

REPO = Path(__file__).resolve().parents[2]
TYPE_NAME = {i: t for t, i in EVENT_TYPE_INDEX.items()}


def test_covisitation_keeps_item_knn_weights() -> None:
    rng = np.random.default_rng(3)
    seqs = [list(rng.integers(1, 31, size=rng.integers(2, 12))) for _ in range(200)]
    knn = ItemKNN(seqs, 30)
    cov = CoVisitation.fit([[i - 1 for i in s] for s in seqs], 30, window=3, keep=30)
    dense = np.zeros((30, 30), np.float32)
    for i in range(30):
        ok = cov.neighbours[i] >= 0
        dense[i, cov.neighbours[i][ok]] = cov.weights[i][ok]
    np.testing.assert_allclose(dense, knn.sim, rtol=1e-5, atol=1e-7)
    # a user's scores: the neighbours of the last 5 items, the latest weighted 1, older 0.7 each step
    hist = [[int(i) - 1 for i in s] for s in seqs[:7]]
    np.testing.assert_allclose(
        cov.scores(hist, 30, recent=5, decay=0.7),
        knn.scores(seqs[:7]) - 1e-6 * knn.popularity[None, :],
        rtol=1e-5,
        atol=1e-6,
    )
    # only the best `keep` neighbours stay, best first
    few = CoVisitation.fit([[i - 1 for i in s] for s in seqs], 30, window=3, keep=4)
    for i in range(30):
        best = np.sort(knn.sim[i])[::-1][:4]
        np.testing.assert_allclose(few.weights[i], best, rtol=1e-5, atol=1e-7)


def _stage(n: int = 12, dim: int = 4) -> RankingStage:
    rng = np.random.default_rng(0)
    text = rng.normal(size=(n, dim)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    cov = CoVisitation.fit([[0, 1, 2, 3], [4, 5, 6], [1, 2, 7]], n)
    cfg = StageConfig(seq_top=3, cov_top=3, text_top=3, popular_top=2, history_top=3, history_window=6)
    return RankingStage(cfg, cov, text, np.log1p(np.arange(n, dtype=np.float32)), np.arange(n) % 3)


def _col(name: str) -> int:
    return FEATURES.index(name)


def test_history_features_on_a_hand_made_user() -> None:
    stage = _stage()
    n = stage.n_rows
    vectors = np.eye(n, 5, dtype=np.float32)
    user = vectors[[2]] + vectors[[9]]
    categories = np.array([0, 1, 1, 2, 2, 2, 3, 3, 3, 1, 1, 0])
    history = [[3, 5, 3, 7]]  # 7 latest; 3 twice, last seen 2 steps back
    seq_rows = np.array([[2, 9, 0, 1]])
    cands, valid, feats = stage.features(user, vectors, categories, history, [[1, 1, 2, 4]], seq_rows)
    assert feats.shape == (1, cands.shape[1], len(FEATURES))
    assert np.unique(cands[valid]).size == valid.sum()  # each candidate once
    at = {int(c): j for j, c in enumerate(cands[0]) if valid[0, j]}
    assert {2, 9, 0} <= set(at)  # the sequential model's top 3
    assert {3, 5, 7} <= set(at)  # the user's own last 3 items
    row = feats[0]
    assert row[at[3], _col("times_seen")] == 2 and row[at[3], _col("since_seen")] == 2
    assert row[at[7], _col("times_seen")] == 1 and row[at[7], _col("since_seen")] == 1
    assert row[at[2], _col("times_seen")] == 0 and row[at[2], _col("since_seen")] == 7  # never: window + 1
    assert row[at[2], _col("seq_rank")] == 0 and row[at[9], _col("seq_rank")] == 1
    assert row[at[7], _col("seq_rank")] == 3  # not in the top 3: its length
    assert row[at[2], _col("seq_score")] == pytest.approx(1.0)
    assert row[at[7], _col("cos_last")] == pytest.approx(1.0, abs=1e-6)  # the last item itself
    assert row[at[7], _col("category_match")] == 1 and row[at[5], _col("category_match")] == 0
    assert np.all(row[:, _col("history_len")] == 4) and np.all(row[:, _col("last_type")] == 4)


def test_rerank_orders_by_model_and_appends_the_rest() -> None:
    stage = _stage()

    class ByFeature:  # a stand-in model: the negated sequential rank (best first)
        def predict(self, x: np.ndarray, num_threads: int = 1) -> np.ndarray:
            return -x[:, _col("seq_rank")] + 0.01 * x[:, _col("cos_last")]

    stage.booster = ByFeature()
    n = stage.n_rows
    vectors = np.eye(n, 5, dtype=np.float32)
    seq_rows = np.array([[4, 8, 1, 10, 11, 0], [1, 2, 3, 4, 5, 6]])
    rows, scores = stage.rerank(vectors[[4, 1]], vectors, np.zeros(n, np.int64), [[8, 9], [1]], [[1, 1], [1]], seq_rows)
    assert rows.shape == scores.shape
    assert list(rows[0, :3]) == [4, 8, 1]
    finite = scores[0][np.isfinite(scores[0])]
    assert np.all(np.diff(finite) <= 0)  # best first, duplicates (-inf) out of the way
    assert list(rows[0, -3:]) == [10, 11, 0]  # the retriever's rest, after every candidate
    assert scores[0, -3] < finite[:-3].min()
    # a row of the rest that is already a candidate is not listed twice: its second place scores -inf
    for u in range(2):
        listed = rows[u][np.isfinite(scores[u])].tolist()
        assert len(listed) == len(set(listed))
    tail = seq_rows[0, stage.config.seq_top :]
    above = rows[0, : -len(tail)][np.isfinite(scores[0, : -len(tail)])]
    assert np.isin(tail, above).any()  # this case has such a row
    assert np.isneginf(scores[0, -len(tail) :][np.isin(tail, above)]).all()


def _sampled_states(bundle: ModelBundle, split: Split) -> tuple[range, list[UserState]]:
    """About 60 of the split's users (every n-th), as the worker holds them: item ids and type names."""
    users = range(0, len(split.users), max(len(split.users) // 60, 1))
    states = [
        UserState(
            split.users[u],
            recent_items=tuple(bundle.item_ids[i - 1] for i in split.histories[u]),
            recent_types=tuple(TYPE_NAME[t] for t in split.history_types[u]),
        )
        for u in users
    ]
    return users, states


def test_offline_and_online_rank_the_same(bundles: list[Path], shop_dir: Path) -> None:
    """`evaluate`'s path (stage_scores over a split) and the worker's (BundleRanker.rank_many over
    user states) give the same top 10 with the same scores: one feature code, two callers."""
    bundle = ModelBundle.load(bundles[0])
    stage = bundle.ranking_stage()
    assert stage is not None, "the test shop's bundle should carry a ranking stage"
    dataset = load_dataset(shop_dir)
    catalog = build_catalog(dataset)
    assert catalog.ids == bundle.item_ids
    split = leave_one_out(user_sequences(dataset, catalog)).test
    full, _, _ = stage_scores(stage, bundle, split)
    ranker = BundleRanker(bundle)
    users, states = _sampled_states(bundle, split)
    online = ranker.rank_many(states, 10)
    for u, (items, source) in zip(users, online, strict=True):
        assert source == "personal"
        scores = full[u].copy()
        scores[[i - 1 for i in split.histories[u]]] = -np.inf  # the worker's policy: no seen items
        top = np.argsort(-scores, kind="stable")[:10]
        assert [s for _, s in items] == pytest.approx(scores[top].tolist(), abs=1e-5), split.users[u]
        # the same items: each listed item has, offline, the score the worker gave it, so lists differ
        # only in the order of (near-)tied items (the trees give many items the same leaves)
        row = {item: r for r, item in enumerate(bundle.item_ids)}
        offline = [float(scores[row[item]]) for item, _ in items]
        assert offline == pytest.approx([s for _, s in items], abs=1e-5), split.users[u]

    # the warm-up measures the stage's cost per user for the worker's first projections (StageShedding)
    assert ranker.warm_stage_per_user_s is None
    ranker.warm_up(batch_sizes=(1, 8), k=10, search="off")
    assert ranker.warm_stage_per_user_s is not None and 0 < ranker.warm_stage_per_user_s < 1
    plain = BundleRanker(bundle, ranking_stage=False)
    plain.warm_up(batch_sizes=(1, 8), k=10, search="off")
    assert plain.warm_stage_per_user_s is None  # no stage: nothing to project
    # a worker far behind sheds the stage (streams.batch_runner.StageShedding): the user encoder's lists
    ranker.shed_stage = True
    assert ranker.rank_many(states, 10) == BundleRanker(bundle, ranking_stage=False).rank_many(states, 10)
    assert ranker.rank_many(states, 10) != online


def test_offline_and_online_give_new_arrivals_the_same_slots(bundles: list[Path], shop_dir: Path) -> None:
    """With items the model saw no events for, `evaluate`'s lists (stage_scores + _with_new_slots)
    and the worker's (BundleRanker.rank_many) put the same kind of item at every position and the
    same scores in the same order: the new-arrival slots are one rule with two callers."""
    bundle = ModelBundle.load(bundles[0])
    stage = bundle.ranking_stage()
    assert stage is not None
    dataset = load_dataset(shop_dir)
    catalog = build_catalog(dataset)
    split = leave_one_out(user_sequences(dataset, catalog)).test
    ranker = BundleRanker(bundle)
    assert ranker.stage is not None
    fresh = np.argsort(stage.log_popularity, kind="stable")[:12]  # the least popular: "new" from here on
    for st in (stage, ranker.stage):
        st.log_popularity[fresh] = 0.0
    policy, k = ranker.policy, 20
    extra = len(new_item_slots(k, policy.new_items_after, policy.new_items_every))
    full, _, new = stage_scores(stage, bundle, split, new_share=policy.new_items_share, new_extra=extra)
    listed = _with_new_slots(full, new, split, True, policy, depth=k)
    users, states = _sampled_states(bundle, split)
    row = {item: r for r, item in enumerate(bundle.item_ids)}
    promoted = 0
    for u, (items, _) in zip(users, ranker.rank_many(states, k), strict=True):
        seen = {i - 1 for i in split.histories[u]}
        offline = [int(r) for r in np.argsort(-listed[u], kind="stable") if int(r) not in seen][:k]
        online = [row[item] for item, _ in items]
        # the same scores in the same order, and the same (score, new?) pairs: items tied on score (the
        # trees give many the same leaves) may trade places, as in the test above
        assert [s for _, s in items] == pytest.approx([float(full[u, r]) for r in offline], abs=1e-5)
        pairs = sorted((round(float(full[u, r]), 4), bool(new[u, r])) for r in offline)
        assert pairs == sorted((round(float(full[u, r]), 4), bool(new[u, r])) for r in online), split.users[u]
        by_score = [int(r) for r in np.argsort(-full[u], kind="stable") if int(r) not in seen][:k]
        promoted += any(new[u, r] and r not in by_score for r in online)  # moved up from below k
    assert promoted, "no list took a new arrival into a slot: the check above proved nothing"


def test_train_stage_cli_adds_a_stage_and_refuses_other_data(
    bundles: list[Path], shop_dir: Path, tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(bundles[0], tmp_path / "b"))
    shutil.rmtree(copy / "ranking")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith("ranking/")}
    from ranker.bundle import bundle_version

    manifest["version"] = bundle_version(manifest["files"])
    del manifest["ranking"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert ModelBundle.load(copy).ranking_stage() is None  # a bundle without a stage still loads

    cmd = [sys.executable, "-m", "fusionrec", "train-stage", "--bundle", str(copy)]
    done = subprocess.run([*cmd, "--data", str(shop_dir)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ranking stage" in done.stdout
    again = ModelBundle.load(copy)
    stage = again.ranking_stage()
    assert stage is not None and again.version != manifest["version"]
    assert stage.config.new_top == 10
    assert again.manifest["ranking"]["new_item_candidates"] == 10 and again.manifest["ranking"]["new_item_share"] == 0.2

    # the new-item settings reach the saved stage (which the worker loads) and the manifest
    opts = ["--new-item-candidates", "25", "--new-item-share", "0.4"]
    done = subprocess.run([*cmd, "--data", str(shop_dir), *opts], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    tuned = ModelBundle.load(copy)
    assert tuned.ranking_stage().config.new_top == 25  # type: ignore[union-attr]
    assert tuned.manifest["ranking"]["new_item_candidates"] == 25 and tuned.manifest["ranking"]["new_item_share"] == 0.4
    assert tuned.manifest["ranking"]["learned_as_new_items"] > again.manifest["ranking"]["learned_as_new_items"]

    other = Path(shutil.copytree(shop_dir, tmp_path / "other"))
    lines = (other / "events.csv").read_text().splitlines()
    (other / "events.csv").write_text("\n".join(lines[:-5]) + "\n")  # fewer events: other data
    bad = subprocess.run([*cmd, "--data", str(other)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "trained on data with digest" in errors[0], bad.stderr[-2000:]
    assert "Traceback" not in bad.stderr


def test_items_without_events_are_candidates_by_text() -> None:
    """The new-items retriever: items with popularity 0 (none in training, or live ones added to the
    stage) closest to the user's text profile are candidates, though no other retriever finds them."""
    stage = _stage()
    n = stage.n_rows
    far = -stage.text[7]  # a live item whose text is the opposite of the user's only item
    near = stage.text[7] * 0.9 + stage.text[6] * 0.1
    stage.add_rows(np.stack([far, near / np.linalg.norm(near)]), np.array([0, 1]))
    vectors = np.eye(n + 2, 5, dtype=np.float32)
    categories = np.zeros(n + 2, np.int64)
    seq_rows = np.array([[1, 2, 3, 4]])
    only_one = replace(stage.config, new_top=1, text_top=0, cov_top=0)
    stage.config = only_one
    cands, valid, _ = stage.features(vectors[[1]], vectors, categories, [[7]], [[1]], seq_rows)
    found = set(cands[valid].tolist())
    assert n + 1 in found and n not in found  # the nearer of the two new items, by text
    stage.config = replace(only_one, new_top=0)
    cands, valid, _ = stage.features(vectors[[1]], vectors, categories, [[7]], [[1]], seq_rows)
    assert not {n, n + 1} & set(cands[valid].tolist())


def test_candidate_counts_go_where_the_validation_targets_are() -> None:
    """choose_quotas: the slots go, step by step, to the retriever that finds the most targets not
    yet found; targets the fixed retrievers hold count as found; every retriever keeps its minimum."""
    from ranker.stage import choose_quotas

    inf = np.inf
    # co-visits find targets at ranks 5..24, the sequential model only at rank 0
    ranks = np.array([[0, inf]] * 10 + [[inf, r] for r in range(5, 25)] * 2)
    assert choose_quotas(ranks, 30) == (5, 25)
    shorter = np.array([[0, inf]] * 10 + [[inf, r] for r in range(5, 20)] * 2)  # nothing past rank 19
    assert choose_quotas(shorter, 30) == (10, 20)  # once no step gains, the rest goes to the first
    # the same targets already held by the text retriever: nothing to gain, the rest to the first
    assert choose_quotas(ranks, 30, covered=np.ones(len(ranks), bool)) == (25, 5)
    assert choose_quotas(ranks, 12) == (7, 5)  # below one step: the remainder to the sequential model
    assert sum(choose_quotas(np.full((4, 2), inf), 50)) == 50


def test_target_ranks_are_the_retrievers_orders() -> None:
    """target_ranks: the target's 0-based rank in the sequential scores, the co-visit scores (inf where
    no co-visit reaches it) and the text profile's cosines, as `features` computes them."""
    stage = _stage()
    n = stage.n_rows
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(n, 5)).astype(np.float32)
    user = rng.normal(size=(2, 5)).astype(np.float32)
    histories = [[0, 1], [4, 5]]
    targets = np.array([2, 11])
    ranks = stage.target_ranks(user, vectors, histories, targets)
    seq = user @ vectors.T
    cov = stage.covisit.scores(histories, n, stage.config.recent, stage.config.decay)
    for u, t in enumerate(targets):
        assert ranks[u, 0] == (seq[u] >= seq[u, t]).sum() - 1
        assert (ranks[u, 1] == (cov[u] >= cov[u, t]).sum() - 1) if cov[u, t] > 0 else np.isinf(ranks[u, 1])
    assert ranks[0, 1] == 0  # 2 follows 0 and 1 in the co-visits: the best-voted item
    assert np.isinf(ranks[1, 1])  # nothing co-visited with 4 or 5 reaches 11
    assert 0 <= ranks[0, 2] < n


def test_the_ranker_keeps_the_fewest_rounds_within_the_tolerance_of_the_best() -> None:
    curve = [0.30, 0.35, 0.399, 0.40, 0.401, 0.3985]
    assert fewest_rounds(curve, 0.005) == 3  # 0.399 >= 0.401 * 0.995 = 0.398995
    assert fewest_rounds(curve, 0.0) == 5  # no tolerance: the best round itself
    assert fewest_rounds([0.2], 0.005) == 1
    with pytest.raises(ValueError, match="empty"):
        fewest_rounds([], 0.005)


def test_a_fitted_stage_records_the_rounds_it_kept_and_the_best(bundles: list[Path]) -> None:
    ranking = ModelBundle.load(bundles[0]).manifest["ranking"]
    assert 1 <= ranking["rounds"] <= ranking["rounds_at_best"]
    assert ranking["early_stopping_ndcg@10"] >= ranking["early_stopping_ndcg@10_best"] * (1 - ROUND_TOLERANCE) - 1e-6
    assert ModelBundle.load(bundles[0]).ranking_stage().booster.current_iteration() == ranking["rounds"]  # type: ignore[union-attr]
    # the rounds come from every cross-validation fold, and the shipped model learned from every user
    assert ranking["cv_folds"] == CV_FOLDS
    assert ranking["train_users"] == ranking["users_with_target_in_candidates"]


def test_the_shipped_stage_counts_every_event_before_the_test_targets(bundles: list[Path], shop_dir: Path) -> None:
    """The ranker learns with co-visits and popularity counted on the training sequences (as they
    were before its validation targets); the stage it ships counts the validation targets too, as
    item-kNN fitted on the same events does (on a hold-out of Scientific: production NDCG@10 1.22x ->
    1.26x item-kNN)."""
    from ranker.data import build_catalog, leave_one_out, user_sequences
    from shopdata.loader import load_dataset

    bundle = ModelBundle.load(bundles[0])
    stage = bundle.ranking_stage()
    assert stage is not None and bundle.manifest["protocol"] == "leave-one-out"
    ds = load_dataset(shop_dir)
    catalog = build_catalog(ds)
    data = leave_one_out(user_sequences(ds, catalog))
    assert list(bundle.item_ids) == list(catalog.ids)  # rows in catalog order
    n = len(catalog.ids)
    given = np.bincount([i - 1 for s in data.given for i in s], minlength=n)
    trained = np.bincount([i - 1 for s in data.train for i in s], minlength=n)
    assert given.sum() > trained.sum() + len(data.valid.targets) - 1  # the validation targets, short users too
    assert np.allclose(stage.log_popularity[:n], np.log1p(given))
    ranking = bundle.manifest["ranking"]
    assert ranking["statistics_events"] == int(given.sum())
    assert ranking["statistics_from"] == "every event before the test targets"
    # no test target is counted: every event of the data less those counted are exactly the test targets
    test = np.bincount([int(t) - 1 for t in data.test.targets], minlength=n)
    everything = np.bincount([i - 1 for s in user_sequences(ds, catalog).values() for i in s[0]], minlength=n)
    assert np.array_equal(everything - given, test)


def test_cross_validation_folds_are_stable_and_spread() -> None:
    users = [f"u{i}" for i in range(2000)]
    folds = [_fold(u, CV_FOLDS) for u in users]
    assert folds == [_fold(u, CV_FOLDS) for u in users]  # the same on every run
    counts = np.bincount(folds, minlength=CV_FOLDS)
    assert counts.min() > 0.8 * len(users) / CV_FOLDS
