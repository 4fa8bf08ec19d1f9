"""Incremental catalog encoding, and the user-sequence encoder runtime against torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from encoders import EncoderError, SequenceEncoder, TextEncoder, encode_catalog, load_catalog_vectors
from schemas.items import Item


def test_second_run_encodes_only_changed_items(exports: dict[str, Path], tmp_path: Path) -> None:
    # fp32: its vectors do not depend on batch neighbours (int8's per-batch activation scales do)
    enc = TextEncoder(exports["fp32"])
    items = [Item(f"i{j}", f"Item number {j} for the lab", category="Lab") for j in range(30)]
    first = encode_catalog(items, enc, tmp_path, progress=False)
    assert (first.encoded, first.reused) == (30, 0)
    ids, v1 = load_catalog_vectors(tmp_path)
    changed = [
        *items[:5],
        Item("i5", "A completely different microscope slide"),
        *items[6:29],
        Item("new", "Brand new beaker"),
    ]  # i5 changed, i29 removed, "new" added
    second = encode_catalog(changed, enc, tmp_path, progress=False)
    assert (second.encoded, second.reused, second.removed) == (2, 28, 1)
    ids2, v2 = load_catalog_vectors(tmp_path)
    assert ids2 == [it.item_id for it in changed]
    row = {i: r for r, i in enumerate(ids)}
    for r, i in enumerate(ids2):
        if i not in {"i5", "new"}:
            assert np.array_equal(v2[r], v1[row[i]])  # reused exactly, not re-encoded
    assert np.allclose(v2[ids2.index("i5")], enc.encode([changed[5].text()])[0], atol=1e-6)
    third = encode_catalog(changed, enc, tmp_path, progress=False)
    assert third.encoded == 0


def _export_tiny_sequence_model(path: Path, dim: int = 8, out_dim: int = 4) -> object:
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(dim, out_dim)
            self.type_emb = torch.nn.Embedding(5, dim)

        def forward(self, item_vectors: torch.Tensor, mask: torch.Tensor, event_types: torch.Tensor) -> torch.Tensor:
            x = item_vectors + self.type_emb(event_types)
            m = mask.unsqueeze(-1)
            pooled = (x * m).sum(1) / m.sum(1).clamp(min=1.0)
            last = x[:, -1, :]  # right-aligned: the newest step is last
            return self.proj(pooled + last)

    torch.manual_seed(0)
    model = Tiny().eval()
    args = (torch.randn(2, 3, dim), torch.ones(2, 3), torch.zeros(2, 3, dtype=torch.long))
    torch.onnx.export(
        model,
        args,
        str(path),
        input_names=["item_vectors", "mask", "event_types"],
        output_names=["user_vector"],
        opset_version=17,
        dynamo=False,
        dynamic_axes={
            "item_vectors": {0: "b", 1: "l"},
            "mask": {0: "b", 1: "l"},
            "event_types": {0: "b", 1: "l"},
            "user_vector": {0: "b"},
        },
    )
    return model


def test_sequence_encoder_matches_torch_on_ragged_batches(tmp_path: Path) -> None:
    import torch

    model = _export_tiny_sequence_model(tmp_path / "seq.onnx")
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(n, 8)).astype(np.float32) for n in (1, 5, 2, 7, 3, 60)]
    types = [list(rng.integers(0, 5, size=len(s))) for s in seqs]
    enc = SequenceEncoder(tmp_path / "seq.onnx", max_length=50)
    got = enc.encode(seqs, types, batch_size=2)
    for s, t, g in zip(seqs, types, got, strict=True):
        s, t = s[-50:], t[-50:]
        with torch.no_grad():
            want = model(
                torch.from_numpy(s)[None],
                torch.ones(1, len(s)),  # type: ignore[operator]
                torch.tensor([t], dtype=torch.long),
            )[0].numpy()
        assert np.allclose(g, want, atol=1e-5)


def test_encode_rows_equals_encode_on_gathered_sequences(tmp_path: Path) -> None:
    """The worker's gather path (item rows) must give what `encode` gives on the gathered vectors."""
    _export_tiny_sequence_model(tmp_path / "seq.onnx")
    rng = np.random.default_rng(1)
    table = rng.normal(size=(40, 8)).astype(np.float32)
    histories = [list(rng.integers(0, 40, size=n)) for n in (1, 5, 0, 2, 7, 3, 60, 4)]
    types = [list(rng.integers(0, 5, size=len(h))) for h in histories]
    enc = SequenceEncoder(tmp_path / "seq.onnx", max_length=50)
    want = enc.encode([table[h] if h else np.zeros((0, 8), np.float32) for h in histories], types, batch_size=3)
    got = enc.encode_rows(table, histories, types, batch_size=3)
    assert got.shape == want.shape
    assert np.allclose(got, want, atol=1e-6)
    assert np.allclose(
        enc.encode_rows(table, histories, None, batch_size=100)[1], enc.encode([table[histories[1]]])[0], atol=1e-6
    )


def test_sequence_graph_contract_is_checked(tmp_path: Path, exports: dict[str, Path]) -> None:
    with pytest.raises(EncoderError, match="lacks input"):
        SequenceEncoder(exports["fp32"] / "model.onnx")


def test_histories_are_bucketed_by_length_class_so_none_is_padded_past_twice_its_length() -> None:
    """One long history no longer pads a whole micro-batch: buckets hold one power-of-two length
    class (1, 2, 3-4, 5-8, ...), at most `batch_size` users each, every user exactly once."""
    from encoders.sequence import length_buckets

    # by hand: an empty history counts as one step; 3 and 4 share a class, 5 and 8 too, 50 is alone
    got = length_buckets(np.array([1, 4, 0, 50, 3, 8, 2, 5, 2]), batch_size=2)
    assert [b.tolist() for b in got] == [[0, 2], [6, 8], [4, 1], [7, 5], [3]]  # shortest first

    rng = np.random.default_rng(2)
    lengths = np.concatenate([rng.integers(0, 9, size=300), [50, 33, 17, 16, 9]])
    buckets = length_buckets(lengths, batch_size=64)
    assert sorted(np.concatenate(buckets).tolist()) == list(range(len(lengths)))
    for b in buckets:
        lens = np.maximum(lengths[b], 1)
        assert len(b) <= 64 and lens.max() <= 2 * lens.min()
