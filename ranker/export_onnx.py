"""Export the trained user encoder and item fusion to ONNX and write a bundle folder (torch; `train` extra)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ranker.bundle import write_manifest
from ranker.data import Catalog
from ranker.model import ItemFusion, SeqRecModel

__all__ = ["export_bundle", "export_item_fusion", "export_user_encoder", "quantize_user_encoder"]


def export_user_encoder(model: SeqRecModel, path: Path, opset: int = 17) -> None:
    user = model.user.eval()
    dim = model.cfg.dim
    args = (torch.randn(2, 5, dim), torch.ones(2, 5), torch.full((2, 5), 4, dtype=torch.long))
    axes = {
        "item_vectors": {0: "batch", 1: "length"},
        "mask": {0: "batch", 1: "length"},
        "event_types": {0: "batch", 1: "length"},
        "user_vector": {0: "batch"},
    }
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused kernel does not export; the plain path does
    try:
        with torch.no_grad():
            torch.onnx.export(
                user,
                args,
                str(path),
                input_names=["item_vectors", "mask", "event_types"],
                output_names=["user_vector"],
                dynamic_axes=axes,
                opset_version=opset,
                dynamo=False,
            )
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)


def quantize_user_encoder(fp32: Path, target: Path) -> None:
    """Dynamic int8 copy of an exported user encoder: int8 weights (per channel), activations
    quantized per batch. Its matrix products are small (the model's width), so int8 paid here: a
    500-user micro-batch encoded 1.26x faster on Scientific (bench/sequence.py --against); `fit` serves
    it only where validation finds it as good (`ranker.fit.choose_user_encoder`)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(fp32), str(target), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul", "Gemm"]
    )


def export_item_fusion(model: SeqRecModel, path: Path, opset: int = 17) -> None:
    fusion = ItemFusion(model.items).eval()
    n = 3
    args = (
        torch.randn(n, model.cfg.text_dim),
        torch.zeros(n, dtype=torch.long),
        torch.zeros(n, dtype=torch.long),  # index 0 (none) exists even in a catalog without categories
        torch.zeros(n, dtype=torch.long),  # or without brands: 1 would be out of range there
        torch.zeros(n, dtype=torch.long),
    )
    names = ["text_vectors", "item_rows", "categories", "brands", "pop_buckets"]
    with torch.no_grad():
        torch.onnx.export(
            fusion,
            args,
            str(path),
            input_names=names,
            output_names=["item_vector"],
            dynamic_axes={**{k: {0: "batch"} for k in names}, "item_vector": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )


def export_bundle(
    model: SeqRecModel,
    catalog: Catalog,
    folder: Path,
    info: dict[str, Any],
    *,
    text_vectors: np.ndarray | None = None,
    role: str = "main",
) -> dict[str, Any]:
    """The model files (ranker.bundle.MODEL_FILES) and a manifest digesting every file then in the
    folder. A main bundle's catalog, popularity and encoder are added by `ranker.fit`, which then
    writes the manifest again over everything."""
    folder.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        table = model.items()[1:].numpy().astype(np.float32)
    np.save(folder / "item_vectors.npy", table)
    np.save(folder / "item_categories.npy", catalog.categories[1:].astype(np.int64))
    (folder / "item_ids.json").write_text(json.dumps(catalog.ids))
    (folder / "category_names.json").write_text(json.dumps(catalog.category_names))
    export_user_encoder(model, folder / "user_encoder.onnx")
    export_item_fusion(model, folder / "item_fusion.onnx")
    (folder / "brand_names.json").write_text(json.dumps(catalog.brand_names))
    if text_vectors is not None:
        np.save(folder / "text_vectors.npy", np.asarray(text_vectors, dtype=np.float32))
    info = {
        **info,
        "model": model.cfg.to_dict(),
        "alpha": float(model.user.alpha),
        "decay": float(model.user.decay),
        "dim": model.cfg.dim,
        "n_items": catalog.n_items,
    }
    return write_manifest(folder, info, role)
