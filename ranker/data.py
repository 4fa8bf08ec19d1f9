"""Sequences for training and evaluation: item indexing, leave-one-out and hold-out splits. Pure.

Item indices start at 1 (0 is padding). Protocols:
- leave-one-out: each user's last event is the test target (history: everything before it), the
  one before it the validation target (history: everything before that); training uses the rest.
- hold-out file: every event given is history; the target is the held-out item after it. The
  last given event is the validation target (early stopping, α/β), training uses the rest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from schemas.events import EVENT_TYPE_INDEX
from shopdata.loader import Dataset, category_labels

__all__ = [
    "Catalog",
    "Split",
    "SplitData",
    "build_catalog",
    "cold_item_ids",
    "cold_items_salt",
    "drop_cold_items",
    "holdout_split",
    "leave_one_out",
    "train_all_but_last",
    "user_sequences",
]


@dataclass(frozen=True)
class Catalog:
    ids: list[str]
    texts: list[str]
    categories: np.ndarray  # [n_items + 1] category index per item (0 = padding/unknown)
    brands: np.ndarray
    category_names: list[str]
    brand_names: list[str]

    @property
    def n_items(self) -> int:
        return len(self.ids)

    def index(self) -> dict[str, int]:
        return {item_id: i + 1 for i, item_id in enumerate(self.ids)}


@dataclass(frozen=True)
class Split:
    users: list[str]
    histories: list[list[int]]
    history_types: list[list[int]]
    targets: np.ndarray  # item indices (1-based)


@dataclass(frozen=True)
class SplitData:
    protocol: str
    train: list[list[int]]
    train_types: list[list[int]]
    valid: Split
    test: Split
    #: every event before the test targets, for every user (those too short to be scored as well): what
    #: the shipped ranking stage counts its co-visits and popularity from. The validation targets are in
    #: it (they precede the test targets), so a model deployed or scored on a hold-out has the shop's
    #: latest events, as item-kNN fitted on them does; empty: `train`.
    given: list[list[int]] = field(default_factory=list)


def build_catalog(dataset: Dataset) -> Catalog:
    """Indices of categories (an item's primary label, shopdata.loader.category_labels) and brands;
    0 where the catalog has none, so a catalog without either column still builds."""
    cat_names: dict[str, int] = {}
    brand_names: dict[str, int] = {}
    cats = [0]
    brands = [0]
    for it in dataset.items:
        labels = category_labels(it.category)
        cats.append(cat_names.setdefault(labels[0], len(cat_names) + 1) if labels else 0)
        brands.append(brand_names.setdefault(it.brand, len(brand_names) + 1) if it.brand else 0)
    return Catalog(
        ids=[it.item_id for it in dataset.items],
        texts=[it.text() for it in dataset.items],
        categories=np.array(cats, dtype=np.int64),
        brands=np.array(brands, dtype=np.int64),
        category_names=["", *cat_names],
        brand_names=["", *brand_names],
    )


def user_sequences(dataset: Dataset, catalog: Catalog) -> dict[str, tuple[list[int], list[int]]]:
    """Per user, (item indices, event type indices) in time order; searches and unknown items dropped."""
    index = catalog.index()
    out: dict[str, tuple[list[int], list[int]]] = {}
    for user, events in dataset.by_user().items():
        items, types = [], []
        for ev in events:
            if ev.item_id is not None and ev.item_id in index:
                items.append(index[ev.item_id])
                types.append(EVENT_TYPE_INDEX[ev.type.value])
        if items:
            out[user] = (items, types)
    return out


def _split(
    users: Iterable[str],
    seqs: dict[str, tuple[list[int], list[int]]],
    cut: int,
    targets: dict[str, int] | None = None,
) -> Split:
    us, hs, ts, ys = [], [], [], []
    for u in users:
        items, types = seqs[u]
        if targets is None:
            if len(items) <= cut:
                continue
            hist, htypes, target = (
                items[: len(items) - cut],
                types[: len(items) - cut],
                items[len(items) - cut],
            )
        else:
            hist, htypes, target = items, types, targets[u]
        us.append(u)
        hs.append(hist)
        ts.append(htypes)
        ys.append(target)
    return Split(users=us, histories=hs, history_types=ts, targets=np.array(ys, dtype=np.int64))


def leave_one_out(seqs: dict[str, tuple[list[int], list[int]]]) -> SplitData:
    users = sorted(u for u, (items, _) in seqs.items() if len(items) >= 3)
    train = [seqs[u][0][:-2] for u in users]
    train_types = [seqs[u][1][:-2] for u in users]
    scored = set(users)
    return SplitData(
        protocol="leave-one-out",
        train=train,
        train_types=train_types,
        valid=_split(users, seqs, 2),
        test=_split(users, seqs, 1),
        given=[seqs[u][0][:-1] if u in scored else list(seqs[u][0]) for u in sorted(seqs)],
    )


def holdout_split(
    seqs: dict[str, tuple[list[int], list[int]]], holdout: Sequence[tuple[str, str]], catalog: Catalog
) -> SplitData:
    """Targets from (user_id, item_id) rows; users or items unknown to the data are reported, not guessed."""
    index = catalog.index()
    unknown = [(u, i) for u, i in holdout if u not in seqs or i not in index]
    if unknown:
        raise ValueError(f"{len(unknown)} hold-out rows name unknown users or items, e.g. {unknown[:3]}")
    targets = {u: index[i] for u, i in holdout}
    users = sorted(targets)
    with_valid = [u for u in users if len(seqs[u][0]) >= 2]
    return SplitData(
        protocol="holdout",
        train=[seqs[u][0][:-1] for u in with_valid],
        train_types=[seqs[u][1][:-1] for u in with_valid],
        valid=_split(with_valid, seqs, 1),
        test=_split(users, seqs, 0, targets),
        given=[list(seqs[u][0]) for u in sorted(seqs)],
    )


def cold_item_ids(item_ids: Iterable[str], share: float, salt: bytes = b"") -> list[str]:
    """The `cold-items` protocol's items: those whose id hashes (sha256) below `share` of the hash
    range. Depends on the id alone, so any shop gets ~share of its items, the same ones every run.
    Another `salt` draws another such share (the ranking stage's pretend-new items)."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"the cold-item share is in [0, 1), got {share}")
    limit = int(share * 2**64)
    return [i for i in item_ids if int.from_bytes(hashlib.sha256(salt + i.encode()).digest()[:8], "big") < limit]


def cold_items_salt(draw: str) -> bytes:
    """The salt of `fusionrec train --cold-items-draw`: "" is the protocol's default share (no salt,
    as bundles before the option); any other text draws another, never the ranking stage's own."""
    return f"cold-{draw}:".encode() if draw else b""


def drop_cold_items(data: SplitData, cold: set[int]) -> SplitData:
    """Cold items (1-based indices) removed from every training sequence, and validation users whose
    target is cold left out (validation chooses epochs and α: it must not learn them either). A
    history may still hold them, as it may at serving time: their vectors come from their text."""
    if not cold:
        return data
    train, types = [], []
    for seq, typ in zip(data.train, data.train_types, strict=True):
        keep = [j for j, i in enumerate(seq) if i not in cold]
        if not keep:
            continue  # a history of cold items only: nothing left to learn from
        train.append([seq[j] for j in keep])
        types.append([typ[j] for j in keep])
    v = data.valid
    rows = [r for r, t in enumerate(v.targets) if int(t) not in cold]
    valid = Split(
        users=[v.users[r] for r in rows],
        histories=[v.histories[r] for r in rows],
        history_types=[v.history_types[r] for r in rows],
        targets=v.targets[rows],
    )
    given = [[i for i in seq if i not in cold] for seq in data.given]
    return replace(data, train=train, train_types=types, valid=valid, given=[g for g in given if g])


def train_all_but_last(seqs: dict[str, tuple[list[int], list[int]]]) -> SplitData:
    """Train on every event but each user's last, validate on the last (for deployment / hold-out)."""
    users = sorted(u for u, (items, _) in seqs.items() if len(items) >= 2)
    return SplitData(
        protocol="all-but-last",
        train=[seqs[u][0][:-1] for u in users],
        train_types=[seqs[u][1][:-1] for u in users],
        valid=_split(users, seqs, 1),
        test=_split(users, seqs, 1),
        given=[list(seqs[u][0]) for u in sorted(seqs)],  # deployment: every event counts
    )
