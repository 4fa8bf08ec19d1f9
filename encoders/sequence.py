"""Runtime for the user-sequence encoder: an ONNX graph fed with sequences of item vectors.

Contract of the graph (the ranker exports into it): inputs `item_vectors` float32
[batch, length, dim] and `mask` [batch, length] (1 = real step, 0 = padding; bool, int or float
as the graph declares), optionally `event_types` int64 [batch, length]; first output: the user
vector [batch, out_dim]. Sequences are right-aligned (the newest step last) and batched by
length so short histories don't pay for long ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from pathlib import Path

import numpy as np

from encoders.manifest import EncoderError
from encoders.session import ORT_ERRORS, SessionConfig, create_session, model_error

__all__ = ["SequenceEncoder", "length_buckets", "padded_feed"]

_NP_TYPES = {
    "tensor(float)": np.float32,
    "tensor(bool)": np.bool_,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(float16)": np.float16,
}


class SequenceEncoder:
    def __init__(self, model: str | Path, session: SessionConfig = SessionConfig(), max_length: int = 50) -> None:
        self.model = model
        self.session = create_session(model, session)  # EncoderError naming the file when it does not load
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        missing = {"item_vectors", "mask"} - set(self.inputs)
        if missing:
            raise EncoderError(f"{model}: the sequence graph lacks input(s) {sorted(missing)}: not a user encoder")
        self.output_name = self.session.get_outputs()[0].name
        self.max_length = max_length

    def encode(
        self,
        sequences: Sequence[np.ndarray],
        event_types: Sequence[Sequence[int]] | None = None,
        batch_size: int = 256,
    ) -> np.ndarray:
        """One user vector per sequence ([steps, dim] arrays, oldest first; the last max_length kept)."""
        if not sequences:
            return np.zeros((0, 0), dtype=np.float32)
        seqs = [np.asarray(s, dtype=np.float32)[-self.max_length :] for s in sequences]
        dim = max((s.shape[1] for s in seqs if s.ndim == 2), default=1)
        table = np.concatenate([s for s in seqs if len(s)] or [np.zeros((0, dim), np.float32)])
        ends = np.cumsum([len(s) for s in seqs])
        rows = [range(int(end) - len(s), int(end)) for s, end in zip(seqs, ends, strict=True)]
        return self.encode_rows(table, rows, event_types, batch_size=batch_size)

    def encode_rows(
        self,
        table: np.ndarray,
        histories: Sequence[Sequence[int]],
        event_types: Sequence[Sequence[int]] | None = None,
        batch_size: int = 256,
    ) -> np.ndarray:
        """`encode` for sequences given as rows of `table` (item vectors), oldest first: sorted by
        length into buckets of `batch_size`, each left-padded with one gather (the streaming worker
        encodes every touched user of a micro-batch at once; a copy per user showed in its profile)."""
        if not histories:
            return np.zeros((0, 0), dtype=np.float32)
        hist = [list(h)[-self.max_length :] for h in histories]
        typed = (
            [list(t)[-len(h) :] if h else [] for t, h in zip(event_types, hist, strict=True)] if event_types else None
        )
        lengths = np.fromiter((len(h) for h in hist), dtype=np.int64, count=len(hist))
        mask_type = _NP_TYPES.get(self.inputs["mask"].type, np.float32)
        out: np.ndarray | None = None
        for idx in length_buckets(lengths, batch_size):
            feed = padded_feed(table, [hist[i] for i in idx], [typed[i] for i in idx] if typed is not None else None)
            feed["mask"] = feed["mask"].astype(mask_type, copy=False)  # float32 graphs: no copy
            if "event_types" not in self.inputs:
                del feed["event_types"]
            try:
                result = self.session.run([self.output_name], feed)[0]
            except ORT_ERRORS as exc:
                raise model_error(self.model, exc, "run") from exc
            if out is None:
                out = np.zeros((len(hist), result.shape[1]), dtype=np.float32)
            out[idx] = result
        assert out is not None
        return out


def padded_feed(
    table: np.ndarray, histories: Sequence[Sequence[int]], types: Sequence[Sequence[int]] | None = None
) -> dict[str, np.ndarray]:
    """The graph's feed for `histories` (item ROWS of `table`, oldest first, each at most the window):
    left-padded to the longest, with one gather: item_vectors [B, W, D] (zeros at padding), mask
    [B, W] float32, event_types [B, W] int64 (zeros without `types`)."""
    lens = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    width = max(int(lens.max()), 1) if len(lens) else 1
    user = np.repeat(np.arange(len(lens)), lens)
    col = width - lens[user] + (np.arange(int(lens.sum())) - (np.cumsum(lens) - lens)[user])
    rows = np.zeros((len(lens), width), dtype=np.int64)
    mask = np.zeros((len(lens), width), dtype=np.float32)
    rows[user, col] = np.fromiter(chain.from_iterable(histories), dtype=np.int64)
    mask[user, col] = 1
    event_types = np.zeros((len(lens), width), dtype=np.int64)
    if types is not None:
        event_types[user, col] = np.fromiter(chain.from_iterable(types), dtype=np.int64)
    vectors = np.asarray(table[rows], dtype=np.float32) * mask[:, :, None]
    return {"item_vectors": vectors, "mask": mask, "event_types": event_types}


def length_buckets(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Indices of `lengths` sorted by length, cut into buckets of at most `batch_size` whose lengths
    share a power-of-two class (1, 2, 3-4, 5-8, 9-16, ...): a bucket is padded to its longest member,
    so no sequence is padded to more than twice its length. Cut by count alone, one long history
    padded a whole micro-batch to it: on Scientific's histories (median 5, the longest past the
    window) a batch of 500 users encoded in 27 ms this way against 64 ms (bench/sequence.py)."""
    order = np.argsort(np.maximum(lengths, 1), kind="stable")
    classes = np.ceil(np.log2(np.maximum(lengths[order], 1))).astype(np.int64)
    cuts = np.flatnonzero(np.diff(classes)) + 1
    buckets: list[np.ndarray] = []
    for group in np.split(order, cuts):
        buckets.extend(group[start : start + batch_size] for start in range(0, len(group), batch_size))
    return buckets
