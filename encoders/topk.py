"""Exact inner-product retrieval as one ONNX Runtime call: Gemm(queries, itemsᵀ) -> TopK.

Why not numpy: `argpartition` over a [users, items] score matrix plus a sort of the winners was a
third of the streaming worker's ranking time; ONNX Runtime's TopK selects and sorts in one pass,
on as many threads as the session has, without the GIL, and breaks ties by the lower row (the
ONNX TopK contract), so results are deterministic. The graph has no weights: the item matrix is
an input, so the live index (new items) needs no re-export. `topk.onnx` ships with the package;
`build_topk_model` (needs the `onnx` package, `train` extra) rebuilds it and a test pins the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from itertools import chain
from typing import Any

import numpy as np

from encoders.session import SessionConfig, create_session

__all__ = ["OnnxExactRetriever", "build_topk_model"]

TOPK_OPSET = 17


def build_topk_model() -> bytes:
    """The serialized graph: queries [n, d], items [m, d], k [1] -> scores [n, k], rows [n, k]."""
    # lazy: onnx (the `train` extra) builds the graph once, offline; the package ships the result
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["queries", "items"], ["all_scores"], transB=1),
            helper.make_node("TopK", ["all_scores", "k"], ["scores", "rows"], axis=1, largest=1, sorted=1),
        ],
        "fusionrec_exact_topk",
        [
            helper.make_tensor_value_info("queries", TensorProto.FLOAT, ["n", "d"]),
            helper.make_tensor_value_info("items", TensorProto.FLOAT, ["m", "d"]),
            helper.make_tensor_value_info("k", TensorProto.INT64, [1]),
        ],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", "k"]),
            helper.make_tensor_value_info("rows", TensorProto.INT64, ["n", "k"]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", TOPK_OPSET)], producer_name="fusionrec")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def _shipped_model() -> bytes:
    return resources.files("encoders").joinpath("topk.onnx").read_bytes()


class OnnxExactRetriever:
    """The `ranker.retrieval.Retriever` interface on ONNX Runtime (same results as ExactRetriever;
    ties go to the lower row)."""

    def __init__(self, items: np.ndarray, session: SessionConfig = SessionConfig(provider="cpu")) -> None:
        self.items = np.ascontiguousarray(items, dtype=np.float32)
        self.session: Any = create_session(_shipped_model(), session)

    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[Sequence[int]] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(queries, dtype=np.float32)
        n_items = len(self.items)
        if len(q) == 0 or n_items == 0:
            return np.zeros((len(q), 0), dtype=np.int64), np.zeros((len(q), 0), dtype=np.float32)
        k = min(k, n_items)
        extra = max((len(e) for e in exclude), default=0) if exclude else 0
        fetch = min(n_items, k + extra)
        scores, rows = self.session.run(None, {"queries": q, "items": self.items, "k": np.array([fetch], np.int64)})
        if not extra:
            return rows, scores
        assert exclude is not None
        users = np.arange(len(q), dtype=np.int64)
        banned = np.repeat(users, [len(e) for e in exclude]) * n_items + np.fromiter(
            chain.from_iterable(exclude), dtype=np.int64
        )
        drop = np.isin(users[:, None] * n_items + rows, banned)
        order = np.argsort(drop, axis=1, kind="stable")[:, :k]  # kept candidates first, in score order
        rows = np.take_along_axis(rows, order, axis=1)
        scores = np.take_along_axis(scores, order, axis=1).copy()
        scores[np.take_along_axis(drop, order, axis=1)] = -np.inf  # too few left: banned rows score -inf
        return rows, scores
