"""Items without training events (new on the items topic, or held out by `train --cold-items`): the
model fuses them without an ID embedding, learns that path with item dropout, never trains them as
negatives; the ranking stage learns from items made to look new."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ranker.model import ItemFusion, ModelConfig, SeqRecModel  # noqa: E402
from ranker.stage_fit import _pretend_new  # noqa: E402
from ranker.train import _loss  # noqa: E402


def _model(item_dropout: float = 0.0) -> SeqRecModel:
    torch.manual_seed(0)
    cfg = ModelConfig(n_items=6, n_categories=2, n_brands=2, text_dim=4, dim=8, layers=1, heads=2, dropout=0.0,
                      item_dropout=item_dropout)  # fmt: skip
    buckets = torch.tensor([0, 3, 2, 4, 0, 2, 2])  # item 4 (row 4) has no training events
    model = SeqRecModel(cfg, torch.randn(7, 4), torch.tensor([0, 1, 1, 2, 2, 1, 2]),
                        torch.tensor([0, 1, 2, 1, 2, 1, 2]), buckets)  # fmt: skip
    with torch.no_grad():  # trained-looking ID embeddings, far from the init's 0.02 scale
        model.items.id_emb.weight.normal_(0, 1.0)
        model.items.id_emb.weight[0] = 0
    return model


def test_an_item_without_events_is_fused_as_a_new_item_would_be() -> None:
    model = _model().eval()
    table = model.items()
    fusion = ItemFusion(model.items)
    items = model.items
    raw_text = items.text + items.text_mean  # ItemFusion takes uncentred text vectors
    as_new = fusion(raw_text[[4]], torch.tensor([0]), items.categories[[4]], items.brands[[4]], torch.tensor([0]))
    assert torch.allclose(table[4], as_new[0], atol=1e-6)  # no ID embedding, bucket 0
    with_id = fusion(raw_text[[3]], torch.tensor([3]), items.categories[[3]], items.brands[[3]], items.pop_bucket[[3]])
    assert torch.allclose(table[3], with_id[0], atol=1e-6)  # a known item keeps its ID embedding


def test_item_dropout_hides_ids_in_training_only() -> None:
    model = _model(item_dropout=0.5)
    model.train()
    torch.manual_seed(1)
    a = model.items()
    model.eval()
    b = model.items()
    changed = ~torch.isclose(a, b, atol=1e-6).all(dim=1)
    assert 0 < int(changed[1:].sum()) < 6  # some items fused as new in this step, not all
    assert not changed[4]  # an item without events is fused as new either way
    assert torch.equal(b, model.items())  # evaluation is deterministic


def test_items_without_events_are_never_negatives() -> None:
    model = _model().eval()
    inputs = torch.tensor([[0, 1, 2], [3, 5, 6]])
    types = torch.full_like(inputs, 4)
    targets = torch.tensor([[0, 2, 3], [5, 6, 1]])
    model.items.id_emb.weight.grad = None
    _loss(model, inputs, types, targets).backward()
    grad = model.items.id_emb.weight.grad
    assert grad is not None
    assert float(grad[4].abs().sum()) == 0.0  # row 4: not in the softmax, so not pushed away
    assert float(grad[3].abs().sum()) > 0.0
    gen = torch.Generator().manual_seed(0)
    sampled = _loss(model, inputs, types, targets, sampled=200, generator=gen)
    assert torch.isfinite(sampled)


def test_pretend_new_items_are_deterministic_and_have_events() -> None:
    ids = [f"item-{i}" for i in range(2000)]
    counts = np.ones(2000)
    counts[::7] = 0
    a = _pretend_new(ids, counts, 0.1)
    assert np.array_equal(a, _pretend_new(ids, counts, 0.1))
    assert not a[counts == 0].any()  # items without events are new already
    assert 0.07 < a.sum() / (counts > 0).sum() < 0.13
    from ranker.data import cold_item_ids

    cold = set(cold_item_ids(ids, 0.1))
    overlap = sum(bool(a[i]) for i, x in enumerate(ids) if x in cold)
    assert overlap < 0.3 * len(cold)  # another hash than the cold-items protocol's
