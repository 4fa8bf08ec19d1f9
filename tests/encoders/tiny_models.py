"""Tiny random BERT-family model folders, saved as transformers saves them, for export tests (torch)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from encoders.export import default_model_dir

__all__ = ["KINDS", "save_tiny"]

#: family[-activation]: RoBERTa numbers positions from padding_idx + 1, ELECTRA projects its embeddings
KINDS = ["bert", "roberta", "electra", "bert-gelu_new", "bert-relu"]


def save_tiny(kind: str, folder: Path, head: str = "", bin_only: bool = False, **save: Any) -> Path:
    """A tiny random `kind` model with the default encoder's tokenizer, saved as transformers saves it
    (`head`: a task model class whose checkpoint prefixes the encoder's weights, e.g. `bert.`)."""
    import torch
    import transformers
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(default_model_dir()), local_files_only=True)
    family, _, act = kind.partition("-")
    common: dict[str, Any] = {
        "vocab_size": tok.vocab_size + 2,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "max_position_embeddings": 130,
        "hidden_act": act or "gelu",
    }
    if family == "roberta":
        common["pad_token_id"] = tok.pad_token_id
    if family == "electra":
        common["embedding_size"] = 16  # != hidden_size: ElectraModel projects the embeddings
    name = {"bert": "Bert", "roberta": "Roberta", "electra": "Electra"}[family]
    config = getattr(transformers, f"{name}Config")(**common)
    model = getattr(transformers, f"{name}{head or 'Model'}")(config)
    model.eval().save_pretrained(str(folder), **save)
    if bin_only:  # a pytorch_model.bin folder, as older transformers saved them (5.x writes safetensors only)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
    tok.save_pretrained(str(folder))
    shutil.copy(default_model_dir() / "tokenizer.json", folder / "tokenizer.json")
    return folder
