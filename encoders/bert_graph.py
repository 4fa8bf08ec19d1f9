"""A plain BERT-family forward pass with masked mean pooling and L2 normalisation, for ONNX export.

Why not export the transformers module directly: its attention-mask machinery changes between
releases and did not trace faithfully (cosine 0.93 against eager on this stack). This module
reuses the loaded model's own weights (same Linear/LayerNorm/Embedding objects) and writes the
textbook computation in the layout ONNX Runtime's BERT fusions recognise. Parity with
transformers is pinned by tests (cosine >= 0.9999). Needs the `train` extra (torch).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["SUPPORTED_MODEL_TYPES", "PooledEncoder", "TorchAdapter"]

from encoders.adapter import TokenAdapter
from encoders.onnx_build import SUPPORTED_MODEL_TYPES  # one list for both exporters


class TorchAdapter(nn.Module):
    """encoders.adapter.TokenAdapter in torch: trainable, and the reference its ONNX export is held to."""

    def __init__(self, adapter: TokenAdapter) -> None:
        super().__init__()
        self.down = nn.Linear(adapter.dim, adapter.rank)
        self.up = nn.Linear(adapter.rank, adapter.dim)
        with torch.no_grad():
            for layer, w, b in ((self.down, adapter.down_w, adapter.down_b), (self.up, adapter.up_w, adapter.up_b)):
                layer.weight.copy_(torch.from_numpy(np.asarray(w, np.float32)))
                layer.bias.copy_(torch.from_numpy(np.asarray(b, np.float32)))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.up(nn.functional.gelu(self.down(hidden)))

    def to_numpy(self) -> TokenAdapter:
        def arr(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().numpy().astype(np.float32)

        return TokenAdapter(arr(self.down.weight), arr(self.down.bias), arr(self.up.weight), arr(self.up.bias))


class PooledEncoder(nn.Module):
    """(input_ids, attention_mask, token_type_ids) -> unit-length sentence vectors [batch, hidden];
    with `adapter`, the tuned tower (the adapter between the last layer and the pooling)."""

    def __init__(self, hf_model: Any, adapter: TokenAdapter | None = None) -> None:
        super().__init__()
        cfg = hf_model.config
        if cfg.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"model_type {cfg.model_type!r} is not BERT-family; supported: {sorted(SUPPORTED_MODEL_TYPES)}"
            )
        if getattr(cfg, "position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings are supported")
        if cfg.hidden_act not in ("gelu", "gelu_new", "relu"):
            raise ValueError(f"unsupported activation {cfg.hidden_act!r}")
        self.emb = hf_model.embeddings
        self.layers = hf_model.encoder.layer
        self.heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.act = cfg.hidden_act
        # RoBERTa-style models number positions from padding_idx + 1
        self.position_offset = (
            (cfg.pad_token_id + 1) if cfg.model_type in {"roberta", "xlm-roberta", "camembert"} else 0
        )
        self.embedding_project = getattr(hf_model, "embeddings_project", None)
        self.adapter = TorchAdapter(adapter) if adapter is not None else None

    def _activation(self, x: torch.Tensor) -> torch.Tensor:
        if self.act == "relu":
            return torch.relu(x)
        if self.act == "gelu_new":
            return nn.functional.gelu(x, approximate="tanh")
        return nn.functional.gelu(x)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        x = self.hidden(input_ids, attention_mask, token_type_ids)
        if self.adapter is not None:
            x = self.adapter(x)
        mask = attention_mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2.0, dim=1)

    def hidden(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        """The last layer's token states [batch, seq, hidden] (what an adapter is trained on)."""
        seq = input_ids.shape[1]
        positions = torch.arange(seq, device=input_ids.device).unsqueeze(0) + self.position_offset
        x = (
            self.emb.word_embeddings(input_ids)
            + self.emb.position_embeddings(positions)
            + self.emb.token_type_embeddings(token_type_ids)
        )
        x = self.emb.LayerNorm(x)
        if self.embedding_project is not None:
            x = self.embedding_project(x)
        # additive mask in the classic layout: (1 - mask) * -10000, broadcast over heads and queries
        ext = (1.0 - attention_mask.unsqueeze(1).unsqueeze(2).to(x.dtype)) * -10000.0
        batch = x.shape[0]
        for layer in self.layers:
            att = layer.attention
            q = att.self.query(x).view(batch, -1, self.heads, self.head_dim).permute(0, 2, 1, 3)
            k = att.self.key(x).view(batch, -1, self.heads, self.head_dim).permute(0, 2, 3, 1)
            v = att.self.value(x).view(batch, -1, self.heads, self.head_dim).permute(0, 2, 1, 3)
            scores = torch.matmul(q, k) / math.sqrt(self.head_dim) + ext
            probs = torch.softmax(scores, dim=-1)
            ctx = torch.matmul(probs, v).permute(0, 2, 1, 3).reshape(batch, -1, self.heads * self.head_dim)
            x = att.output.LayerNorm(att.output.dense(ctx) + x)
            h = self._activation(layer.intermediate.dense(x))
            x = layer.output.LayerNorm(layer.output.dense(h) + x)
        return x
