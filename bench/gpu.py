"""What a CUDA GPU changes, CPU and CUDA side by side in one run on one machine:

  ranking   the worker's ranking (BundleRanker.rank_many: ONNX user encoder, retrieval, the learned
            stage) with its ONNX Runtime sessions on the CPU and on CUDA, per batch of users, and
            whether both give the same lists;
  training  `fusionrec train`'s torch work: seconds per epoch of the sequential model (the chosen
            variant's shape) and of the text tower's token states, on the CPU and on CUDA, and
            whether an epoch's model scores the same on both.

The text encoder's CUDA rows are bench/encoders.py's. Each figure is the median of `--rounds`
interleaved runs (CPU, CUDA, CPU, ...) after one untimed run, so a slow spell lands on both.

    python bench/gpu.py --data ../shared/data/scientific --bundle out/bundle-sci9 --json out/gpu.json

Needs torch with CUDA and onnxruntime-gpu; without a GPU it says so and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from encoders.session import SessionConfig  # noqa: E402
from ranker.bundle import ModelBundle  # noqa: E402
from ranker.online import BundleRanker  # noqa: E402
from ranker.state import RECENT_ITEMS, UserState  # noqa: E402
from shopdata import load_dataset  # noqa: E402


def _interleaved_ms(runs: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Median milliseconds per run, the runs alternating each round (first one rotating)."""
    for run in runs.values():
        run()  # untimed: session warm-up, kernel selection, allocations
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            began = time.perf_counter()
            runs[name]()
            times[name].append((time.perf_counter() - began) * 1000)
    return {name: round(statistics.median(t), 2) for name, t in times.items()}


def ranking(bundle_dir: Path, data: Path, batches: list[int], rounds: int, devices: list[str]) -> dict[str, Any]:
    """rank_many per batch size with CPU and CUDA sessions; the lists' agreement between them."""
    by_user = load_dataset(data).by_user()
    users = sorted(by_user)[: max(batches)]
    states = []
    for u in users:
        items = tuple(i for i in (e.item_id for e in by_user[u]) if i is not None)[-RECENT_ITEMS:]
        states.append(UserState(u, recent_items=items, recent_types=("purchase",) * len(items)))
    rankers = {}
    for provider in devices:
        session = SessionConfig(provider=provider, allow_spinning=False)  # type: ignore[arg-type]
        rankers[provider] = BundleRanker(ModelBundle.load(bundle_dir, session), retrieval=session)

    def agreement(other: BundleRanker) -> dict[str, float]:
        """How often `other` lists what the first device lists: the same top 10 in the same order, and
        the share of the top 20 in common."""
        pairs = list(zip(rankers[devices[0]].rank_many(states, 20), other.rank_many(states, 20), strict=True))
        same = sum([i for i, _ in a[0][:10]] == [i for i, _ in b[0][:10]] for a, b in pairs)
        overlap = [len({i for i, _ in a[0]} & {i for i, _ in b[0]}) / max(len(a[0]), 1) for a, b in pairs]
        return {"same_top10_order": round(same / len(pairs), 4), "top20_overlap": round(float(np.mean(overlap)), 4)}

    out: dict[str, Any] = {"users": len(states), **agreement(rankers[devices[-1]]), "batches": {}}
    if "cuda" in rankers:  # what the TF32 default of ONNX Runtime's CUDA provider would do to the lists
        tf32 = SessionConfig(provider="cuda", allow_spinning=False, cuda_tf32=True)
        out["with_tf32"] = agreement(BundleRanker(ModelBundle.load(bundle_dir, tf32), retrieval=tf32))
    for size in batches:
        part = states[:size]

        def ranks(r: BundleRanker, part: list[UserState] = part) -> Callable[[], Any]:
            return lambda: r.rank_many(part, 20)

        ms = _interleaved_ms({p: ranks(r) for p, r in rankers.items()}, rounds)
        ratio = {"cpu_over_cuda": round(ms["cpu"] / max(ms["cuda"], 1e-9), 2)} if len(ms) == 2 else {}
        out["batches"][str(size)] = {**ms, **ratio}
    return out


def training(bundle_dir: Path, data: Path, epochs: int, threads: int, devices: list[str]) -> dict[str, Any]:
    """Seconds per epoch of the bundle's chosen variant on CPU and CUDA (same seed, same windows),
    the token states of the text tower on both, and the CPU/CUDA score agreement after training."""
    import torch

    from ranker.data import build_catalog, leave_one_out, user_sequences
    from ranker.model import ModelConfig
    from ranker.tower import token_states
    from ranker.train import TrainConfig, TrainRun, catalog_tensors, score_split

    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    dataset = load_dataset(data)
    catalog = build_catalog(dataset)
    split = leave_one_out(user_sequences(dataset, catalog))
    text = np.load(bundle_dir / "text_vectors.npy")
    tensors = catalog_tensors(catalog, text, split.train)
    fields = set(ModelConfig.__dataclass_fields__)
    cfg = ModelConfig(**{k: v for k, v in manifest["model"].items() if k in fields})
    out: dict[str, Any] = {"variant": manifest.get("chosen_variant"), "epochs": epochs, "cpu_threads": threads}
    per_epoch: dict[str, float] = {}
    models = {}
    for device in devices:
        tcfg = TrainConfig(epochs=epochs, patience=epochs + 1, batch_size=512, lr=2e-3, threads=threads, device=device)
        run = TrainRun(cfg, tcfg, split, tensors, f"train on {device}")
        run.run(1, progress=False)  # untimed: the first epoch pays for allocations and kernel selection
        began = time.perf_counter()
        run.run(epochs, progress=False)
        per_epoch[device] = round((time.perf_counter() - began) / max(epochs - 1, 1), 3)
        models[device] = run.result().model
        out[f"valid_ndcg10_{device}"] = round(run.best, 5)
    out["seconds_per_epoch"] = per_epoch
    if len(per_epoch) == 2:
        out["cpu_over_cuda"] = round(per_epoch["cpu"] / max(per_epoch["cuda"], 1e-9), 2)
    # the last device's model scored there and on the CPU: the device changes nothing but speed
    last = models[devices[-1]]
    on_device = score_split(last, split.valid)
    on_cpu = score_split(last.cpu(), split.valid)
    out["model_scores_max_abs_diff_device_vs_cpu"] = float(np.abs(on_device - on_cpu).max())
    encoder = json.loads((bundle_dir / "encoder" / "manifest.json").read_text())
    source = Path(encoder["source_model"])
    if (source / "config.json").is_file():
        tower: dict[str, float] = {}
        for device in devices:
            began = time.perf_counter()
            token_states(source, catalog.texts, int(encoder["max_length"]), progress=False, device=device)
            tower[device] = round(time.perf_counter() - began, 2)
        out["tower_token_states_seconds"] = tower
        if len(tower) == 2:
            out["tower_cpu_over_cuda"] = round(tower["cpu"] / max(tower["cuda"], 1e-9), 2)
    else:
        out["tower_token_states_seconds"] = f"not measured: the encoder's source model {source} is not here"
    out["torch"] = torch.__version__
    out["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="dataset folder (items.csv + events.csv)")
    ap.add_argument("--bundle", type=Path, required=True, help="bundle from `fusionrec train`")
    ap.add_argument("--json", type=Path, default=REPO / "out" / "gpu.json", help="results JSON")
    ap.add_argument("--batches", default="1,50,300", help="users per ranking batch (default 1,50,300)")
    ap.add_argument("--rounds", type=int, default=15, help="timed runs per ranking figure (default 15)")
    ap.add_argument("--epochs", type=int, default=4, help="training epochs per device, the first untimed (default 4)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads (default: all cores)")
    ap.add_argument("--only", choices=("ranking", "training"), help="one part only")
    ap.add_argument("--devices", default="cpu,cuda", help="what to compare (default cpu,cuda; cpu alone: a dry run)")
    args = ap.parse_args()
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        ap.error(f"--batches takes comma-separated user counts, not {args.batches!r}")
    if min(batches) < 1 or args.rounds < 1 or args.epochs < 2:
        ap.error("--batches and --rounds must be at least 1, --epochs at least 2")
    devices = args.devices.split(",")
    if devices not in (["cpu", "cuda"], ["cpu"], ["cuda"]):
        ap.error(f"--devices takes cpu,cuda, cpu or cuda, not {args.devices!r}")
    import onnxruntime as ort
    import torch

    cuda_here = torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers()
    if "cuda" in devices and not cuda_here:
        print(
            f"error: no CUDA here (torch sees a GPU: {torch.cuda.is_available()}; "
            f"onnxruntime providers: {ort.get_available_providers()})",
            file=sys.stderr,
        )
        sys.exit(2)
    out: dict[str, Any] = {"data": str(args.data), "bundle": str(args.bundle), "onnxruntime": ort.__version__}
    if args.only in (None, "ranking"):
        out["ranking"] = ranking(args.bundle, args.data, batches, args.rounds, devices)
        for size, ms in out["ranking"]["batches"].items():
            print(f"rank_many {size:>4} users: {ms} ms")
        print(f"same top-10 order on both: {out['ranking']['same_top10_order']:.1%} of users", flush=True)
        if "with_tf32" in out["ranking"]:
            print(f"with TF32 on CUDA: {out['ranking']['with_tf32']['same_top10_order']:.1%}", flush=True)
    if args.only in (None, "training"):
        out["training"] = t = training(args.bundle, args.data, args.epochs, args.threads, devices)
        print(f"train seconds per epoch ({args.threads} CPU threads): {t['seconds_per_epoch']}")
        print(f"tower token states seconds: {t['tower_token_states_seconds']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
