"""The text-fused sequential recommender (torch; needs the `train` extra).

Item vector g_j fuses the frozen text vector z_j (BERT via ONNX) with the item's other features
G(j) = ID embedding + category + brand + popularity bucket:
  weighted: g = β·P(z) + (1−β)·G      concat: g = W[P(z); G]      gated: g = σ(W[P(z); G])⊙P(z) + (1−σ)⊙G
A causal transformer over the user's last N fused item vectors (+ position, + event type) gives
z_i; the user vector is f_i = α·z_i + (1−α)·F(x_i), F = recency-decayed mean of the history's
item vectors. Scores are f_i·g_j over the whole catalog (tied input/output item vectors).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

__all__ = ["ItemFusion", "ModelConfig", "SeqRecModel", "UserEncoder"]


@dataclass(frozen=True)
class ModelConfig:
    n_items: int
    n_categories: int
    n_brands: int
    text_dim: int
    dim: int = 128
    layers: int = 2
    heads: int = 2
    dropout: float = 0.5
    max_len: int = 50
    fusion: str = "weighted"  # weighted | concat | gated | text | id
    beta: float = 0.5
    n_event_types: int = 6
    pop_buckets: int = 16
    item_dropout: float = 0.0  # share of items whose ID embedding and popularity are hidden per step

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class FusedItems(nn.Module):
    text: torch.Tensor
    text_mean: torch.Tensor
    categories: torch.Tensor
    brands: torch.Tensor
    pop_bucket: torch.Tensor
    known: torch.Tensor

    def __init__(
        self,
        cfg: ModelConfig,
        text: torch.Tensor,
        categories: torch.Tensor,
        brands: torch.Tensor,
        pop_bucket: torch.Tensor,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        mean = text[1:].mean(dim=0, keepdim=True)
        centered = text - mean
        centered[0] = 0
        self.register_buffer("text_mean", mean)
        self.register_buffer("text", centered)
        self.register_buffer("categories", categories)
        self.register_buffer("brands", brands)
        self.register_buffer("pop_bucket", pop_bucket)
        # bucket 0 = no training events: such an item's ID embedding was never trained, so it is not used
        self.register_buffer("known", (pop_bucket > 0).unsqueeze(-1).to(text.dtype))
        self.text_proj = nn.Sequential(nn.Linear(cfg.text_dim, cfg.dim), nn.LayerNorm(cfg.dim))
        self.id_emb = nn.Embedding(cfg.n_items + 1, cfg.dim, padding_idx=0)
        self.cat_emb = nn.Embedding(cfg.n_categories + 1, cfg.dim, padding_idx=0)
        self.brand_emb = nn.Embedding(cfg.n_brands + 1, cfg.dim, padding_idx=0)
        self.pop_emb = nn.Embedding(cfg.pop_buckets + 1, cfg.dim)
        if cfg.fusion in ("concat", "gated"):
            self.mix = nn.Linear(2 * cfg.dim, cfg.dim)
        self.norm = nn.LayerNorm(cfg.dim)
        for emb in (self.id_emb, self.cat_emb, self.brand_emb, self.pop_emb):
            nn.init.normal_(emb.weight, std=0.02)

    def forward(self) -> torch.Tensor:
        """[n_items + 1, dim] fused vectors for the whole catalog (row 0: padding). In training,
        `item_dropout` of the items are fused as new items (no ID embedding, popularity bucket 0)."""
        known, pop = self.known, self.pop_bucket
        if self.training and self.cfg.item_dropout > 0:
            hidden = torch.rand(pop.shape, device=pop.device) < self.cfg.item_dropout
            known = known * (~hidden).unsqueeze(-1).to(known.dtype)
            pop = torch.where(hidden, torch.zeros_like(pop), pop)
        out = self.fuse(self.text, self.id_emb.weight * known, self.categories, self.brands, pop)
        return torch.cat([torch.zeros_like(out[:1]), out[1:]], dim=0)

    def fuse(
        self,
        text_centered: torch.Tensor,
        id_vectors: torch.Tensor,
        categories: torch.Tensor,
        brands: torch.Tensor,
        pop_bucket: torch.Tensor,
    ) -> torch.Tensor:
        """g_j from centred text vectors and the other features (shared by training and new items)."""
        p = self.text_proj(text_centered)
        g = id_vectors + self.cat_emb(categories) + self.brand_emb(brands) + self.pop_emb(pop_bucket)
        fusion = self.cfg.fusion
        if fusion == "weighted":
            out = self.cfg.beta * p + (1.0 - self.cfg.beta) * g
        elif fusion == "concat":
            out = self.mix(torch.cat([p, g], dim=-1))
        elif fusion == "gated":
            gate = torch.sigmoid(self.mix(torch.cat([p, g], dim=-1)))
            out = gate * p + (1.0 - gate) * g
        elif fusion == "text":
            out = p
        elif fusion == "id":
            out = g
        else:
            raise ValueError(f"unknown fusion {fusion!r}")
        return self.norm(out)


class ItemFusion(nn.Module):
    """The item side as a graph for live items: text vector + item row (0 = new, no ID embedding yet)
    + category + brand + popularity bucket -> g_j. Exported to ONNX beside the user encoder."""

    def __init__(self, items: FusedItems) -> None:
        super().__init__()
        self.items = items

    def forward(
        self,
        text_vectors: torch.Tensor,
        item_rows: torch.Tensor,
        categories: torch.Tensor,
        brands: torch.Tensor,
        pop_buckets: torch.Tensor,
    ) -> torch.Tensor:
        centered = text_vectors - self.items.text_mean
        return self.items.fuse(centered, self.items.id_emb(item_rows), categories, brands, pop_buckets)


class Block(nn.Module):
    """Pre-norm transformer block written out so that it exports with dynamic batch and length
    (nn.MultiheadAttention's traced reshapes bake the traced sequence length into the graph)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        qkv = self.qkv(self.norm1(x)).view(batch, -1, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + attn_bias
        ctx = torch.matmul(self.drop(torch.softmax(scores, dim=-1)), v)
        ctx = ctx.permute(0, 2, 1, 3).reshape(batch, -1, self.heads * self.head_dim)
        x = x + self.drop(self.proj(ctx))
        return x + self.drop(self.ff(self.norm2(x)))

    def forward_last(self, x: torch.Tensor, last_bias: torch.Tensor) -> torch.Tensor:
        """`forward`'s output at the last position only [B, 1, D]: keys and values from every step,
        the query, the projection and the feed-forward for the newest one (`last_bias` [B, 1, 1, L]
        is the attention bias of that row). The user vector reads nothing else of the last block, so
        the exported graph skips most of its work: about 37% of the encoder's multiply-adds."""
        batch = x.shape[0]
        dim = self.heads * self.head_dim
        normed = self.norm1(x)
        kv = nn.functional.linear(normed, self.qkv.weight[dim:], self.qkv.bias[dim:])
        kv = kv.view(batch, -1, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        q = nn.functional.linear(normed[:, -1:], self.qkv.weight[:dim], self.qkv.bias[:dim])
        q = q.view(batch, 1, self.heads, self.head_dim).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + last_bias
        ctx = torch.matmul(self.drop(torch.softmax(scores, dim=-1)), v)
        ctx = ctx.transpose(1, 2).reshape(batch, 1, dim)
        y = x[:, -1:] + self.drop(self.proj(ctx))
        return y + self.drop(self.ff(self.norm2(y)))


class UserEncoder(nn.Module):
    """Sequence of fused item vectors (right-aligned, newest last) -> user vector z_i, and f_i with α.

    This is exactly the graph exported to ONNX: inputs item_vectors [B, L, D], mask [B, L],
    event_types [B, L]; positions count from the right edge of a max_len window, so training
    (left-padded windows) and serving (batches padded to their own width) agree.
    """

    alpha: torch.Tensor
    decay: torch.Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.dim)
        self.type_emb = nn.Embedding(cfg.n_event_types + 1, cfg.dim, padding_idx=0)
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.dropout) for _ in range(cfg.layers))
        self.in_norm = nn.LayerNorm(cfg.dim)
        self.out_norm = nn.LayerNorm(cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.register_buffer("alpha", torch.tensor(1.0))
        self.register_buffer("decay", torch.tensor(0.8))
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        nn.init.normal_(self.type_emb.weight, std=0.02)

    def hidden(self, item_vectors: torch.Tensor, mask: torch.Tensor, event_types: torch.Tensor) -> torch.Tensor:
        """Causal hidden states [B, L, D]: step t sees steps <= t only."""
        x, attn_bias = self._inputs(item_vectors, mask, event_types)
        h = x
        for block in self.blocks:
            h = block(h, attn_bias)
        return self.out_norm(h)

    def last_hidden(self, item_vectors: torch.Tensor, mask: torch.Tensor, event_types: torch.Tensor) -> torch.Tensor:
        """`hidden(...)[:, -1]` [B, D], the last block computed for the newest step only (the user
        vector; what the worker's micro-batches and the exported graph run)."""
        x, attn_bias = self._inputs(item_vectors, mask, event_types)
        if not len(self.blocks):
            return self.out_norm(x[:, -1])
        h = x
        for block in self.blocks[:-1]:
            h = block(h, attn_bias)
        last = self.blocks[-1]
        assert isinstance(last, Block)
        return self.out_norm(last.forward_last(h, attn_bias[:, :, -1:]))[:, 0]

    def _inputs(
        self, item_vectors: torch.Tensor, mask: torch.Tensor, event_types: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The first block's input [B, L, D] and the attention bias [B, 1, L, L] (causal + padding)."""
        width = item_vectors.shape[1]
        positions = torch.arange(width, device=item_vectors.device) + (self.cfg.max_len - width)
        x = item_vectors + self.pos_emb(positions)[None] + self.type_emb(event_types)
        x = self.drop(self.in_norm(x)) * mask.unsqueeze(-1)
        steps = torch.arange(width, device=x.device)
        future = steps[None, :] > steps[:, None]  # [L, L]: key after query
        blocked = future[None] | (mask == 0)[:, None, :]  # [B, L, L]: future steps and padding
        # a padded query row would see nothing (NaN softmax): let every row see itself
        blocked = blocked & (steps[None, :] != steps[:, None])[None]
        return x, (blocked.to(x.dtype) * -1e9).unsqueeze(1)

    def forward(self, item_vectors: torch.Tensor, mask: torch.Tensor, event_types: torch.Tensor) -> torch.Tensor:
        z = self.last_hidden(item_vectors, mask, event_types)
        # F(x_i): recency-decayed mean of the history's item vectors
        width = item_vectors.shape[1]
        steps_from_end = torch.arange(width - 1, -1, -1, device=item_vectors.device, dtype=item_vectors.dtype)
        w = (self.decay**steps_from_end)[None, :] * mask
        profile = (w.unsqueeze(-1) * item_vectors).sum(1) / w.sum(1, keepdim=True).clamp(min=1e-9)
        return self.alpha * z + (1.0 - self.alpha) * profile


class SeqRecModel(nn.Module):
    def __init__(
        self,
        cfg: ModelConfig,
        text: torch.Tensor,
        categories: torch.Tensor,
        brands: torch.Tensor,
        pop_bucket: torch.Tensor,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.items = FusedItems(cfg, text, categories, brands, pop_bucket)
        self.user = UserEncoder(cfg)

    def sequence_logits(self, seq: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """Training: logits over the catalog at every step [B, L, n_items + 1]."""
        table = self.items()
        mask = (seq > 0).to(table.dtype)
        h = self.user.hidden(table[seq], mask, types)
        return h @ table.T

    def user_vectors(self, seq: torch.Tensor, types: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        table = self.items() if table is None else table
        mask = (seq > 0).to(table.dtype)
        return self.user(table[seq], mask, types)
