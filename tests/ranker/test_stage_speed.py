"""The ranking stage's fast paths equal their plain definitions: the block-floor top-k, the ranks by
binary search, the chunked candidate cosines, the sparse text profile, and the compiled trees
(ranker.stage_compiled) against LightGBM's own predict, cached and not."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
from scipy import sparse

from ranker.bundle import ModelBundle
from ranker.stage import (
    FEATURES,
    CoVisitation,
    RankingStage,
    _cosines_to,
    _profile_weights,
    _rank_in,
    _weighted_sum,
    top_rows,
)
from ranker.stage_compiled import compiled_predictor

REPO = Path(__file__).resolve().parents[2]


def _reference_top(scores: np.ndarray, k: int, positive: bool = False) -> np.ndarray:
    """The definition: best first, ties by the lower row; with `positive` only scores > 0, -1 after."""
    out = np.full((scores.shape[0], min(k, scores.shape[1])), -1, dtype=np.int64)
    for u, row in enumerate(scores):
        order = np.lexsort((np.arange(len(row)), -row))
        if positive:
            order = order[row[order] > 0]
        out[u, : min(len(order), out.shape[1])] = order[: out.shape[1]]
    return out


@pytest.mark.parametrize("n,k", [(4385, 20), (50, 20), (7, 20), (1000, 1), (33, 33)])
def test_top_equals_its_definition(n: int, k: int) -> None:
    rng = np.random.default_rng(n + k)
    scores = rng.normal(size=(40, n)).astype(np.float32)
    scores[:, ::3] = np.round(scores[:, ::3], 1)  # many exact ties, at the boundary too
    scores[5] = 0.25  # a row of one value
    assert (top_rows(scores, k) == _reference_top(scores, k)).all()
    sparse_like = np.where(rng.random((40, n)) < 0.01, np.abs(scores), 0).astype(np.float32)
    sparse_like[3] = 0  # a user with no co-visits: all -1
    got = top_rows(sparse_like, k, positive=True)
    assert (got == _reference_top(sparse_like, k, positive=True)).all()
    assert (got[3] == -1).all()


def test_rank_in_equals_its_definition() -> None:
    rng = np.random.default_rng(3)
    cands = np.sort(rng.integers(0, 300, size=(50, 40)), axis=1)
    top = rng.integers(-1, 300, size=(50, 12))
    top[:, 7] = top[:, 2]  # listed twice: the first position counts
    want = np.full(cands.shape, 12.0, dtype=np.float32)
    for u in range(len(cands)):
        for j, c in enumerate(cands[u]):
            hits = np.flatnonzero(top[u] == c)
            if len(hits):
                want[u, j] = hits[0]
    assert (_rank_in(cands, top) == want).all()
    assert (_rank_in(cands, top[:, :0]) == 0).all()


def test_cosines_and_profiles_equal_their_definitions() -> None:
    rng = np.random.default_rng(4)
    text = rng.normal(size=(200, 16)).astype(np.float32)
    cands = rng.integers(0, 200, size=(37, 9))  # 37 users: chunks of 16, 16 and 5
    recent = rng.integers(0, 200, size=(37, 3))
    want = np.einsum("urd,ucd->urc", text[recent], text[cands])
    assert np.allclose(_cosines_to(text, recent, cands), want, atol=1e-5)

    histories = [[3, 5, 3, 9], [7], [], [1, 2]]  # a row seen twice sums its weights; a user with none
    rows, weights = _profile_weights(histories, 0.8)
    dense = np.zeros((len(histories), 200))
    np.add.at(dense, (np.arange(len(histories))[:, None].repeat(rows.shape[1], 1), rows), weights)
    for u, h in enumerate(histories):
        expect = np.zeros(200)
        if h:
            w = 0.8 ** np.arange(len(h) - 1, -1, -1)
            np.add.at(expect, h, w / w.sum())
        assert np.allclose(dense[u], expect, atol=1e-6)
    # gathered a few users at a time: the same as the dense product, chunk edges included
    assert np.allclose(_weighted_sum(rows, weights, text, chunk=3), dense @ text, atol=1e-5)


def test_covisit_scores_equal_the_sparse_product_to_the_bit() -> None:
    """The users' votes (latest 1, each step back x decay; a row repeated sums) times the neighbour
    matrix, as scipy computes it: the numpy path must not move any candidate or feature."""
    rng = np.random.default_rng(7)
    n, m = 300, 12
    nb = np.full((n, m), -1, dtype=np.int32)
    wt = np.zeros((n, m), dtype=np.float32)
    for i in range(n):
        k = int(rng.integers(0, m + 1))
        nb[i, :k] = rng.choice(n, size=k, replace=False)
        wt[i, :k] = rng.random(k)
    covisit = CoVisitation(nb, wt)
    histories = [list(rng.integers(0, n, size=int(rng.integers(0, 9)))) for _ in range(60)]
    histories += [[4, 4, 4, 7], [], [n + 5, 3]]  # repeats; none; a live row beyond the fitted ones
    n_rows = n + 10
    users, items, votes = [], [], []
    for u, h in enumerate(histories):
        last = [r for r in h[-4:] if r < n]
        users += [u] * len(last)
        items += last
        votes += list(0.7 ** np.arange(len(last) - 1, -1, -1, dtype=np.float32))
    a = sparse.csr_matrix((np.asarray(votes, np.float32), (users, items)), shape=(len(histories), n_rows))
    src = np.repeat(np.arange(n), m)
    ok = nb.ravel() >= 0
    b = sparse.csr_matrix((wt.ravel()[ok], (src[ok], nb.ravel()[ok].astype(np.int64))), shape=(n_rows, n_rows))
    want = np.asarray((a @ b).todense(), dtype=np.float32)
    assert np.array_equal(covisit.scores(histories, n_rows, 4, 0.7), want)


def _trained_model(bundles: list[Path]) -> Path:
    bundle = ModelBundle.load(bundles[0])
    assert bundle.has_ranking_stage(), "the test shop's bundle should carry a ranking stage"
    return bundle.folder / "ranking" / "model.txt"


def test_compiled_trees_score_as_lightgbm(bundles: list[Path], tmp_path: Path) -> None:
    model = _trained_model(bundles)
    booster = lgb.Booster(model_file=str(model))
    rng = np.random.default_rng(5)
    feats = rng.normal(size=(3000, booster.num_feature())).astype(np.float32) * 5
    want = booster.predict(feats, num_threads=1)

    predict = compiled_predictor(model, threads=1, cache=tmp_path / "cache")
    assert predict is not None, "lleaves is a dependency: the compiled path should be taken"
    assert np.allclose(predict(feats), want, atol=1e-9)
    cached = list((tmp_path / "cache").glob("*.o"))
    assert len(cached) == 1 and not list((tmp_path / "cache").glob(".*.tmp"))
    again = compiled_predictor(model, threads=2, cache=tmp_path / "cache")  # loads the cached object
    assert again is not None and np.allclose(again(feats), want, atol=1e-9)
    assert predict(feats[:0]).shape == (0,)


def test_compiled_trees_without_a_writable_cache(bundles: list[Path], tmp_path: Path) -> None:
    model = _trained_model(bundles)
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")  # a cache folder that cannot be created: compiled in memory instead
    predict = compiled_predictor(model, threads=1, cache=blocked / "cache")
    assert predict is not None
    feats = np.zeros((4, lgb.Booster(model_file=str(model)).num_feature()), np.float32)
    assert np.allclose(predict(feats), lgb.Booster(model_file=str(model)).predict(feats), atol=1e-9)


def test_a_model_that_does_not_compile_falls_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken = tmp_path / "model.txt"
    broken.write_text("tree\nversion=v4\nnot a model\n")
    assert compiled_predictor(broken, cache=tmp_path / "cache") is None
    assert "LightGBM predicts" in caplog.text
    assert os.listdir(tmp_path) == ["model.txt"] or not list((tmp_path / "cache").glob("*.o"))


def test_a_loaded_stage_reads_lightgbm_only_when_asked(bundles: list[Path]) -> None:
    """A worker's start does not pay LightGBM's import (1.3-2 s, scikit-learn with it) when the
    compiled trees score: the booster is read on first use, and scores the same."""
    code = (
        "import sys; from ranker.bundle import ModelBundle; "
        f"stage = ModelBundle.load({str(bundles[0])!r}).ranking_stage(); "
        "assert stage.scorer is not None; print('lightgbm' in sys.modules, 'sklearn' in sys.modules); "
        "stage.booster; print('lightgbm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == ["False", "False", "True"]

    stage = ModelBundle.load(bundles[0]).ranking_stage()
    assert stage is not None and stage.scorer is not None
    feats = np.random.default_rng(6).normal(size=(50, stage.booster.num_feature())).astype(np.float32)
    assert np.allclose(stage.scorer(feats), stage.booster.predict(feats), atol=1e-9)


def test_a_worker_ranks_and_searches_without_scipy(bundles: list[Path]) -> None:
    """scipy.sparse's import was 0.1 s of every worker's start (its array-API shim clones numpy's
    namespace): the stage's co-visits and text profiles and BM25 run on numpy; scipy fits only."""
    code = (
        "import sys, fusionrec.cli, fusionrec.commands.stream, streams.faust_worker; "
        "from fusionrec.wiring import build_ranker; "
        f"r = build_ranker(bundle={str(bundles[0])!r}); assert r.stage is not None; "
        "r.warm_up(batch_sizes=[1, 8], k=10, search='wait'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'scipy'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_a_stage_without_compiled_trees_reads_its_model_at_load(
    bundles: list[Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Where LightGBM predicts, its model is read at load, so one it cannot read fails there, not mid-stream."""
    import ranker.stage_compiled

    monkeypatch.setattr(ranker.stage_compiled, "compiled_predictor", lambda *_a, **_k: None)
    bundle = ModelBundle.load(bundles[0])
    stage = bundle.ranking_stage()
    assert stage is not None and stage.scorer is None and stage._booster is not None
    feats = np.zeros((1, 3, len(FEATURES)), np.float32)
    assert stage.predict(feats, np.ones((1, 3), bool)).shape == (1, 3)

    broken = shutil.copytree(bundle.folder / "ranking", tmp_path / "ranking")
    (broken / "model.txt").write_text("tree\nversion=v4\nnot a model\n")
    with pytest.raises(lgb.basic.LightGBMError, match=r"Model file"):
        RankingStage.load(broken, stage.text)
