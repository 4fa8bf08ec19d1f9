"""Text-encoder throughput, side by side in one run over the real Scientific item texts:
PyTorch eager fp32 (transformers), ONNX fp32 and ONNX int8 at batch 1, 32 and 128, plus the
seconds to encode the whole catalog with each ONNX variant (as `fusionrec encode-items` does),
and those catalog vectors' parity with PyTorch's (mean/min cosine, top-10 neighbour overlap).
With a CUDA GPU: torch-cuda-fp32, onnx-cuda-fp32 and onnx-cuda-fp16 (IO binding), also at 256.

    python bench/encoders.py --json out/encoders.json [--data DIR] [--limit N] [--threads N]

All backends use the same length-sorted batching and the same truncation (max_length of the
export), so the ratios compare runtimes, not batching tricks. Exports are made offline first.

Side by side means interleaved: the texts are ordered by token length once and cut into chunks
of --chunk texts (a multiple of every batch size, so the batches are those of one whole-catalog
pass); every backend encodes each chunk in turn, the first one rotating, and its time is summed
over the chunks. A slow spell on a shared machine then lands on every backend alike instead of
on whichever ran during it. Each backend still tokenises and sorts its own input, timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from shopdata.loader import load_items  # noqa: E402

Backend = Callable[[Sequence[str], int], np.ndarray]


def _interleaved_rates(backends: dict[str, Backend], texts: Sequence[str], batch: int, chunk: int) -> dict[str, float]:
    """sentences/s per backend over all `texts`, measured chunk by chunk in rotating order."""
    for fn in backends.values():
        fn(texts[: max(batch, 8)], batch)  # warm-up: allocations, kernel selection
    spent = dict.fromkeys(backends, 0.0)
    names = list(backends)
    starts = range(0, len(texts), chunk)
    for i, start in enumerate(tqdm(starts, desc=f"batch {batch}", unit="chunk", leave=False)):
        part = texts[start : start + chunk]
        for name in names[i % len(names) :] + names[: i % len(names)]:
            began = time.perf_counter()
            backends[name](part, batch)
            spent[name] += time.perf_counter() - began
    return {name: len(texts) / seconds for name, seconds in spent.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "scientific")
    ap.add_argument("--limit", type=int, default=None, help="use the first N texts (default: all)")
    ap.add_argument("--batch1-limit", type=int, default=None, help="texts for batch 1 runs (default: all)")
    ap.add_argument("--threads", type=int, default=0, help="threads for torch and ONNX Runtime (0: all cores)")
    ap.add_argument("--exports", type=Path, default=None, help="reuse exports from this folder")
    ap.add_argument("--chunk", type=int, default=1024, help="texts per interleaving chunk (multiple of 256)")
    args = ap.parse_args()
    if args.chunk % 256:
        ap.error("--chunk must be a multiple of 256 (every batch size)")

    import onnxruntime as ort
    import torch

    from encoders import SessionConfig, TextEncoder
    from encoders.export import default_model_dir, export_encoder
    from encoders.parity import neighbour_overlap, row_cosines
    from encoders.torch_reference import TorchEncoder

    texts = [it.text() for it in load_items(args.data / "items.csv")][: args.limit]
    threads = args.threads or (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    cuda = "CUDAExecutionProvider" in ort.get_available_providers() and torch.cuda.is_available()
    tmp = tempfile.TemporaryDirectory()
    root = args.exports or Path(tmp.name)
    variants = ["fp32", "int8"] + (["fp16"] if cuda else [])
    for v in variants:
        if not (root / v / "manifest.json").is_file():
            export_encoder(None, root / v, v)  # type: ignore[arg-type]
    cpu = SessionConfig(provider="cpu", intra_op_threads=threads)
    backends: dict[str, Backend] = {}
    onnx_fp32 = TextEncoder(root / "fp32", cpu)
    onnx_int8 = TextEncoder(root / "int8", cpu)
    max_length = onnx_fp32.manifest.max_length
    lengths = [len(ids) for ids, _ in onnx_fp32.tokenizer.encode(texts)]
    texts = [texts[i] for i in np.argsort(lengths, kind="stable")]
    ref = TorchEncoder(default_model_dir(), max_length, threads=threads)
    backends["torch-fp32"] = lambda t, b: ref.encode(t, b)
    backends["onnx-fp32"] = lambda t, b: onnx_fp32.encode(t, b)
    backends["onnx-int8"] = lambda t, b: onnx_int8.encode(t, b)
    batches = [1, 32, 128]
    if cuda:
        gpu = SessionConfig(provider="cuda")
        ref_gpu = TorchEncoder(default_model_dir(), max_length, device="cuda")
        cuda_fp32 = TextEncoder(root / "fp32", gpu)
        cuda_fp16 = TextEncoder(root / "fp16", gpu)

        def torch_cuda(t: Sequence[str], b: int) -> np.ndarray:
            out = ref_gpu.encode(t, b)
            torch.cuda.synchronize()
            return out

        backends["torch-cuda-fp32"] = torch_cuda
        backends["onnx-cuda-fp32"] = lambda t, b: cuda_fp32.encode(t, b)
        backends["onnx-cuda-fp16"] = lambda t, b: cuda_fp16.encode(t, b)
        batches.append(256)
    rows = []
    by: dict[tuple[str, int], float] = {}
    for batch in batches:  # side by side: every backend at this batch size, interleaved, before the next size
        sample = texts[:: max(1, len(texts) // args.batch1_limit)] if batch == 1 and args.batch1_limit else texts
        chosen = {n: fn for n, fn in backends.items() if batch != 256 or "cuda" in n}
        for name, rate in _interleaved_rates(chosen, sample, batch, args.chunk).items():
            by[(name, batch)] = rate
            rows.append({"backend": name, "batch": batch, "sentences_per_s": round(rate, 1), "texts": len(sample)})
            print(f"{name:>16} batch {batch:>3}: {rate:8.1f} sentences/s", flush=True)
    catalog, vectors = {}, {}
    for name, enc in (("onnx-fp32", onnx_fp32), ("onnx-int8", onnx_int8)):
        started = time.perf_counter()
        vectors[name] = enc.encode(texts, batch_size=64)
        catalog[name] = round(time.perf_counter() - started, 2)
    reference = ref.encode(texts, 64)  # parity over the whole catalog, as the tests hold it
    quality = {}
    for name, vecs in vectors.items():
        cos = row_cosines(vecs, reference)
        quality[name] = {
            "mean_cosine": round(float(cos.mean()), 6),
            "min_cosine": round(float(cos.min()), 6),
            "top10_neighbour_overlap": round(neighbour_overlap(vecs, reference, k=10), 4),
        }
    ratios = {
        f"{b}@{n}": round(by[(b, n)] / by[("torch-fp32", n)], 2)
        for b in ("onnx-fp32", "onnx-int8")
        for n in (1, 32, 128)
    }
    out = {
        "rows": rows,
        "catalog_seconds": catalog,
        "ratios_vs_torch": ratios,
        "quality_vs_torch": quality,
        "texts": len(texts),
        "threads": threads,
        "interleave_chunk": args.chunk,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "cuda": cuda},
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2))
    print(json.dumps({"catalog_seconds": catalog, "ratios_vs_torch": ratios, "quality_vs_torch": quality}, indent=2))
    tmp.cleanup()


if __name__ == "__main__":
    main()
