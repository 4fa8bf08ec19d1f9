"""The behaviour-tuned text tower (torch; `train` extra): the text encoder's token adapter
(encoders.adapter) trained with users' next items as the supervision, and chosen on validation.

Training: the pretrained encoder's last token states of every catalog item are computed once and
kept packed (real tokens only). Each step runs the adapter over all of them (cheap: a bottleneck per
token), pools every item's vector, and asks the recency-weighted profile of a user's last items to
pick the next item among the catalog (softmax over the items with training events, temperature τ).

Choice: a share of the items (`HELDOUT_SHARE`, by a salted hash of the id) is never a training
target nor a negative. Validation users whose target is one of them are what a new item looks like
to the tower: the text profile's Recall@50 over the whole catalog (their history removed), as
evaluate's cold-items protocol scores it. Early stopping follows it, and the tuned tower replaces
the pretrained one only when it beats it there by `min_gain`; otherwise the pretrained encoder
stays (the manifest's text_tower says which, and both figures).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoders.adapter import TokenAdapter
from encoders.bert_graph import PooledEncoder, TorchAdapter
from encoders.export import load_hf
from ranker.data import Split, cold_item_ids
from schemas.progress import progress as progress_bar

__all__ = [
    "HELDOUT_SHARE",
    "TokenStates",
    "TowerConfig",
    "TowerOverBudget",
    "pooled",
    "profile_recall",
    "token_states",
    "tune_tower",
]

log = logging.getLogger("fusionrec.tower")

#: share of the items kept out of the tower's training, to validate it on items it never learned from
HELDOUT_SHARE = 0.1
#: fewer validation users with a held-out target than this cannot choose between the towers
MIN_VALID_USERS = 30


@dataclass(frozen=True)
class TowerConfig:
    # chosen on Scientific's held-out validation items (rank 64 / τ 0.05 and τ 0.1 lost to the pretrained
    # encoder there; rank 16 / τ 0.2: Recall@50 0.2035 -> 0.2135)
    rank: int = 16
    lr: float = 3e-4
    temperature: float = 0.2
    epochs: int = 6
    patience: int = 2
    batch: int = 1024
    pairs_per_epoch: int = 32768  # a long-history shop samples this many (history, next item) pairs per epoch
    history: int = 20  # the profile's last items
    decay: float = 0.8  # the profile's recency weight (ranker.baselines.recency_weights)
    min_gain: float = 0.02  # relative Recall@50 gain on held-out items the tuned tower needs to be chosen
    seed: int = 42

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TokenStates:
    """Every item's last-layer token states, real tokens only: tokens [N, dim], owner [N] (item row)."""

    tokens: torch.Tensor
    owner: torch.Tensor
    counts: torch.Tensor  # [n_items] tokens per item

    @property
    def n_items(self) -> int:
        return int(self.counts.shape[0])

    def to(self, device: str | torch.device) -> TokenStates:
        return TokenStates(self.tokens.to(device), self.owner.to(device), self.counts.to(device))


class TowerOverBudget(RuntimeError):
    """The catalogue's token states would not be done by the tower's deadline."""


#: the token states project their end only after this much of their work: the first batches hold the
#: shortest texts and a cold interpreter, and one projection from them (1,035 s for Scientific's 40 s of
#: work, on a busy machine) dropped the tower
PROJECT_AFTER_S = 3.0
PROJECT_AFTER_SHARE = 0.05


def _check_budget(started: float, done: int, total: int, deadline: float) -> None:
    """TowerOverBudget when the deadline has passed, or when enough work is done to project the rest
    and it projects past the deadline."""
    now = time.perf_counter()
    elapsed = now - started
    projected = elapsed * total / max(done, 1)
    enough = elapsed >= PROJECT_AFTER_S and done >= total * PROJECT_AFTER_SHARE
    if now > deadline or (enough and started + projected > deadline):
        raise TowerOverBudget(
            f"the catalogue's {total} tokens would take about {projected:.0f} s to read, past the tower's "
            "share of the time budget"
        )


def token_states(
    model_dir: Path,
    texts: Sequence[str],
    max_length: int,
    batch: int = 64,
    progress: bool = True,
    deadline: float | None = None,
    device: str = "cpu",
) -> TokenStates:
    """The pretrained encoder's last token states for `texts` (length-sorted batches, pads dropped).
    `deadline` (time.perf_counter() seconds): TowerOverBudget as soon as the tokens done so far
    project the rest past it (a large catalogue is not encoded for minutes only to be dropped).
    The encoder runs on `device`; the states come back on the CPU."""
    model, tokenizer = load_hf(model_dir)
    encoder = PooledEncoder(model).eval().to(device)
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    total, done = int(lengths.sum()), 0
    parts: list[torch.Tensor] = [torch.empty(0)] * len(texts)
    starts = range(0, len(order), batch)
    started = time.perf_counter()  # the projection extrapolates the batches' work, not loading the model
    with torch.inference_mode():
        for start in progress_bar(starts, desc="tower: token states", unit="batch", enabled=progress):
            idx = order[start : start + batch]
            enc = tokenizer(
                [texts[i] for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
            types = enc.get("token_type_ids", torch.zeros_like(enc["input_ids"]))
            hidden = encoder.hidden(enc["input_ids"].to(device), enc["attention_mask"].to(device), types.to(device))
            hidden = hidden.cpu()
            for row, item in enumerate(idx):
                parts[item] = hidden[row, : int(enc["attention_mask"][row].sum())].clone()
            done += int(lengths[idx].sum())
            if deadline is not None and done < total:
                _check_budget(started, done, total, deadline)
    counts = torch.tensor([len(p) for p in parts], dtype=torch.long)
    owner = torch.repeat_interleave(torch.arange(len(parts)), counts)
    return TokenStates(torch.cat(parts), owner, counts)


def pooled(states: TokenStates, adapter: TorchAdapter | None = None) -> torch.Tensor:
    """[n_items, dim] unit item vectors: masked mean of the (adapted) token states, as the ONNX graph."""
    x = states.tokens if adapter is None else adapter(states.tokens)
    sums = torch.zeros(states.n_items, x.shape[1], dtype=x.dtype, device=x.device).index_add(0, states.owner, x)
    means = sums / states.counts.clamp(min=1).unsqueeze(1).to(x.dtype)
    return torch.nn.functional.normalize(means, dim=1)


def _profiles(vectors: torch.Tensor, histories: Sequence[Sequence[int]], decay: float) -> torch.Tensor:
    """[users, dim] unit recency-weighted means of the history rows' vectors (newest weighs 1)."""
    users = [u for u, h in enumerate(histories) for _ in h]
    rows = [i for h in histories for i in h]
    weights = [decay ** (len(h) - 1 - k) for h in histories for k in range(len(h))]
    on = vectors.device
    w = torch.tensor(weights, dtype=vectors.dtype, device=on).unsqueeze(1)
    out = torch.zeros(len(histories), vectors.shape[1], dtype=vectors.dtype, device=on)
    picked = vectors[torch.tensor(rows, dtype=torch.long, device=on)] * w
    out = out.index_add(0, torch.tensor(users, dtype=torch.long, device=on), picked)
    return torch.nn.functional.normalize(out, dim=1)


def profile_recall(
    vectors: torch.Tensor, histories: Sequence[Sequence[int]], targets: Sequence[int], decay: float, k: int = 50
) -> float:
    """Recall@k of the text profile over every item, each user's history removed (0-based rows)."""
    with torch.no_grad():
        scores = _profiles(vectors, histories, decay) @ vectors.T
        for u, h in enumerate(histories):
            scores[u, list(h)] = -torch.inf
        tgt = torch.tensor(list(targets), dtype=torch.long, device=vectors.device)
        mine = scores[torch.arange(len(tgt), device=vectors.device), tgt]
        ranks = (scores > mine.unsqueeze(1)).sum(1)
        return float((ranks < k).float().mean())


def tune_tower(
    states: TokenStates,
    item_ids: Sequence[str],
    train: Sequence[Sequence[int]],
    valid: Split,
    cfg: TowerConfig = TowerConfig(),
    progress: bool = True,
    force: bool = False,
    deadline: float | None = None,
    device: str = "cpu",
) -> tuple[TokenAdapter | None, dict[str, Any]]:
    """(the adapter when validation chooses it, else None; what was measured). `train` and `valid`
    hold 1-based catalog rows, as ranker.data's splits do. `force`: the best tuned epoch is taken
    even where the pretrained encoder validates better (an untrained adapter only without pairs).
    `deadline` (time.perf_counter() seconds): no epoch starts that would end after it (the first
    always runs); the best epoch so far is what validation chooses from. It tunes on `device`."""
    started = time.perf_counter()
    states = states.to(device)
    n = states.n_items
    row_of = {item: r for r, item in enumerate(item_ids)}
    heldout = np.zeros(n, dtype=bool)
    heldout[[row_of[i] for i in cold_item_ids(item_ids, HELDOUT_SHARE, salt=b"tower-heldout:")]] = True
    counts = np.zeros(n, dtype=np.int64)
    for seq in train:
        np.add.at(counts, np.asarray(seq, dtype=np.int64) - 1, 1)
    softmax_items = torch.from_numpy((counts > 0) & ~heldout).to(device)
    pairs = [
        ([i - 1 for i in seq[max(0, j - cfg.history) : j]], seq[j] - 1)
        for seq in train
        for j in range(1, len(seq))
        if not heldout[seq[j] - 1]
    ]
    valid_rows = [u for u, t in enumerate(valid.targets) if heldout[int(t) - 1] and len(valid.histories[u])]
    v_hist = [[i - 1 for i in valid.histories[u][-cfg.history :]] for u in valid_rows]
    v_tgt = [int(valid.targets[u]) - 1 for u in valid_rows]
    info: dict[str, Any] = {
        "config": cfg.to_dict(),
        "heldout_items": int(heldout.sum()),
        "valid_users": len(valid_rows),
    }
    if not pairs or (len(valid_rows) < MIN_VALID_USERS and not force):
        reason = f"{len(valid_rows)} validation users have a held-out target (< {MIN_VALID_USERS})"
        return None, {**info, "chosen": "pretrained", "reason": reason if pairs else "no training pairs"}
    torch.manual_seed(cfg.seed)
    adapter = TorchAdapter(TokenAdapter.identity(int(states.tokens.shape[1]), cfg.rank, cfg.seed)).to(device)
    pretrained = profile_recall(pooled(states), v_hist, v_tgt, cfg.decay) if v_tgt else 0.0
    best, best_epoch, bad = (-1.0 if force else pretrained), 0, 0
    best_state = {k: v.clone() for k, v in adapter.state_dict().items()}
    opt = torch.optim.AdamW(adapter.parameters(), lr=cfg.lr, weight_decay=0.01)
    rng = np.random.default_rng(cfg.seed)
    curve = []
    epoch = 0
    bar = progress_bar(range(1, cfg.epochs + 1), desc="tower: tune", unit="epoch", enabled=progress)
    stopped_by = "epochs"
    for epoch in bar:
        spent = time.perf_counter() - started
        if deadline is not None and epoch > 1 and time.perf_counter() + spent / (epoch - 1) > deadline:
            stopped_by, epoch = "time budget", epoch - 1
            break
        adapter.train()
        take = rng.permutation(len(pairs))[: cfg.pairs_per_epoch]
        for start in range(0, len(take), cfg.batch):
            chunk = [pairs[i] for i in take[start : start + cfg.batch]]
            vectors = pooled(states, adapter)
            logits = _profiles(vectors, [h for h, _ in chunk], cfg.decay) @ vectors.T / cfg.temperature
            logits = logits.masked_fill(~softmax_items, -torch.inf)
            wanted = torch.tensor([t for _, t in chunk], device=logits.device)
            loss = torch.nn.functional.cross_entropy(logits, wanted)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        adapter.eval()
        with torch.no_grad():
            score = profile_recall(pooled(states, adapter), v_hist, v_tgt, cfg.decay) if v_tgt else 0.0
        curve.append(round(score, 5))
        bar.set_postfix(heldout_recall50=f"{score:.4f}")
        if score > best:
            best, best_epoch, bad = score, epoch, 0
            best_state = {k: v.clone() for k, v in adapter.state_dict().items()}
        else:
            bad += 1
            if bad >= cfg.patience:
                stopped_by = "early stopping"
                break
    bar.close()
    adapter.load_state_dict(best_state)
    chosen = best_epoch > 0 and (force or best >= pretrained * (1.0 + cfg.min_gain))
    info.update(
        chosen="tuned" if chosen else "pretrained",
        forced=force,
        valid_recall50_heldout={"pretrained": round(pretrained, 5), "tuned": round(best, 5)},
        best_epoch=best_epoch,
        epochs_run=epoch,
        stopped_by=stopped_by,
        curve=curve,
        train_pairs=len(pairs),
        seconds=round(time.perf_counter() - started, 1),
    )
    log.info(
        "text tower: held-out validation Recall@50 pretrained %.4f, tuned %.4f (epoch %d): %s chosen",
        pretrained,
        best,
        best_epoch,
        info["chosen"],
    )
    return (adapter.to_numpy() if chosen else None), info
