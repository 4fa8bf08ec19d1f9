"""The text-fused model (ranker.text_fusion): pure numpy, hand-made catalogs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ranker.state import UserState
from ranker.text_fusion import TextFusionModel, because, behaviour_embeddings, fit_text_fusion
from schemas.errors import ConfigError


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _catalog(n: int = 40, dim: int = 16, seed: int = 0) -> tuple[list[str], np.ndarray]:
    return [f"i{j}" for j in range(n)], _unit(np.random.default_rng(seed).standard_normal((n, dim)))


def test_alpha_follows_the_signal_that_predicts_the_next_item() -> None:
    ids, text = _catalog(n=300)
    rng = np.random.default_rng(1)
    noise = [[ids[j] for j in rng.integers(0, 300, 3)] for _ in range(3000)]  # every item warm, no pattern
    # text-led: the next item is the one whose TEXT is nearest the last one
    near = np.argsort(-(text @ text.T), axis=1)[:, 1]
    text_users = [[ids[a], ids[near[a]]] for a in rng.integers(0, 300, 600)]
    text_led = fit_text_fusion(text_users + noise, ids, text, max_validation_users=300)
    assert text_led.alpha >= 0.7, text_led.validation
    # behaviour-led: fixed pairs whose texts are unrelated, repeated by many users
    pairs = {j: (j * 7 + 3) % 300 for j in range(300)}
    pair_users = [[ids[a], ids[pairs[a]]] for a in rng.integers(0, 300, 3000)]
    behaviour_led = fit_text_fusion(pair_users + noise, ids, text, max_validation_users=300)
    assert behaviour_led.alpha <= 0.3, behaviour_led.validation
    for model in (text_led, behaviour_led):  # α is the validation's best, whatever it is
        best = max(v for key, v in model.validation.items() if key.startswith("recall@10"))
        assert model.validation[f"recall@10[alpha={model.alpha}]"] == best
        assert model.validation["users"] == 300


def test_a_new_item_no_history_touched_is_ranked_by_its_text() -> None:
    ids, text = _catalog()
    ids.append("new")
    text = np.vstack([text, text[0:1] * 0.99 + 0.01]).astype(np.float32)
    text = _unit(text)
    seqs = [[ids[j], ids[(j + 1) % 40]] for j in range(40)] * 3
    model = fit_text_fusion(seqs, ids, text)
    assert not model.behaviour[-1].any()  # nothing to learn behaviour from
    listed, source = model.rank(UserState("u", recent_items=("i0",), recent_types=("view",)), k=5)
    assert source == "personal"
    assert "new" in [i for i, _ in listed]  # its text twin was viewed
    assert "i0" not in [i for i, _ in listed]  # seen items are not recommended


def test_a_search_only_user_gets_the_query_answered_and_no_signal_gets_popular() -> None:
    ids, text = _catalog()
    model = fit_text_fusion([[ids[0], ids[1], ids[2]]] * 5, ids, text, query_encoder=lambda qs: text[[7] * len(qs)])
    searched, popular = model.rank_many([UserState("s", recent_queries=("anything",)), UserState("cold")], k=3)
    assert searched[1] == "search" and searched[0][0][0] == "i7"
    assert popular[1] == "popular" and popular[0][0][0] in {"i0", "i1", "i2"}


def test_because_names_the_closest_history_item() -> None:
    vectors = _unit(np.array([[1, 0], [0, 1], [1, 0.1], [0.1, 1]], dtype=np.float32))
    assert [r for r, _ in because([2, 3], [0, 1], vectors)] == [0, 1]
    assert because([2], [], vectors) == [(-1, 0.0)]
    assert because([], [0], vectors) == []


def test_behaviour_embeddings_put_co_occurring_items_together() -> None:
    seqs = [[0, 1], [1, 0], [2, 3], [3, 2], [0, 1], [2, 3], [4, 5], [5, 4]] * 5
    emb = behaviour_embeddings(seqs, 6, dim=4)
    sims = emb @ emb.T
    assert sims[0, 1] > sims[0, 2] and sims[2, 3] > sims[2, 5]


def test_rank_is_deterministic_and_rounded() -> None:
    ids, text = _catalog()
    seqs = [[ids[j], ids[(j + 3) % 40], ids[(j + 5) % 40]] for j in range(40)] * 2
    a = fit_text_fusion(seqs, ids, text)
    b = fit_text_fusion(seqs, ids, text)
    state = UserState("u", recent_items=("i1", "i4"), recent_types=("view", "view"))
    assert a.version == b.version
    assert a.rank(state, 10) == b.rank(state, 10)
    assert all(round(s, 6) == s for _, s in a.rank(state, 10)[0])


def test_save_and_load_give_the_same_model_and_fused_vectors_hold_its_similarity(tmp_path: Path) -> None:
    ids, text = _catalog()
    seqs = [[ids[j], ids[(j + 3) % 40], ids[(j + 5) % 40]] for j in range(40)] * 2
    model = fit_text_fusion(seqs, ids, text)
    loaded = TextFusionModel.load(model.save(tmp_path / "m"))
    state = UserState("u", recent_items=("i1", "i4"), recent_types=("view", "view"))
    assert loaded.version == model.version and loaded.rank(state, 10) == model.rank(state, 10)
    assert loaded.validation == model.validation and loaded.popular == model.popular
    fused = loaded.fused_item_vectors()
    a = loaded.alpha
    expected = a * (text[2] @ text[7]) + (1 - a) * (loaded.behaviour[2] @ loaded.behaviour[7])
    assert float(fused[2] @ fused[7]) == pytest.approx(float(expected), abs=1e-5)
    (tmp_path / "m" / "model.json").write_text("{")
    with pytest.raises(ConfigError, match="not a text-fusion model saved by `fusionrec demo`"):
        TextFusionModel.load(tmp_path / "m")
