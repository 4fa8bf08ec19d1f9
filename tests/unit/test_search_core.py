"""The pure core of search and tags: query building, BM25 on a hand-checked case, fusion order."""

from __future__ import annotations

import math

import numpy as np

from ranker.bm25 import BM25Index
from ranker.search import HybridIndex, SearchWeights, rank_of
from ranker.text import category_query, common_category_terms, known_item_query, tokenize
from serving.tags import candidate_phrases, mmr


def test_queries_follow_the_product_search_recipe() -> None:
    cats = ["Industrial & Scientific Lab Supplies Pipettes", "Industrial & Scientific Abrasives Sanding Rolls"]
    common = common_category_terms(cats)
    assert common == frozenset({"industrial", "scientific"})
    assert category_query(cats[0], common) == "lab supplies pipettes"
    assert category_query("Tools & Tools Hand Tools", frozenset()) == "tools hand"  # stopwords and repeats go
    q = known_item_query(
        "PORTER-CABLE 740000801 4 1/2-Inch x 10yd 80 Grit Adhesive-Backed Sanding Roll", "PORTER-CABLE"
    )
    assert q == "inch grit adhesive backed sanding"
    assert "porter" not in q and not any(c.isdigit() for c in q)
    assert tokenize("Hy-Ko 9.25") == ["hy", "ko", "9", "25"]


def test_bm25_matches_a_hand_computation() -> None:
    docs = ["red shoe", "red red hat", "blue shoe shoe shoe"]
    idx = BM25Index(docs, k1=1.2, b=0.75)
    avg = (2 + 3 + 4) / 3

    def weight(tf: int, df: int, length: int) -> float:
        idf = math.log(1 + (3 - df + 0.5) / (df + 0.5))
        return idf * tf * 2.2 / (tf + 1.2 * (1 - 0.75 + 0.75 * length / avg))

    s = idx.scores("red hat")
    assert s[0] == np.float32(weight(1, 2, 2))
    assert math.isclose(s[1], weight(2, 2, 3) + weight(1, 1, 3), rel_tol=1e-6)
    assert s[2] == 0
    rows, _ = idx.top("shoe", 5)
    assert list(rows) == [2, 0]  # tf 3 beats tf 1; doc 1 has no match and is left out
    assert idx.scores("unknown words").sum() == 0


def test_bm25_from_its_parts_is_the_same_index() -> None:
    """What ranker.bm25_cache keeps: plain arrays that rebuild the index without a tokenizer run."""
    docs = ["red shoe", "red red hat", "", "blue shoe shoe shoe", "Hat-rack 9.25"]
    idx = BM25Index(docs)
    again = BM25Index.from_parts({k: v.copy() for k, v in idx.parts().items()})
    assert again.vocab == idx.vocab and again.n_docs == idx.n_docs == 5
    for name in ("indptr", "indices", "data"):
        assert np.array_equal(getattr(again, name), getattr(idx, name))
    for q in ("red hat", "shoe", "rack 9", "nothing", ""):
        assert np.array_equal(again.scores(q), idx.scores(q))
    empty = BM25Index.from_parts(BM25Index([]).parts())
    assert empty.n_docs == 0 and empty.scores("red").shape == (0,)


def test_bm25_parts_that_do_not_fit_are_refused() -> None:
    parts = BM25Index(["red shoe", "blue hat"]).parts()
    for name, bad in (
        ("indptr", parts["indptr"][:-1]),
        ("indices", parts["indices"] + 5),
        ("data", parts["data"][:-1]),
        ("terms", np.array(["red", "red", "shoe", "blue"])),
        ("n_docs", np.array(1)),
    ):
        try:
            BM25Index.from_parts(parts | {name: bad})
        except ValueError:
            continue
        raise AssertionError(f"a changed {name} was taken")


def test_hybrid_fuses_and_personal_term_breaks_lexical_ties() -> None:
    texts = ["drill bit", "drill bit", "drill bit", "saw blade"]
    vecs = np.eye(4, dtype=np.float32)
    idx = HybridIndex(["a", "b", "c", "d"], texts, vecs, SearchWeights(dense=0.5, personal=1.0, candidates=10))
    q = np.array([0.1, 0.2, 0.0, 0.0], np.float32)
    q /= np.linalg.norm(q)
    assert [r for r, _ in idx.rank("drill", q, 3, mode="bm25")] == [0, 1, 2]  # tie: lower row first
    assert [r for r, _ in idx.rank("drill", q, 4, mode="dense")][:2] == [1, 0]
    hybrid = [r for r, _ in idx.rank("drill", q, 3, mode="hybrid")]
    assert hybrid[:2] == [1, 0]  # lexical tie broken by the dense score
    affinity = np.array([0.0, 0.0, 5.0, 0.0], np.float32)
    assert idx.rank("drill", q, 1, mode="personal", affinity=affinity)[0][0] == 2
    assert idx.rank("drill", q, 1, mode="personal", affinity=None)[0][0] == 1  # no user: hybrid


def test_rank_of_uses_the_same_tie_break_as_rank() -> None:
    scores = np.array([1.0, 3.0, 3.0, 2.0])
    rows = np.array([10, 11, 12, 13])
    assert rank_of(scores, rows, 12) == 1 and rank_of(scores, rows, 11) == 0 and rank_of(scores, rows, 10) == 3
    assert rank_of(scores, rows, 99) is None


def test_tag_candidates_and_mmr() -> None:
    phrases = candidate_phrases(
        "PORTER-CABLE 80 Grit Adhesive-Backed Sanding Roll for the Inch", exclude=frozenset({"porter", "cable"})
    )
    assert "sanding roll" in phrases and "adhesive backed sanding" in phrases
    assert not any("porter" in p or "80" in p or p.endswith("inch") or p.endswith("the") for p in phrases)
    item = np.array([1.0, 0.0], np.float32)
    cands = np.array([[1.0, 0.0], [0.99, 0.141], [0.6, 0.8]], np.float32)
    assert mmr(item, cands, 2, diversity=0.0) == [0, 1]
    assert mmr(item, cands, 2, diversity=0.7) == [0, 2]  # the near-duplicate gives way
