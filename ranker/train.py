"""Training the sequential recommender (torch; `train` extra): full-softmax cross-entropy at every
step, fixed seeds, early stopping on validation NDCG@10, α chosen on validation afterwards."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ranker.data import Catalog, Split, SplitData
from ranker.metrics import ndcg_at_k, target_ranks
from ranker.model import ModelConfig, SeqRecModel
from schemas.progress import progress as progress_bar

__all__ = [
    "DEVICES",
    "TrainConfig",
    "TrainResult",
    "TrainRun",
    "auto_max_len",
    "catalog_tensors",
    "choose_alpha",
    "pad_left",
    "resolve_device",
    "score_split",
    "seed_everything",
    "training_windows",
]

log = logging.getLogger("fusionrec.train")

#: an epoch longer than this reports its steps too (a progress line every 10 s instead of none)
SLOW_EPOCH_S = 30.0


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 150
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 10
    seed: int = 42
    threads: int = 2
    eval_batch: int = 1024
    sampled_negatives: int = 0  # 0: full softmax over the catalog; N: sampled softmax with N shared negatives
    device: str = "cpu"  # torch device the models train on: "cpu" or "cuda" (resolve_device turns "auto" into one)


@dataclass
class TrainResult:
    model: SeqRecModel
    best_epoch: int
    best_valid_ndcg10: float
    epochs_run: int
    seconds: float
    curve: list[float] = field(default_factory=list)


#: what --device takes: auto (CUDA when torch sees a GPU), cpu, cuda (a GPU required)
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> str:
    """ "cpu" or "cuda" for a --device choice; ValueError, with what is missing, for cuda without a GPU."""
    if name not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {name!r}")
    has_cuda = torch.cuda.is_available()
    if name == "cuda" and not has_cuda:
        built = torch.version.cuda
        why = f"this torch is built for CUDA {built} but sees no GPU" if built else "this torch is a CPU-only build"
        raise ValueError(f"--device cuda: {why} (use --device auto or cpu)")
    return "cuda" if name == "cuda" or (name == "auto" and has_cuda) else "cpu"


def seed_everything(seed: int, threads: int, device: str = "cpu") -> None:
    """Same seed, same model on CPU. On CUDA some kernels (index_add's atomics) have no deterministic
    version: they run and warn instead of failing, so a GPU run is repeatable only to float rounding."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=device != "cpu")


def catalog_tensors(
    catalog: Catalog, text: np.ndarray, train: Sequence[Sequence[int]], pop_buckets: int = 16
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(text [n+1, d], categories, brands, popularity bucket) with row 0 as padding."""
    counts = np.zeros(catalog.n_items + 1, dtype=np.float64)
    for seq in train:
        np.add.at(counts, np.asarray(seq, dtype=np.int64), 1)  # an empty sequence too
    buckets = np.minimum(np.floor(np.log2(counts + 1) * 2), pop_buckets).astype(np.int64)
    padded = np.vstack([np.zeros((1, text.shape[1]), dtype=np.float32), text.astype(np.float32)])
    return (
        torch.from_numpy(padded),
        torch.from_numpy(catalog.categories),
        torch.from_numpy(catalog.brands),
        torch.from_numpy(buckets),
    )


def pad_left(seqs: Sequence[Sequence[int]], width: int | None = None) -> torch.Tensor:
    width = width or max(1, max(len(s) for s in seqs))
    out = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        s = list(s)[-width:]
        if s:
            out[r, width - len(s) :] = torch.tensor(s, dtype=torch.long)
    return out


def score_split(model: SeqRecModel, split: Split, batch: int = 1024) -> np.ndarray:
    """Scores [users, n_items] (column j = item j + 1) from the model's user vectors.

    Users are batched by history length, so a batch pads only to its own longest history."""
    model.eval()
    device = model.items.text.device
    max_len = model.cfg.max_len
    order = np.argsort([min(len(h), max_len) for h in split.histories], kind="stable")
    out = np.zeros((len(split.histories), model.cfg.n_items), dtype=np.float32)
    with torch.no_grad():
        table = model.items()
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            hist = [split.histories[i] for i in idx]
            types = [split.history_types[i] for i in idx]
            width = min(max_len, max(len(h) for h in hist))
            f = model.user_vectors(pad_left(hist, width).to(device), pad_left(types, width).to(device), table)
            out[idx] = (f @ table[1:].T).cpu().numpy()
    return out


def valid_ndcg(model: SeqRecModel, split: Split, batch: int) -> float:
    scores = score_split(model, split, batch)
    ranks, _ = target_ranks(scores, split.targets - 1, [[i - 1 for i in h] for h in split.histories])
    return ndcg_at_k(ranks, 10)


def training_windows(
    train: Sequence[Sequence[int]], types: Sequence[Sequence[int]], max_len: int
) -> list[tuple[list[int], list[int]]]:
    """Every part of every history, cut from the end into windows of max_len + 1 steps with stride
    max_len, so each event but a user's first is a target exactly once (a long history is as much
    training data as many short ones, and an epoch costs one pass over the events). The oldest
    window may be shorter; one with a single event teaches nothing and is dropped."""
    out: list[tuple[list[int], list[int]]] = []
    for s, t in zip(train, types, strict=True):
        end = len(s)
        while end >= 2:
            start = max(0, end - (max_len + 1))
            out.append((list(s[start:end]), list(t[start:end])))
            end -= max_len
    return out


def auto_max_len(train: Sequence[Sequence[int]], floor: int = 20, cap: int = 50) -> int:
    """The 90th percentile of training history lengths, within [floor, cap]: long enough for nine
    users in ten, short enough that attention stays cheap on shops with a few very long histories.
    The floor keeps short-history shops (Scientific: p90 7, p99 17) close to the old fixed 50."""
    lengths = [len(s) for s in train if s]
    if not lengths:
        return floor
    return int(min(cap, max(floor, math.ceil(float(np.percentile(lengths, 90))))))


def _length_buckets(
    windows: list[tuple[list[int], list[int]]], batch_size: int, rng: np.random.Generator
) -> list[list[tuple[list[int], list[int]]]]:
    """Batches of similar length (little padding), in random order; ties shuffled each epoch."""
    keys = rng.random(len(windows))
    order = sorted(range(len(windows)), key=lambda i: (len(windows[i][0]), keys[i]))
    batches = [[windows[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _loss(
    model: SeqRecModel,
    inputs: torch.Tensor,
    in_types: torch.Tensor,
    targets: torch.Tensor,
    sampled: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Cross-entropy where a real target exists: over the whole catalog (full softmax), or over the
    batch's targets plus `sampled` uniformly drawn negatives shared by the batch (sampled softmax,
    for catalogs too large to score every step; uniform sampling needs no log-Q correction)."""
    table = model.items()
    mask = (inputs > 0).to(table.dtype)
    h = model.user.hidden(table[inputs], mask, in_types)
    real = targets > 0
    wanted = targets[real]
    # items with no training events are no target's negatives either: their absence from the training
    # data says nothing against them (a new item), and pushing them away would bury every new item
    unseen = model.items.known[:, 0] == 0
    if sampled <= 0:
        logits = h[real] @ table.T
        logits[:, unseen] = -math.inf  # padding (row 0) too: never a prediction
        return torch.nn.functional.cross_entropy(logits, wanted)
    negatives = torch.randint(1, table.shape[0], (sampled,), generator=generator, device=table.device)
    negatives = negatives[~unseen[negatives]]
    candidates, inverse = torch.unique(torch.cat([wanted, negatives]), return_inverse=True)
    logits = h[real] @ table[candidates].T
    return torch.nn.functional.cross_entropy(logits, inverse[: len(wanted)])


class TrainRun:
    """One variant's training, resumable between epochs: `run(until)` trains up to epoch `until`
    (or until early stopping), and may be called again to go on where it stopped, the same loop,
    optimiser and samplers, so fit() can screen every variant for a few epochs and carry on only
    with the best (successive halving)."""

    def __init__(
        self, cfg: ModelConfig, tcfg: TrainConfig, data: SplitData, tensors: tuple[torch.Tensor, ...], desc: str
    ) -> None:
        seed_everything(tcfg.seed, tcfg.threads, tcfg.device)
        self.cfg, self.tcfg, self.data, self.desc = cfg, tcfg, data, desc
        self.device = torch.device(tcfg.device)
        self.model = SeqRecModel(cfg, *tensors).to(self.device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
        self.windows = training_windows(data.train, data.train_types, cfg.max_len)
        if not self.windows:
            raise ValueError("no user has two training events: nothing to learn from")
        self.rng = np.random.default_rng(tcfg.seed)
        self.gen = torch.Generator(device=self.device).manual_seed(tcfg.seed)
        self.best, self.best_epoch, self.bad = -1.0, 0, 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.curve: list[float] = []
        self.epoch = 0
        self.stopped = False  # early stopping, or the epoch budget spent
        self.stopped_by = ""  # "early stopping", "epochs" or "time budget" once stopped
        self._last_epoch_s = 0.0
        self.seconds = 0.0

    @property
    def epoch_seconds(self) -> float:
        """Mean seconds of one epoch so far (training and validation), 0 before the first."""
        return self.seconds / self.epoch if self.epoch else 0.0

    def run(self, until: int, progress: bool = True, deadline: float | None = None) -> None:
        """Train epochs self.epoch+1 .. min(until, tcfg.epochs), stopping early on validation, or
        before an epoch that would end after `deadline` (time.perf_counter() seconds; the first
        epoch always runs, so there is a model)."""
        last = min(until, self.tcfg.epochs)
        if self.stopped or last <= self.epoch:
            return
        model = self.model
        bar = progress_bar(range(self.epoch + 1, last + 1), desc=self.desc, unit="epoch", enabled=progress)
        for epoch in bar:
            if deadline is not None and self.epoch > 0 and time.perf_counter() + self.epoch_seconds > deadline:
                self.stopped, self.stopped_by = True, "time budget"
                log.info("%s: stopped by the time budget after %d epochs", self.desc, self.epoch)
                break
            self.epoch = epoch
            model.train()
            total, steps = 0.0, 0
            epoch_started = time.perf_counter()
            batches = _length_buckets(self.windows, self.tcfg.batch_size, self.rng)
            # steps reported within an epoch only where epochs are long (a shop with many events):
            # the first epoch, and any after one that took over SLOW_EPOCH_S
            slow = epoch == 1 or self._last_epoch_s > SLOW_EPOCH_S
            steps_bar = progress_bar(batches, desc=f"{self.desc} epoch {epoch}", unit="step", enabled=progress and slow)
            for chunk in steps_bar:
                seq = pad_left([w[0] for w in chunk]).to(self.device, non_blocking=True)
                typ = pad_left([w[1] for w in chunk]).to(self.device, non_blocking=True)
                loss = _loss(model, seq[:, :-1], typ[:, :-1], seq[:, 1:], self.tcfg.sampled_negatives, self.gen)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                total += float(loss.detach())
                steps += 1
            score = valid_ndcg(model, self.data.valid, self.tcfg.eval_batch)
            self._last_epoch_s = time.perf_counter() - epoch_started
            self.seconds += self._last_epoch_s
            self.curve.append(score)
            bar.set_postfix(loss=f"{total / max(steps, 1):.3f}", valid_ndcg10=f"{score:.4f}")
            if score > self.best:
                self.best, self.best_epoch, self.bad = score, epoch, 0
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                self.bad += 1
                if self.bad >= self.tcfg.patience:
                    self.stopped, self.stopped_by = True, "early stopping"
                    break
        bar.close()
        if self.epoch >= self.tcfg.epochs and not self.stopped:
            self.stopped, self.stopped_by = True, "epochs"

    def result(self) -> TrainResult:
        """The model at its best validation epoch so far (in eval mode)."""
        assert self.best_state is not None, "run() first"
        self.model.load_state_dict(self.best_state)
        self.model.eval()
        log.info(
            "trained fusion=%s beta=%.2f best_epoch=%d valid_ndcg10=%.4f epochs=%d seconds=%.1f",
            self.cfg.fusion,
            self.cfg.beta,
            self.best_epoch,
            self.best,
            self.epoch,
            self.seconds,
        )
        return TrainResult(self.model, self.best_epoch, self.best, self.epoch, self.seconds, list(self.curve))


def choose_alpha(
    model: SeqRecModel,
    valid: Split,
    batch: int = 1024,
    alphas: Sequence[float] = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5),
    decays: Sequence[float] = (0.5, 0.8),
) -> tuple[float, float, float]:
    """Grid-search α (and F's recency decay) on validation NDCG@10; returns (alpha, decay, ndcg)."""
    best = (1.0, 0.8, -1.0)
    for decay in decays:
        for alpha in alphas:
            model.user.alpha.fill_(alpha)
            model.user.decay.fill_(decay)
            score = valid_ndcg(model, valid, batch)
            if score > best[2] + 1e-9:
                best = (alpha, decay, score)
    model.user.alpha.fill_(best[0])
    model.user.decay.fill_(best[1])
    return best
