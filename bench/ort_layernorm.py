"""ONNX Runtime CPU: SkipLayerNormalization vs the Add + Add + LayerNormalization it fuses.

Why the CPU encoder exports leave that fusion out (encoders/export.py `_fusion_options`) and CPU
sessions turn off ONNX Runtime's `SkipLayerNormFusion` (encoders/session.py). Rerun it after an
onnxruntime upgrade: when the fused kernel is no longer slower, the fusion can come back.

    python bench/ort_layernorm.py [--json OUT.json] [--threads 2] [--shape 32,44,384]

Both graphs run side by side, alternating, on the same input (a BERT block's residual + layer norm
at batch 32 and the Scientific catalog's mean length).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def _graph(fused: bool, hidden: int) -> bytes:
    rng = np.random.default_rng(0)
    consts = [numpy_helper.from_array(rng.random(hidden, dtype=np.float32), n) for n in ("gamma", "beta", "bias")]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["b", "s", hidden]) for n in ("x", "skip")]
    if fused:
        nodes = [
            helper.make_node(
                "SkipLayerNormalization",
                ["x", "skip", "gamma", "beta", "bias"],
                ["y"],
                domain="com.microsoft",
                epsilon=1e-12,
            )
        ]
    else:
        nodes = [
            helper.make_node("Add", ["x", "skip"], ["sum"]),
            helper.make_node("Add", ["sum", "bias"], ["biased"]),
            helper.make_node("LayerNormalization", ["biased", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-12),
        ]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "layernorm", io, [out], consts)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model.SerializeToString()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shape", default="32,44,384", help="batch,sequence,hidden")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=100, help="session.run calls per round")
    args = ap.parse_args()
    shape = tuple(int(d) for d in args.shape.split(","))
    rng = np.random.default_rng(1)
    feed = {"x": rng.standard_normal(shape, dtype=np.float32), "skip": rng.standard_normal(shape, dtype=np.float32)}
    sessions = {}
    for name, fused in (("SkipLayerNormalization", True), ("Add+LayerNormalization", False)):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # keep each graph as built
        sessions[name] = ort.InferenceSession(_graph(fused, shape[-1]), opts, providers=["CPUExecutionProvider"])
    outs = [s.run(None, feed)[0] for s in sessions.values()]
    max_diff = float(np.abs(outs[0] - outs[1]).max())
    best = dict.fromkeys(sessions, float("inf"))
    for _ in range(args.rounds):  # alternate, keep each one's best round
        for name, session in sessions.items():
            began = time.perf_counter()
            for _ in range(args.runs):
                session.run(None, feed)
            best[name] = min(best[name], (time.perf_counter() - began) / args.runs)
    floats = int(np.prod(shape))
    result = {
        "shape": list(shape),
        "threads": args.threads,
        "ms_per_call": {n: round(t * 1e3, 4) for n, t in best.items()},
        "gfloats_per_s": {n: round(floats / t / 1e9, 3) for n, t in best.items()},
        "fused_over_unfused_time": round(best["SkipLayerNormalization"] / best["Add+LayerNormalization"], 2),
        "max_abs_difference": max_diff,
        "onnxruntime": ort.__version__,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
