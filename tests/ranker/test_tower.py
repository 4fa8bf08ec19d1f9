"""The behaviour-tuned text tower: on hand-made token states the pooling is the graph's and
validation chooses the tuned adapter only where it ranks held-out items better; through `fit`, the
tuned export ships in the bundle and its vectors are the ones the model trained on."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from encoders import TextEncoder
from encoders.adapter import TokenAdapter
from encoders.bert_graph import TorchAdapter
from ranker.bundle import PRETRAINED_TEXT
from ranker.data import Split
from ranker.tower import TokenStates, TowerConfig, TowerOverBudget, _check_budget, pooled, profile_recall, tune_tower

DIM = 32


def _states(per_item: list[np.ndarray]) -> TokenStates:
    counts = torch.tensor([len(t) for t in per_item])
    owner = torch.repeat_interleave(torch.arange(len(per_item)), counts)
    return TokenStates(torch.from_numpy(np.concatenate(per_item).astype(np.float32)), owner, counts)


def test_pooled_is_the_masked_mean_of_the_adapted_tokens() -> None:
    rng = np.random.default_rng(0)
    items = [rng.normal(size=(n, DIM)).astype(np.float32) for n in (1, 4, 7)]
    adapter = TokenAdapter.identity(DIM, 8, seed=1)
    adapter = TokenAdapter(adapter.down_w, adapter.down_b, rng.normal(size=(DIM, 8)).astype(np.float32), adapter.up_b)
    for ad in (None, adapter):
        want = np.stack([(t if ad is None else ad.apply(t)).mean(0) for t in items])
        want /= np.linalg.norm(want, axis=1, keepdims=True)
        with torch.no_grad():
            got = pooled(_states(items), None if ad is None else TorchAdapter(ad)).numpy()
        assert np.allclose(got, want, atol=1e-5)
    # an untrained adapter (zero up-projection) is the pretrained pooling exactly
    with torch.no_grad():
        untrained = pooled(_states(items), TorchAdapter(TokenAdapter.identity(DIM, 8))).numpy()
    assert np.array_equal(untrained, pooled(_states(items)).numpy())


def test_profile_recall_ranks_over_every_item_with_the_history_removed() -> None:
    vectors = torch.nn.functional.normalize(torch.eye(4)[[0, 0, 1, 2]] + 0.01 * torch.arange(4)[:, None], dim=1)
    # user 0 read item 0: its twin 1 is the closest once 0 itself is out of the candidates
    assert profile_recall(vectors, [[0]], [1], decay=0.8, k=1) == 1.0
    assert profile_recall(vectors, [[0]], [2], decay=0.8, k=1) == 0.0
    assert profile_recall(vectors, [[0], [0]], [1, 2], decay=0.8, k=1) == 0.5


def _shop(noise: float, seed: int = 0) -> tuple[TokenStates, list[str], list[list[int]], Split]:
    """24 groups of 10 items; users buy within one group. Each item's first token names its group;
    two more tokens are `noise` loud in a 4-dimensional subspace of their own, so the plain mean mixes groups
    and an adapter can learn to mute that subspace."""
    rng = np.random.default_rng(seed)
    groups, per = 24, 10
    centre = rng.normal(size=(groups, DIM)).astype(np.float32)
    centre[:, 16:20] = 0
    centre /= np.linalg.norm(centre, axis=1, keepdims=True)
    items = []
    for g in range(groups):
        for _ in range(per):
            loud = np.zeros((2, DIM), np.float32)
            loud[:, 16:20] = rng.normal(size=(2, 4)) * noise
            items.append(np.vstack([centre[g] + 0.1 * rng.normal(size=DIM), loud]).astype(np.float32))
    ids = [f"item-{i:03d}" for i in range(groups * per)]
    train, hist, targets = [], [], []
    for _ in range(900):
        g = int(rng.integers(groups))
        seq = [int(g * per + x) + 1 for x in rng.choice(per, 6, replace=False)]  # 1-based rows
        train.append(seq[:5])
        hist.append(seq[:5])
        targets.append(seq[5])
    valid = Split([f"u{i}" for i in range(len(hist))], hist, [[1] * 5 for _ in hist], np.array(targets))
    return _states(items), ids, train, valid


def test_validation_chooses_the_tuned_tower_where_it_ranks_held_out_items_better() -> None:
    torch.manual_seed(0)
    states, ids, train, valid = _shop(noise=1.5)
    cfg = TowerConfig(rank=16, lr=1e-2, epochs=8, patience=3, batch=256)
    adapter, info = tune_tower(states, ids, train, valid, cfg, progress=False)
    figures = info["valid_recall50_heldout"]
    assert info["chosen"] == "tuned" and adapter is not None
    assert info["valid_users"] >= 30 and info["heldout_items"] > 0
    assert figures["tuned"] >= figures["pretrained"] * 2, figures  # 0.27 -> 1.0 when written
    # the adapter it returns is the one validated: its pooled vectors give the tuned figure
    held = [u for u, t in enumerate(valid.targets) if ids[int(t) - 1] in _heldout(ids)]
    hist = [[i - 1 for i in valid.histories[u][-cfg.history :]] for u in held]
    with torch.no_grad():
        vecs = pooled(states, TorchAdapter(adapter))
    assert profile_recall(vecs, hist, [int(valid.targets[u]) - 1 for u in held], cfg.decay) == pytest.approx(
        figures["tuned"], abs=1e-5
    )


def test_validation_keeps_the_pretrained_encoder_where_tuning_does_not_help() -> None:
    states, ids, train, valid = _shop(noise=0.0)  # the text already says it all
    adapter, info = tune_tower(states, ids, train, valid, TowerConfig(rank=16, epochs=2, batch=256), progress=False)
    assert adapter is None and info["chosen"] == "pretrained"
    assert info["valid_recall50_heldout"]["pretrained"] > 0.9
    # asked for regardless, the best tuned epoch is returned
    forced, info = tune_tower(states, ids, train, valid, TowerConfig(rank=16, epochs=2, batch=256), False, force=True)
    assert forced is not None and info["chosen"] == "tuned" and info["forced"] is True


def test_no_tuning_epoch_starts_past_the_deadline() -> None:
    states, ids, train, valid = _shop(noise=1.5)
    cfg = TowerConfig(rank=16, lr=1e-2, epochs=8, patience=8, batch=256)
    _, info = tune_tower(states, ids, train, valid, cfg, progress=False, deadline=time.perf_counter())
    assert info["epochs_run"] == 1 and info["stopped_by"] == "time budget" and len(info["curve"]) == 1
    _, free = tune_tower(states, ids, train, valid, cfg, progress=False)
    assert free["epochs_run"] > 1 and free["stopped_by"] in ("epochs", "early stopping")


def test_too_few_validation_targets_among_held_out_items_keep_the_pretrained_encoder() -> None:
    states, ids, train, valid = _shop(noise=1.5)
    few = Split(valid.users[:40], valid.histories[:40], valid.history_types[:40], valid.targets[:40])
    adapter, info = tune_tower(states, ids, train, few, progress=False)
    assert adapter is None and info["chosen"] == "pretrained" and "validation users" in info["reason"]


def _heldout(ids: list[str]) -> set[str]:
    from ranker.data import cold_item_ids
    from ranker.tower import HELDOUT_SHARE

    return set(cold_item_ids(ids, HELDOUT_SHARE, salt=b"tower-heldout:"))


def _fit_small(shop_dir: Path, encoder: Path, out: Path, tower: str, epochs: int) -> dict[str, Any]:
    """The small shop's bundle from one variant, no ranking stage, with the text tower as asked."""
    from ranker.fit import fit
    from ranker.train import TrainConfig
    from shopdata.loader import load_dataset

    return fit(
        load_dataset(shop_dir),
        out,
        encoder,
        variants=(("weighted-b0.5", "weighted", 0.5),),
        model_overrides={"dim": 32, "layers": 1, "heads": 2, "max_len": 20},
        train_cfg=TrainConfig(epochs=epochs, patience=epochs, seed=7, batch_size=128),
        progress=False,
        ranking_stage=False,
        text_tower=tower,
    )


def test_a_tuned_tower_ships_in_the_bundle_and_encodes_new_items_as_trained(
    shop_dir: Path, tiny_encoder: Path, tmp_path: Path
) -> None:
    """`fit(text_tower="tuned")`: the bundle's encoder is the tuned export (its manifest names the
    adapter), the item vectors the model trained on are what that export gives for the items' texts
    (so a new item on the items topic lands in the same space), the pretrained vectors stay beside
    them for evaluate's text-only baseline, which reports the tuned one as its own row."""
    from encoders import EncoderManifest
    from ranker.evaluate import evaluate
    from shopdata.loader import load_dataset

    dataset = load_dataset(shop_dir)
    out = tmp_path / "b"
    manifest = _fit_small(shop_dir, tiny_encoder, out, "tuned", epochs=2)
    tower = manifest["text_tower"]
    assert tower["chosen"] == "tuned" and tower["forced"] is True and tower["best_epoch"] >= 1
    encoder = EncoderManifest.read(out / "encoder")
    # readable by a worker or API running as another user: the mode of any new folder, not a temp dir's 0700
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert (out / "encoder").stat().st_mode & 0o777 == fresh.stat().st_mode & 0o777
    assert (
        encoder.adapter["rank"] == TowerConfig().rank
        and manifest["encoder"]["digest"] != tower["pretrained_encoder"]["digest"]
    )
    texts = [it.text() for it in dataset.items]
    tuned = TextEncoder(out / "encoder").encode(texts)
    assert np.allclose(np.load(out / "text_vectors.npy"), tuned, atol=1e-5)
    pretrained = TextEncoder(tiny_encoder).encode(texts)
    assert np.allclose(np.load(out / PRETRAINED_TEXT), pretrained, atol=1e-5)
    # the shipped adapter is trained (not its zero-up start), and it moved the vectors
    untrained = TokenAdapter.identity(tuned.shape[1], TowerConfig().rank, TowerConfig().seed)
    assert encoder.adapter["digest"] != untrained.digest()
    assert not np.allclose(tuned, pretrained, atol=1e-6)
    results = evaluate(dataset, out)["protocols"]["production"]["results"]
    assert {"text-only", "text-only:tuned"} <= set(results)


def test_the_pretrained_choice_ships_the_encoder_as_given(shop_dir: Path, tiny_encoder: Path, tmp_path: Path) -> None:
    manifest = _fit_small(shop_dir, tiny_encoder, tmp_path / "b", "pretrained", epochs=1)
    assert manifest["text_tower"] == {"chosen": "pretrained", "reason": "--text-tower pretrained"}
    assert (tmp_path / "b" / "encoder" / "model.onnx").read_bytes() == (tiny_encoder / "model.onnx").read_bytes()
    assert not (tmp_path / "b" / PRETRAINED_TEXT).exists()


def test_an_encoder_whose_source_folder_is_gone_trains_with_it_as_given(
    shop_dir: Path, tiny_encoder: Path, tmp_path: Path
) -> None:
    """auto: a warning and the pretrained encoder (the manifest says why); tuned: one clear error."""
    import json
    import shutil

    from schemas.errors import ConfigError

    moved = Path(shutil.copytree(tiny_encoder, tmp_path / "encoder"))
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["source_model"] = str(tmp_path / "gone")
    (moved / "manifest.json").write_text(json.dumps(manifest))
    info = _fit_small(shop_dir, moved, tmp_path / "b", "auto", epochs=1)["text_tower"]
    assert info["chosen"] == "pretrained" and "is not here" in info["reason"]
    with pytest.raises(ConfigError, match="--text-tower tuned needs it"):
        _fit_small(shop_dir, moved, tmp_path / "c", "tuned", epochs=1)


def test_token_states_project_their_end_only_from_enough_work() -> None:
    now = time.perf_counter()
    # 1 s in, 0.3% of the tokens: it projects ~330 s against a 60 s budget, but too early to believe
    _check_budget(now - 1.0, 600, 200_000, deadline=now + 60)
    # 4 s in, 10% done: 40 s projected, inside the budget
    _check_budget(now - 4.0, 20_000, 200_000, deadline=now + 60)
    with pytest.raises(TowerOverBudget, match="about 80 s"):  # 4 s in, 5% done: 80 s projected, past it
        _check_budget(now - 4.0, 10_000, 200_000, deadline=now + 60)
    with pytest.raises(TowerOverBudget):  # the deadline itself has passed: no projection needed
        _check_budget(now - 1.0, 600, 200_000, deadline=now - 0.1)
