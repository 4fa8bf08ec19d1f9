"""`fusionrec train`: encode item texts, train every fusion variant, choose β and α on validation,
export the best as the bundle (others under variants/), check ONNX against torch. Needs `train`.

The bundle is self-contained: beside the model files it holds the catalog it was trained on
(items.jsonl), the popularity of its items in the training events (popularity.json) and the text
encoder (encoder/); its manifest digests every one of them (ranker.bundle)."""

from __future__ import annotations

import json
import logging
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoders import EncoderManifest, SessionConfig, TextEncoder
from encoders.sequence import SequenceEncoder
from ranker.budget import plan_training
from ranker.bundle import PRETRAINED_TEXT, ModelBundle, write_catalog, write_manifest, write_popularity
from ranker.data import (
    Catalog,
    Split,
    SplitData,
    build_catalog,
    cold_item_ids,
    cold_items_salt,
    drop_cold_items,
    leave_one_out,
    train_all_but_last,
    user_sequences,
)
from ranker.export_onnx import calibration_feeds, export_bundle, quantize_user_encoder
from ranker.metrics import ndcg_at_k, target_ranks
from ranker.model import ModelConfig
from ranker.stage import StageConfig
from ranker.stage_fit import NEW_ITEM_SHARE, fit_stage
from ranker.train import (
    TrainConfig,
    TrainRun,
    auto_max_len,
    catalog_tensors,
    choose_alpha,
    score_split,
    training_windows,
)
from schemas.errors import ConfigError
from shopdata.loader import Dataset

__all__ = ["DEFAULT_VARIANTS", "encode_texts", "fit", "onnx_agreement", "train_all_but_last"]

log = logging.getLogger("fusionrec.fit")

#: (name, fusion, beta). β is a training-time weight, so each value is its own training run.
DEFAULT_VARIANTS: tuple[tuple[str, str, float], ...] = (
    ("weighted-b0.3", "weighted", 0.3),
    ("weighted-b0.5", "weighted", 0.5),
    ("weighted-b0.7", "weighted", 0.7),
    ("concat", "concat", 0.5),
    ("gated", "gated", 0.5),
)
#: successive halving over the variants: every one trains this many epochs, then the best KEEP go on
SCREEN_EPOCHS = 8
# int8 user encoder served when its validation NDCG@10 is within this share of fp32's (paired: same users)
INT8_USER_TOLERANCE = 0.01
KEEP_VARIANTS = 2
#: share of a time budget kept for what follows training: export, ONNX agreement, the ranking stage
AFTER_TRAINING_SHARE = 0.15
#: share of a time budget the text tower may spend reading the catalogue's token states and tuning
#: (Scientific: about 105 s of the default 15 minutes' 225 s); past it the pretrained encoder stays
TOWER_SHARE = 0.25


def encode_texts(catalog: Catalog, encoder_dir: Path, progress: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    if not (encoder_dir / "manifest.json").is_file():
        from encoders.export import export_encoder  # lazy: onnx and ORT's optimizer, needed only for this export

        log.info("no encoder at %s: exporting the default int8 encoder there (offline)", encoder_dir)
        export_encoder(None, encoder_dir, "int8")
    enc = TextEncoder(encoder_dir, SessionConfig(provider="auto"))
    vectors = enc.encode(catalog.texts, batch_size=64, progress=progress, desc="encode item texts")
    m = enc.manifest
    info = {"variant": m.variant, "digest": m.digest, "onnx_digest": enc.weights_digest}
    return vectors, {**info, "source_model": m.source_model, "dim": m.dim}


TextTower = str  # "auto" (validation chooses) | "pretrained" | "tuned"
TEXT_TOWERS = ("auto", "pretrained", "tuned")


@dataclass
class _Tower:
    """The text encoder the bundle ships and the vectors it gave: the pretrained one, or the
    behaviour-tuned tower (ranker.tower), exported to a scratch folder, when validation chose it."""

    text: np.ndarray
    encoder_dir: Path
    info: dict[str, Any]
    pretrained_text: np.ndarray | None = None


def _text_tower(
    catalog: Catalog,
    encoder_dir: Path,
    text: np.ndarray,
    data: SplitData,
    mode: str,
    progress: bool,
    scratch: Path,
    deadline: float | None = None,
    device: str = "cpu",
) -> _Tower:
    """Tune the encoder's adapter on the training sequences (mode auto/tuned) and, when validation
    chooses it (or mode is tuned), export it as the encoder was (same variant) and re-encode the
    catalog with that export, so the bundle's vectors are what the worker computes for a new item.
    `deadline` bounds reading the token states and tuning (mode auto: past it, no tower)."""
    if mode not in TEXT_TOWERS:
        raise ValueError(f"text tower must be one of {TEXT_TOWERS}, not {mode!r}")
    if mode == "pretrained":
        return _Tower(text, encoder_dir, {"chosen": "pretrained", "reason": "--text-tower pretrained"})
    manifest = EncoderManifest.read(encoder_dir)
    source = Path(manifest.source_model)
    if manifest.adapter:
        return _Tower(text, encoder_dir, {"chosen": "given", "reason": f"{encoder_dir} is a tuned tower already"})
    if not (source / "config.json").is_file():
        reason = f"the encoder's source model folder {source} is not here: nothing to tune"
        if mode == "tuned":
            raise ConfigError(f"{reason}; --text-tower tuned needs it (or use auto or pretrained)")
        log.warning("text tower: %s", reason)
        return _Tower(text, encoder_dir, {"chosen": "pretrained", "reason": reason})
    from encoders.export import export_encoder
    from ranker.tower import TowerOverBudget, token_states, tune_tower

    force = mode == "tuned"
    try:
        states = token_states(
            source,
            catalog.texts,
            manifest.max_length,
            progress=progress,
            deadline=None if force else deadline,
            device=device,
        )
    except TowerOverBudget as exc:
        log.warning("text tower: %s; the pretrained encoder stays", exc)
        return _Tower(text, encoder_dir, {"chosen": "pretrained", "reason": f"time budget: {exc}"})
    adapter, info = tune_tower(
        states, catalog.ids, data.train, data.valid, progress=progress, force=force, deadline=deadline, device=device
    )
    if adapter is None:
        return _Tower(text, encoder_dir, info)
    # a folder of its own inside the private (0700) scratch: the bundle's copy keeps a new folder's mode,
    # so a worker or API running as another user can read it
    tuned_dir = scratch / "encoder"
    export_encoder(source, tuned_dir, manifest.variant, opset=manifest.opset, adapter=adapter)  # type: ignore[arg-type]
    tuned, tuned_info = encode_texts(catalog, tuned_dir, progress)
    return _Tower(tuned, tuned_dir, info | {"encoder": tuned_info}, pretrained_text=text)


def onnx_agreement(
    model: Any, bundle: ModelBundle, data: SplitData, k: int = 10, encoder: SequenceEncoder | None = None
) -> float:
    """Share of validation users whose top-k from the ONNX bundle equals torch's (history excluded).
    `encoder`: another export of the bundle's user encoder to check (its fp32 graph, where int8 serves)."""
    split = data.valid
    torch_scores = score_split(model, split)
    rows = [[i - 1 for i in h] for h in split.histories]
    vectors = (encoder or bundle.encoder).encode_rows(bundle.item_vectors, rows, split.history_types)
    onnx_scores = vectors @ bundle.item_vectors.T
    same = 0
    for u, hist in enumerate(split.histories):
        seen = [i - 1 for i in hist]
        a, b = torch_scores[u].copy(), onnx_scores[u].copy()
        a[seen] = -np.inf
        b[seen] = -np.inf
        same += set(np.argsort(-a, kind="stable")[:k]) == set(np.argsort(-b, kind="stable")[:k])
    return same / max(len(split.histories), 1)


def choose_user_encoder(
    folder: Path,
    split: Split,
    calibration: tuple[list[list[int]], list[list[int]]],
    tolerance: float = INT8_USER_TOLERANCE,
) -> dict[str, Any]:
    """Serve an int8 user encoder where validation finds it as good as the fp32 export.

    Quantizes `folder`'s user_encoder.onnx (ranker.export_onnx.quantize_user_encoder; activation
    ranges from `calibration`, training sequences and their event types, 1-based item indices) and
    scores the validation targets through both graphs (full catalog, history excluded); when int8's
    NDCG@10 is at least (1 - tolerance) x fp32's, it becomes user_encoder.onnx and the fp32 graph stays
    beside it as user_encoder_fp32.onnx (the export parity checks and a way back), else the int8 copy
    is dropped. Returns what the manifest records under "user_encoder"."""
    fp32 = folder / "user_encoder.onnx"
    int8 = folder / "user_encoder_int8.onnx"
    table = np.load(folder / "item_vectors.npy")
    max_len = int(json.loads((folder / "manifest.json").read_text())["model"]["max_len"])
    sequences, kinds = calibration
    feeds = calibration_feeds(table, [[i - 1 for i in s] for s in sequences], kinds, max_len)
    try:
        if not feeds:
            raise ValueError("no training sequence to calibrate on")
        if not split.histories:
            raise ValueError("no validation user to check it on")
        quantize_user_encoder(fp32, int8, feeds)
    except Exception as exc:  # the fp32 export serves as it is: quantizing is an optimisation
        int8.unlink(missing_ok=True)
        log.warning("user_encoder served=fp32 int8_failed=%s", exc)
        return {"served": "fp32", "int8": f"not built: {exc}"}
    rows = [[i - 1 for i in h] for h in split.histories]
    ndcg = {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        encoder = SequenceEncoder(path, SessionConfig(), max_length=max_len)
        vectors = encoder.encode_rows(table, rows, split.history_types)
        ranks, _ = target_ranks(vectors @ table.T, split.targets - 1, rows)
        ndcg[name] = round(ndcg_at_k(ranks, 10), 6)
    served = "int8" if ndcg["int8"] >= (1 - tolerance) * ndcg["fp32"] else "fp32"
    if served == "int8":
        fp32.rename(folder / "user_encoder_fp32.onnx")
        int8.rename(fp32)
    else:
        int8.unlink()
    log.info("user_encoder served=%s valid_ndcg10_fp32=%.4f valid_ndcg10_int8=%.4f", served, ndcg["fp32"], ndcg["int8"])
    return {"served": served, "valid_ndcg@10": ndcg, "int8_tolerance": tolerance, "int8": "static, calibrated"}


def fit(
    dataset: Dataset,
    out: Path,
    encoder_dir: Path,
    *,
    protocol: str = "leave-one-out",
    train_cfg: TrainConfig = TrainConfig(),
    model_overrides: dict[str, Any] | None = None,
    variants: tuple[tuple[str, str, float], ...] = DEFAULT_VARIANTS,
    progress: bool = True,
    trained_models: dict[str, Any] | None = None,
    cold_items: float = 0.0,
    cold_items_draw: str = "",
    ranking_stage: bool = True,
    screen_epochs: int = SCREEN_EPOCHS,
    keep: int = KEEP_VARIANTS,
    time_budget_s: float | None = None,
    text_tower: TextTower = "auto",
    stage_config: StageConfig = StageConfig(),
    new_item_share: float = NEW_ITEM_SHARE,
) -> dict[str, Any]:
    """Train, choose and write the bundle to `out`; returns its manifest. `trained_models`, when
    given, receives each variant's trained torch model by name (to check the ONNX export against).
    `cold_items` > 0 holds out that share of the items (ranker.data.cold_item_ids) from every
    training sequence and records them in the manifest, for `evaluate`'s cold-items protocol;
    `cold_items_draw` names which such share (ranker.data.cold_items_salt). Without
    a max_len in `model_overrides`, it follows the data (ranker.train.auto_max_len). `ranking_stage`:
    also fit the learned ranking stage (ranker.stage) on the validation targets, into ranking/, with
    `stage_config`'s candidate counts and `new_item_share` of the items shown to it as new.
    With more than `keep` variants, every variant trains `screen_epochs` epochs first and only the
    `keep` best by validation NDCG@10 go on (successive halving; the others are recorded in the
    manifest's "screened_out"); `keep=0` trains every variant to the end. `time_budget_s` bounds the
    whole call: the first epoch is timed and ranker.budget plans the variants, screening epochs and
    finalists that fit (the defaults where they do), and no finalist starts an epoch it cannot end in
    time; the plan and whether it bound are in the manifest's "time_budget"."""
    started = time.perf_counter()
    catalog = build_catalog(dataset)
    text, encoder_info = encode_texts(catalog, encoder_dir, progress)
    seqs = user_sequences(dataset, catalog)
    data = leave_one_out(seqs) if protocol == "leave-one-out" else train_all_but_last(seqs)
    cold = cold_item_ids(catalog.ids, cold_items, cold_items_salt(cold_items_draw)) if cold_items > 0 else []
    index = catalog.index()
    data = drop_cold_items(data, {index[i] for i in cold})
    with tempfile.TemporaryDirectory(prefix="fusionrec-tower-") as scratch:
        tower_deadline = started + time_budget_s * TOWER_SHARE if time_budget_s else None
        tower = _text_tower(
            catalog, encoder_dir, text, data, text_tower, progress, Path(scratch), tower_deadline, train_cfg.device
        )
        text = tower.text
        tensors = catalog_tensors(catalog, text, data.train)
        overrides = dict(model_overrides or {})
        overrides.setdefault("max_len", auto_max_len(data.train))
        base = ModelConfig(
            n_items=catalog.n_items,
            n_categories=len(catalog.category_names) - 1,
            n_brands=int(catalog.brands.max()),
            text_dim=text.shape[1],
            **overrides,
        )
        results: dict[str, dict[str, Any]] = {}
        trained: dict[str, Any] = {}
        runs = {
            name: TrainRun(replace(base, fusion=fusion, beta=beta), train_cfg, data, tensors, f"train {name}")
            for name, fusion, beta in variants
        }
        deadline = None
        first = next(iter(runs.values()))
        if time_budget_s:
            # what follows training (export, ONNX agreement, the ranking stage) keeps a share of the budget
            deadline = started + time_budget_s * (1.0 - AFTER_TRAINING_SHARE)
            first.run(1, progress)  # timed: the plan follows from it
            plan = plan_training(
                len(runs), screen_epochs, keep, first.epoch_seconds, max(deadline - time.perf_counter(), 0.0)
            )
        else:
            plan = plan_training(len(runs), screen_epochs, keep, 0.0, None)
        skipped = list(runs)[plan.variants :]
        for name in skipped:
            del runs[name]
        if skipped:
            log.warning("time budget: %s not trained (one epoch takes %.0f s)", ", ".join(skipped), first.epoch_seconds)
        finalists = list(runs)
        screened: dict[str, dict[str, Any]] = {}
        if plan.screen_epochs > 0:  # successive halving: all briefly, the best on
            for run in runs.values():
                run.run(plan.screen_epochs, progress)
            finalists = sorted(runs, key=lambda n: (-runs[n].best, n))[: plan.keep]
            for name in runs:
                if name not in finalists:
                    r = runs[name]
                    screened[name] = {"valid_ndcg@10_alpha1": round(r.best, 6), "epochs_run": r.epoch}
            log.info(
                "screened %d variants over %d epochs: going on with %s; dropped %s",
                len(runs),
                plan.screen_epochs,
                ", ".join(finalists),
                ", ".join(f"{n} ({v['valid_ndcg@10_alpha1']:.4f})" for n, v in screened.items()),
            )
        for i, name in enumerate(finalists):
            run = runs[name]
            # the time left is shared by the finalists still to train (one that stops early leaves its rest)
            now = time.perf_counter()
            share = None if deadline is None else now + (deadline - now) / (len(finalists) - i)
            run.run(train_cfg.epochs, progress, deadline=share)
            res = run.result()
            alpha, decay, valid = choose_alpha(res.model, data.valid, train_cfg.eval_batch)
            results[name] = {
                "fusion": run.cfg.fusion,
                "beta": run.cfg.beta,
                "alpha": alpha,
                "decay": decay,
                "valid_ndcg@10": round(valid, 6),
                "valid_ndcg@10_alpha1": round(res.best_valid_ndcg10, 6),
                "best_epoch": res.best_epoch,
                "epochs_run": res.epochs_run,
                "stopped_by": run.stopped_by,
                "train_seconds": round(res.seconds, 1),
                "valid_curve": [round(c, 5) for c in res.curve],
            }
            trained[name] = res.model.cpu()  # export, ONNX agreement and the stage run on the CPU
        runs.clear()  # the finalists are in `trained`; the screened-out models go
        best = max(results, key=lambda n: (results[n]["valid_ndcg@10"], n))
        if out.exists():
            shutil.rmtree(out)
        common = {
            "protocol": data.protocol,
            "seed": train_cfg.seed,
            "train": asdict(train_cfg),
            "encoder": tower.info.get("encoder", encoder_info),
            "text_tower": {k: v for k, v in tower.info.items() if k not in ("encoder", "seconds")}
            | ({"pretrained_encoder": encoder_info} if tower.pretrained_text is not None else {}),
            "data": {
                "name": dataset.name,
                "digest": dataset.digest(),
                "users": len(seqs),
                "items": catalog.n_items,
                "train_sequences": len(data.train),
                "train_windows": len(training_windows(data.train, data.train_types, base.max_len)),
            },
            "cold_items": {"share": cold_items, "draw": cold_items_draw, "items": cold},
            "versions": {"torch": torch.__version__, "python": platform.python_version()},
        }
        if trained_models is not None:
            trained_models.update(trained)
        for name in sorted(results, key=lambda n: n == best):  # variants first: the main manifest digests theirs
            target = out if name == best else out / "variants" / name
            # a variant's manifest is digested by the main one: no wall-clock time in it (same seed, same version)
            validation = results[name]
            if name != best:
                validation = {k: v for k, v in validation.items() if k != "train_seconds"}
            info = {**common, "variant": name, "validation": validation}
            export_bundle(
                trained[name], catalog, target, info, text_vectors=text, role="main" if name == best else "variant"
            )
        shutil.copytree(tower.encoder_dir, out / "encoder")  # live items are encoded with the same text encoder
        if tower.pretrained_text is not None:  # evaluate's text-only baseline is the pretrained encoder's
            np.save(out / PRETRAINED_TEXT, tower.pretrained_text.astype(np.float32))
        write_catalog(out, dataset.items)  # row order = catalog order = item_ids.json
        write_popularity(out, dataset.item_counts())
        info = json.loads((out / "manifest.json").read_text())  # the main model's, from export_bundle
        info["user_encoder"] = choose_user_encoder(
            out, data.valid, (data.train, data.train_types)
        )  # before the stage: it learns on what serves
        manifest = write_manifest(out, {**info, "chosen_variant": best, "variants": results, "screened_out": screened})
        stage_fit: tuple[Any, dict[str, Any]] | None = None
        if ranking_stage:
            try:
                stage_fit = fit_stage(
                    ModelBundle.load(out),
                    data.train,
                    data.valid,
                    catalog.brands[1:],
                    seed=train_cfg.seed,
                    config=stage_config,
                    new_item_share=new_item_share,
                    given=data.given,
                )
            except ValueError as exc:  # too little data: a bundle without the stage still serves
                log.warning("no ranking stage: %s", exc)
        if stage_fit is not None:
            stage, stage_info = stage_fit
            stage.save(out / "ranking", {k: v for k, v in stage_info.items() if k != "seconds"})
            # outside the digests: how long it took is about the run, not an input of serving
            manifest = write_manifest(
                out,
                {
                    **info,
                    "chosen_variant": best,
                    "variants": results,
                    "screened_out": screened,
                    "ranking": {k: v for k, v in stage_info.items() if k != "seconds"},
                },
            )
            manifest["ranking_seconds"] = stage_info["seconds"]
        fp32_graph = out / "user_encoder_fp32.onnx"  # the export is checked, not the quantization (chosen above)
        served = ModelBundle.load(out)
        exported = SequenceEncoder(fp32_graph, max_length=trained[best].cfg.max_len) if fp32_graph.exists() else None
        agreement = onnx_agreement(trained[best], served, data, encoder=exported)
        # outside "files" and "version": numbers about the run, not inputs of serving
        manifest.update(
            {
                "onnx_top10_agreement": round(agreement, 5),
                "fit_seconds": round(time.perf_counter() - started, 1),
                "time_budget": {
                    "seconds": time_budget_s or 0,
                    "plan": plan.to_dict(),
                    "not_trained": skipped,
                    "stopped_by_time": sorted(n for n, r in results.items() if r["stopped_by"] == "time budget"),
                },
            }
        )
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        log.info(
            "bundle version=%s variant=%s valid_ndcg10=%.4f onnx_top10_agreement=%.4f seconds=%.0f",
            manifest["version"],
            best,
            results[best]["valid_ndcg@10"],
            agreement,
            manifest["fit_seconds"],
        )
        return manifest
