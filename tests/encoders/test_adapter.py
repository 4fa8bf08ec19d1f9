"""A behaviour-tuned tower (the encoder with a token adapter before its pooling) exports by either
builder with parity to the tuned torch model: fp32 to 1e-4 on tiny models, and fp32 and int8 of the
default encoder on real item texts, as the pretrained exports are held. Adapter files are checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from encoders import TextEncoder
from encoders.adapter import AdapterError, TokenAdapter
from encoders.export import ExportError, default_model_dir, export_encoder, max_length_of
from encoders.parity import neighbour_overlap, row_cosines
from tests.encoders.tiny_models import save_tiny

TEXTS = ["Adhesive-backed sanding roll, 80 grit", "lab beaker", "x", "a " * 100, "Grizzly vise with 3-inch jaws"]


def _trained_like(dim: int, rank: int, scale: float, seed: int = 3) -> TokenAdapter:
    """An adapter with a non-zero up-projection, as training leaves one."""
    rng = np.random.default_rng(seed)
    base = TokenAdapter.identity(dim, rank, seed)
    return TokenAdapter(
        base.down_w,
        rng.normal(0, 0.1, rank).astype(np.float32),
        rng.normal(0, scale, (dim, rank)).astype(np.float32),
        rng.normal(0, scale, dim).astype(np.float32),
    )


def _tuned_torch(src: Path, adapter: TokenAdapter | None, texts: list[str], max_length: int) -> np.ndarray:
    """The tuned torch model's vectors: encoders.bert_graph with the adapter, eager."""
    import torch

    from encoders.bert_graph import PooledEncoder
    from encoders.export import load_hf

    model, tok = load_hf(src)
    enc = PooledEncoder(model, adapter).eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), 64):
            batch = tok(
                texts[start : start + 64], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
            types = batch.get("token_type_ids", torch.zeros_like(batch["input_ids"]))
            out.append(enc(batch["input_ids"], batch["attention_mask"], types).numpy())
    return np.concatenate(out)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny("bert", tmp_path_factory.mktemp("tiny-tower") / "bert")


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_tuned_tower_exports_with_parity_to_the_tuned_torch_model(
    backend: str, tiny_bert: Path, tmp_path: Path
) -> None:
    adapter = _trained_like(32, 8, scale=0.5)
    manifest = export_encoder(tiny_bert, tmp_path / "tuned", "fp32", backend=backend, adapter=adapter)  # type: ignore[arg-type]
    assert manifest.adapter == {"rank": 8, "digest": adapter.digest()}
    got = TextEncoder(tmp_path / "tuned").encode(TEXTS)
    want = _tuned_torch(tiny_bert, adapter, TEXTS, manifest.max_length)
    assert row_cosines(got, want).min() >= 0.9999
    # the adapter is in the graph: the pretrained model's vectors are another thing
    pretrained = _tuned_torch(tiny_bert, None, TEXTS, manifest.max_length)
    assert row_cosines(got, pretrained).min() < 0.99


def test_an_untrained_adapter_exports_the_pretrained_encoder(tiny_bert: Path, tmp_path: Path) -> None:
    plain = export_encoder(tiny_bert, tmp_path / "plain", "fp32")
    untrained = export_encoder(tiny_bert, tmp_path / "untrained", "fp32", adapter=TokenAdapter.identity(32, 8))
    assert plain.adapter == {} and untrained.adapter["rank"] == 8
    a, b = TextEncoder(tmp_path / "plain").encode(TEXTS), TextEncoder(tmp_path / "untrained").encode(TEXTS)
    assert row_cosines(a, b).min() >= 0.99999


def test_the_default_encoder_tuned_keeps_its_parity_in_fp32_and_int8(catalog_texts: list[str], tmp_path: Path) -> None:
    """The bars of the pretrained exports (test_text_encoder), held by a tuned tower of the default
    encoder over 600 real item texts: fp32 min cosine 0.9999 and the same neighbours; int8 mean
    cosine 0.99 and top-10 neighbour overlap 0.9."""
    src = default_model_dir()
    adapter = _trained_like(384, 32, scale=0.05)
    texts = catalog_texts[:600]
    want = _tuned_torch(src, adapter, texts, max_length_of(src))
    assert row_cosines(want, _tuned_torch(src, None, texts, max_length_of(src))).mean() < 0.99  # it moved them
    for variant in ("fp32", "int8"):
        export_encoder(None, tmp_path / variant, variant, adapter=adapter)
        got = TextEncoder(tmp_path / variant).encode(texts, batch_size=64)
        cos = row_cosines(got, want)
        if variant == "fp32":
            assert cos.min() >= 0.9999, f"min cosine {cos.min():.6f}"
            assert neighbour_overlap(got, want, k=10) == 1.0
        else:
            assert cos.mean() >= 0.99, f"mean cosine {cos.mean():.4f}"
            assert neighbour_overlap(got, want, k=10) >= 0.9


def test_adapter_files_and_shapes_are_checked(tiny_bert: Path, tmp_path: Path) -> None:
    adapter = _trained_like(32, 8, scale=0.5)
    path = adapter.save(tmp_path / "adapter.npz")
    again = TokenAdapter.load(path)
    assert again.digest() == adapter.digest() and np.array_equal(
        again.apply(np.ones((2, 32))), adapter.apply(np.ones((2, 32)))
    )
    (tmp_path / "broken.npz").write_bytes(path.read_bytes()[:100])
    with pytest.raises(AdapterError, match=r"broken\.npz: cannot read the adapter"):
        TokenAdapter.load(tmp_path / "broken.npz")
    np.savez(tmp_path / "other.npz", something=np.zeros(3))
    with pytest.raises(AdapterError, match=r"other\.npz: not an adapter file"):
        TokenAdapter.load(tmp_path / "other.npz")
    with pytest.raises(AdapterError, match="up_w has shape"):
        TokenAdapter(adapter.down_w, adapter.down_b, adapter.up_w.T, adapter.up_b)
    with pytest.raises(AdapterError, match="non-finite"):
        TokenAdapter(adapter.down_w, adapter.down_b, adapter.up_w * np.nan, adapter.up_b)
    with pytest.raises(ExportError, match="width 64, the model's is 32"):
        export_encoder(tiny_bert, tmp_path / "wrong", "fp32", adapter=TokenAdapter.identity(64, 8))
