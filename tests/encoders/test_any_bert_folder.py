"""Any local Hugging Face BERT-family folder exports and matches transformers: tiny random BERT and
RoBERTa models saved with save_pretrained (RoBERTa numbers positions from padding_idx + 1)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from encoders import TextEncoder
from encoders.export import default_model_dir, export_encoder
from encoders.parity import row_cosines
from encoders.torch_reference import TorchEncoder

TEXTS = ["Adhesive-backed sanding roll, 80 grit", "lab beaker", "x", "a " * 100, "Grizzly vise with 3-inch jaws"]


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_tiny_random_model_folder_exports_with_parity(kind: str, tmp_path: Path) -> None:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel, RobertaConfig, RobertaModel

    torch.manual_seed(0)
    src = tmp_path / f"tiny-{kind}"
    tok = AutoTokenizer.from_pretrained(str(default_model_dir()), local_files_only=True)
    common = {
        "vocab_size": tok.vocab_size + 2,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "max_position_embeddings": 130,
    }
    if kind == "bert":
        model = BertModel(BertConfig(**common))
    else:
        model = RobertaModel(RobertaConfig(**common, pad_token_id=tok.pad_token_id))
    model.eval().save_pretrained(str(src))
    tok.save_pretrained(str(src))
    shutil.copy(default_model_dir() / "tokenizer.json", src / "tokenizer.json")
    manifest = export_encoder(src, tmp_path / "out", "fp32")
    assert manifest.model_type == kind and manifest.dim == 32
    assert manifest.max_length == min(tok.model_max_length, 130 - (tok.pad_token_id + 1 if kind == "roberta" else 0))
    got = TextEncoder(tmp_path / "out").encode(TEXTS)
    want = TorchEncoder(src, manifest.max_length).encode(TEXTS)
    assert row_cosines(got, want).min() >= 0.9999
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_non_bert_family_is_refused(tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2Model

    GPT2Model(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=100)).save_pretrained(str(tmp_path / "gpt"))
    shutil.copy(default_model_dir() / "tokenizer.json", tmp_path / "gpt" / "tokenizer.json")
    with pytest.raises((ValueError, OSError)):
        export_encoder(tmp_path / "gpt", tmp_path / "out", "fp32")
