"""The user encoder's last-step path (what the exported graph runs) against the full causal stack."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ranker.model import ModelConfig, UserEncoder  # noqa: E402


@pytest.mark.parametrize("layers", [0, 1, 2, 3])
def test_last_step_path_equals_the_full_stack_read_at_the_last_step(layers: int) -> None:
    """Left-padded batches of mixed lengths (a fully padded row too), random weights: the user vector
    through `last_hidden` equals `hidden(...)[:, -1]` for every row, as the model trained it."""
    torch.manual_seed(layers)
    cfg = ModelConfig(n_items=10, n_categories=2, n_brands=2, text_dim=8, dim=32, heads=4, layers=layers, max_len=12)
    encoder = UserEncoder(cfg).eval()
    lengths = [12, 7, 1, 3, 0]
    width = max(lengths)
    mask = torch.zeros(len(lengths), width)
    for row, n in enumerate(lengths):
        mask[row, width - n :] = 1
    vectors = torch.randn(len(lengths), width, cfg.dim) * mask[:, :, None]
    types = (torch.randint(1, cfg.n_event_types + 1, (len(lengths), width)) * mask).long()
    with torch.no_grad():
        full = encoder.hidden(vectors, mask, types)[:, -1]
        last = encoder.last_hidden(vectors, mask, types)
    assert last.shape == (len(lengths), cfg.dim)
    np.testing.assert_allclose(last.numpy(), full.numpy(), atol=1e-5)
    assert not torch.allclose(full[0], full[1])  # the rows differ: the check compares something


def test_last_step_path_exports_with_dynamic_batch_and_length(tmp_path: Path) -> None:
    """The exported graph (ranker.export_onnx) runs batches and widths other than the traced ones and
    gives the torch user vector."""
    ort = pytest.importorskip("onnxruntime")
    from ranker.export_onnx import export_user_encoder
    from ranker.model import SeqRecModel

    torch.manual_seed(0)
    cfg = ModelConfig(n_items=6, n_categories=2, n_brands=2, text_dim=8, dim=16, heads=2, layers=2, max_len=9)
    none = torch.zeros(7, dtype=torch.long)
    model = SeqRecModel(cfg, torch.randn(7, 8), none, none, none).eval()
    path = tmp_path / "user.onnx"
    export_user_encoder(model, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, width in [(1, 1), (3, 9), (7, 4)]:
        vectors = torch.randn(batch, width, cfg.dim)
        mask = torch.ones(batch, width)
        mask[0, : width - 1] = 0
        vectors = vectors * mask[:, :, None]
        types = mask.long()
        got = session.run(None, {"item_vectors": vectors.numpy(), "mask": mask.numpy(), "event_types": types.numpy()})
        with torch.no_grad():
            want = model.user(vectors, mask, types)
        np.testing.assert_allclose(got[0], want.numpy(), atol=1e-5)
