"""The torch-free export: the graph of encoders/bert_graph.py's PooledEncoder written with onnx.helper
from a folder's config.json and model.safetensors, so the runtime install (no torch, no
transformers) can export an encoder in seconds.

The layout follows what torch.onnx.export makes of PooledEncoder (MatMul + Add for each Linear,
the [batch, seq, heads, head_dim] Reshape/Transpose attention, the additive (1 - mask) * -10000
mask, gelu as x * 0.5 * (1 + erf(x / sqrt 2))), because ONNX Runtime's BERT fusions (attention,
bias-gelu, embed-layernorm) match those node patterns and nothing else.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from encoders.adapter import TokenAdapter
from schemas.errors import ConfigError

__all__ = [
    "INPUTS",
    "SUPPORTED_MODEL_TYPES",
    "EncoderConfig",
    "ExportError",
    "build_graph",
    "read_config",
    "read_safetensors",
    "read_weights",
]

SUPPORTED_MODEL_TYPES = {"bert", "roberta", "xlm-roberta", "camembert", "electra"}  # both exporters read it
_ROBERTA_FAMILY = {"roberta", "xlm-roberta", "camembert"}  # positions numbered from padding_idx + 1
_ACTIVATIONS = ("gelu", "gelu_new", "relu")
_MIN_OPSET = 17  # LayerNormalization
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]  # int64 [batch, sequence], as tokenize.py pads them
_ST_DTYPES: dict[str, Any] = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": "bf16",
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


class ExportError(ConfigError, ValueError):
    """A model folder that cannot be exported as asked: names the file and what to do instead."""


@dataclass(frozen=True)
class EncoderConfig:
    """The config.json values the graph depends on, with the transformers defaults filled in."""

    model_type: str
    hidden_size: int
    num_heads: int
    num_layers: int
    intermediate_size: int
    max_position_embeddings: int
    activation: str
    layer_norm_eps: float
    pad_token_id: int

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def position_offset(self) -> int:
        return self.pad_token_id + 1 if self.model_type in _ROBERTA_FAMILY else 0


def read_config(model_dir: Path) -> EncoderConfig:
    """config.json checked as PooledEncoder checks it: ValueError naming what is unsupported."""
    path = model_dir / "config.json"
    if not path.is_file():
        raise ExportError(f"{path} not found: {model_dir} is not a Hugging Face model folder")
    try:
        raw = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path} is not valid JSON ({exc})") from exc
    kind = raw.get("model_type")
    if kind not in SUPPORTED_MODEL_TYPES:
        raise ExportError(f"model_type {kind!r} is not BERT-family; supported: {sorted(SUPPORTED_MODEL_TYPES)}")
    if raw.get("position_embedding_type", "absolute") != "absolute":
        raise ExportError("only absolute position embeddings are supported")
    act = raw.get("hidden_act", "gelu")
    if act not in _ACTIVATIONS:
        raise ExportError(f"unsupported activation {act!r}")
    try:
        cfg = EncoderConfig(
            model_type=kind,
            hidden_size=int(raw["hidden_size"]),
            num_heads=int(raw["num_attention_heads"]),
            num_layers=int(raw["num_hidden_layers"]),
            intermediate_size=int(raw["intermediate_size"]),
            max_position_embeddings=int(raw.get("max_position_embeddings", 512)),
            activation=act,
            layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
            pad_token_id=int(raw.get("pad_token_id", 1 if kind in _ROBERTA_FAMILY else 0)),
        )
    except KeyError as exc:
        raise ExportError(f"{path} lacks {exc.args[0]!r}") from exc
    if cfg.hidden_size % cfg.num_heads:
        raise ExportError(f"{path}: hidden_size {cfg.hidden_size} is not a multiple of {cfg.num_heads} heads")
    return cfg


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Tensors of one safetensors file (8-byte little-endian header length, JSON header, raw buffer),
    memory-mapped; bf16 comes back as float32 (numpy has no bfloat16)."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if n <= 0 or 8 + n > size:
            raise ExportError(f"{path} is not a safetensors file (bad header length)")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ExportError(f"{path} is not a safetensors file ({exc})") from exc
    buf = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n) if size > 8 + n else np.zeros(0, np.uint8)
    out: dict[str, np.ndarray] = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        dtype = _ST_DTYPES.get(spec.get("dtype"))
        start, end = spec.get("data_offsets", (0, -1))
        if dtype is None or not 0 <= start <= end <= buf.size:
            raise ExportError(f"{path}: tensor {name!r} has an unsupported dtype or lies outside the file")
        shape = [int(d) for d in spec.get("shape", [])]
        width = 2 if dtype == "bf16" else np.dtype(dtype).itemsize
        if end - start != width * math.prod(shape):
            raise ExportError(f"{path}: tensor {name!r} has {end - start} bytes, not the {shape} its header says")
        raw = buf[start:end]
        arr = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32) if dtype == "bf16" else raw.view(dtype)
        out[name] = arr.reshape(shape)
    return out


def read_weights(model_dir: Path) -> dict[str, np.ndarray]:
    """Every tensor of the folder's model.safetensors (or its shards, per model.safetensors.index.json)."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (model_dir / "model.safetensors").is_file():
        files = ["model.safetensors"]
    elif any(model_dir.glob("*.bin")):
        raise ExportError(
            f"{model_dir} has PyTorch .bin weights but no model.safetensors: the numpy exporter reads "
            "safetensors only; export with --backend torch (needs the train extra)"
        )
    else:
        raise ExportError(f"{model_dir} has no model.safetensors")
    weights: dict[str, np.ndarray] = {}
    for name in files:
        weights.update(read_safetensors(model_dir / name))
    return weights


class _Weights:
    """Looks weights up under the prefix the folder uses (none, `bert.`, `roberta.`, `electra.`, ...)
    and under the old TF names (LayerNorm gamma/beta)."""

    _ALIASES: ClassVar[dict[str, str]] = {".weight": ".gamma", ".bias": ".beta"}

    def __init__(self, tensors: Mapping[str, np.ndarray], source: Path) -> None:
        anchor = "embeddings.word_embeddings.weight"
        prefixes = [k[: -len(anchor)] for k in tensors if k.endswith(anchor)]
        prefixes = [p for p in prefixes if p == "" or p.endswith(".")]
        if len(prefixes) != 1:
            found = "none" if not prefixes else f"several ({prefixes})"
            raise ExportError(f"{source}: expected one BERT-family {anchor} tensor, found {found}")
        self.prefix = prefixes[0]
        self.tensors = tensors
        self.source = source

    def has(self, name: str) -> bool:
        return self.prefix + name in self.tensors

    def get(self, name: str) -> np.ndarray:
        key = self.prefix + name
        if key not in self.tensors and "LayerNorm" in name:
            for new, old in self._ALIASES.items():
                if name.endswith(new) and self.prefix + name[: -len(new)] + old in self.tensors:
                    key = self.prefix + name[: -len(new)] + old
        if key not in self.tensors:
            raise ExportError(f"{self.source}: weight {key!r} is missing")
        return np.ascontiguousarray(self.tensors[key], dtype=np.float32)


class _Builder:
    """Nodes and initializers of one graph, named after the module path they come from."""

    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._names: set[str] = set()

    def _unique(self, name: str) -> str:
        base, n = name, 0
        while name in self._names:
            n += 1
            name = f"{base}_{n}"
        self._names.add(name)
        return name

    def init(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self._unique(name)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def scalar(self, name: str, value: float) -> str:
        return self.init(name, np.array(value, dtype=np.float32))

    def ints(self, name: str, values: int | list[int]) -> str:
        return self.init(name, np.array(values, dtype=np.int64))

    def op(self, op_type: str, inputs: list[str], name: str, **attrs: Any) -> str:
        from onnx import helper

        name = self._unique(name)
        out = f"{name}_output_0"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out

    def linear(self, x: str, w: _Weights, module: str) -> str:
        """torch's Linear as exported: MatMul by the transposed weight, then Add with the bias first."""
        weight = self.init(f"{module}.weight_t", w.get(f"{module}.weight").T.copy())
        bias = self.init(f"{module}.bias", w.get(f"{module}.bias"))
        mm = self.op("MatMul", [x, weight], f"/{module}/MatMul")
        return self.op("Add", [bias, mm], f"/{module}/Add")

    def layer_norm(self, x: str, w: _Weights, module: str, eps: float) -> str:
        scale = self.init(f"{module}.weight", w.get(f"{module}.weight"))
        bias = self.init(f"{module}.bias", w.get(f"{module}.bias"))
        return self.op("LayerNormalization", [x, scale, bias], f"/{module}/LayerNormalization", axis=-1, epsilon=eps)


def _activation(b: _Builder, x: str, kind: str, name: str) -> str:
    if kind == "relu":
        return b.op("Relu", [x], f"{name}/Relu")
    if kind == "gelu_new":  # tanh approximation, as torch writes gelu(approximate="tanh")
        cube = b.op("Mul", [x, b.op("Mul", [x, x], f"{name}/Mul_sq")], f"{name}/Mul_cube")
        kappa = b.op("Mul", [cube, b.scalar(f"{name}/kappa", 0.044715)], f"{name}/Mul_k")
        inner = b.op("Add", [x, kappa], f"{name}/Add")
        scaled = b.op("Mul", [inner, b.scalar(f"{name}/beta", math.sqrt(2.0 / math.pi))], f"{name}/Mul_b")
        plus = b.op("Add", [b.op("Tanh", [scaled], f"{name}/Tanh"), b.scalar(f"{name}/one", 1.0)], f"{name}/Add_1")
        return b.op("Mul", [b.op("Mul", [x, plus], f"{name}/Mul_x"), b.scalar(f"{name}/half", 0.5)], f"{name}/Mul_h")
    # exact gelu: x * (1 + erf(x / sqrt 2)) * 0.5, the layout ONNX Runtime's (Bias)Gelu fusion matches
    erf = b.op("Erf", [b.op("Div", [x, b.scalar(f"{name}/sqrt2", math.sqrt(2.0))], f"{name}/Div")], f"{name}/Erf")
    plus = b.op("Add", [erf, b.scalar(f"{name}/one", 1.0)], f"{name}/Add")
    return b.op("Mul", [b.op("Mul", [x, plus], f"{name}/Mul"), b.scalar(f"{name}/half", 0.5)], f"{name}/Mul_1")


def _embeddings(b: _Builder, w: _Weights, cfg: EncoderConfig) -> str:
    """word + position (+ offset) + token type, LayerNorm, and ELECTRA's optional projection."""
    # positions = arange(seq) + offset: Shape -> Gather(1) -> Range -> Unsqueeze, ONNX Runtime's
    # embed-layernorm pattern for BERT
    seq = b.op("Gather", [b.op("Shape", ["input_ids"], "/Shape"), b.ints("/seq_axis", 1)], "/Gather", axis=0)
    seq = b.op("Cast", [seq], "/Cast", to=7)
    positions = b.op("Range", [b.ints("/range_start", 0), seq, b.ints("/range_delta", 1)], "/Range")
    positions = b.op("Unsqueeze", [positions, b.ints("/batch_axis", [0])], "/Unsqueeze")
    if cfg.position_offset:
        positions = b.op("Add", [positions, b.ints("/position_offset", cfg.position_offset)], "/Add_offset")

    def table(name: str) -> str:
        return b.init(f"embeddings.{name}.weight", w.get(f"embeddings.{name}.weight"))

    word = b.op("Gather", [table("word_embeddings"), "input_ids"], "/word_embeddings/Gather")
    pos = b.op("Gather", [table("position_embeddings"), positions], "/position_embeddings/Gather")
    x = b.op("Add", [word, pos], "/Add")
    types = b.op("Gather", [table("token_type_embeddings"), "token_type_ids"], "/token_type_embeddings/Gather")
    x = b.op("Add", [x, types], "/Add_1")
    x = b.layer_norm(x, w, "embeddings.LayerNorm", cfg.layer_norm_eps)
    if w.has("embeddings_project.weight"):
        x = b.linear(x, w, "embeddings_project")
    return x


def _attention_mask(b: _Builder) -> str:
    """(1 - mask) * -10000, shaped [batch, 1, 1, seq] to broadcast over heads and queries."""
    m = b.op("Unsqueeze", ["attention_mask", b.ints("/mask_axis1", [1])], "/Unsqueeze_1")
    m = b.op("Unsqueeze", [m, b.ints("/mask_axis2", [2])], "/Unsqueeze_2")
    m = b.op("Cast", [m], "/Cast_1", to=1)
    m = b.op("Sub", [b.scalar("/one", 1.0), m], "/Sub")
    return b.op("Mul", [m, b.scalar("/mask_value", -10000.0)], "/Mul")


def _layer(b: _Builder, w: _Weights, cfg: EncoderConfig, i: int, x: str, mask: str, heads_shape: str) -> str:
    p = f"encoder.layer.{i}"
    q = b.op("Reshape", [b.linear(x, w, f"{p}.attention.self.query"), heads_shape], f"/{p}/q/Reshape")
    q = b.op("Transpose", [q], f"/{p}/q/Transpose", perm=[0, 2, 1, 3])
    k = b.op("Reshape", [b.linear(x, w, f"{p}.attention.self.key"), heads_shape], f"/{p}/k/Reshape")
    k = b.op("Transpose", [k], f"/{p}/k/Transpose", perm=[0, 2, 3, 1])
    v = b.op("Reshape", [b.linear(x, w, f"{p}.attention.self.value"), heads_shape], f"/{p}/v/Reshape")
    v = b.op("Transpose", [v], f"/{p}/v/Transpose", perm=[0, 2, 1, 3])
    scores = b.op("MatMul", [q, k], f"/{p}/scores/MatMul")
    scores = b.op("Div", [scores, b.scalar(f"/{p}/sqrt_head_dim", math.sqrt(cfg.head_dim))], f"/{p}/scores/Div")
    scores = b.op("Add", [scores, mask], f"/{p}/scores/Add")
    probs = b.op("Softmax", [scores], f"/{p}/Softmax", axis=-1)
    ctx = b.op("MatMul", [probs, v], f"/{p}/context/MatMul")
    ctx = b.op("Transpose", [ctx], f"/{p}/context/Transpose", perm=[0, 2, 1, 3])
    ctx = b.op("Reshape", [ctx, b.ints(f"/{p}/hidden_shape", [0, -1, cfg.hidden_size])], f"/{p}/context/Reshape")
    att = b.op("Add", [b.linear(ctx, w, f"{p}.attention.output.dense"), x], f"/{p}/attention/residual")
    x = b.layer_norm(att, w, f"{p}.attention.output.LayerNorm", cfg.layer_norm_eps)
    h = _activation(b, b.linear(x, w, f"{p}.intermediate.dense"), cfg.activation, f"/{p}/act")
    out = b.op("Add", [b.linear(h, w, f"{p}.output.dense"), x], f"/{p}/output/residual")
    return b.layer_norm(out, w, f"{p}.output.LayerNorm", cfg.layer_norm_eps)


def _pool_and_normalize(b: _Builder, x: str) -> str:
    """Masked mean over the sequence (pads weigh 0), then L2 normalisation; both clamped like torch."""
    m = b.op("Unsqueeze", ["attention_mask", b.ints("/pool_axis", [-1])], "/pool/Unsqueeze")
    m = b.op("Cast", [m], "/pool/Cast", to=1)
    seq_axis = b.ints("/seq_axes", [1])
    total = b.op("ReduceSum", [b.op("Mul", [x, m], "/pool/Mul"), seq_axis], "/pool/ReduceSum", keepdims=0)
    count = b.op("ReduceSum", [m, seq_axis], "/pool/ReduceSum_1", keepdims=0)
    count = b.op("Clip", [count, b.scalar("/pool/min_count", 1e-9)], "/pool/Clip")
    pooled = b.op("Div", [total, count], "/pool/Div")
    if b.opset >= 18:  # ReduceL2 takes its axes as an input from opset 18
        norm = b.op("ReduceL2", [pooled, seq_axis], "/norm/ReduceL2", keepdims=1)
    else:
        norm = b.op("ReduceL2", [pooled], "/norm/ReduceL2", axes=[1], keepdims=1)
    norm = b.op("Clip", [norm, b.scalar("/norm/min_norm", 1e-12)], "/norm/Clip")
    return b.op("Div", [pooled, norm], "/norm/Div")


def _adapter(b: _Builder, x: str, adapter: TokenAdapter) -> str:
    """x + U·gelu(D·x + d) + u per token (encoders.adapter), in Linear's exported layout."""

    def linear(inp: str, weight: np.ndarray, bias: np.ndarray, module: str) -> str:
        w = b.init(f"{module}.weight_t", np.ascontiguousarray(np.asarray(weight, np.float32).T))
        mm = b.op("MatMul", [inp, w], f"/{module}/MatMul")
        return b.op("Add", [b.init(f"{module}.bias", np.asarray(bias, np.float32)), mm], f"/{module}/Add")

    h = _activation(b, linear(x, adapter.down_w, adapter.down_b, "adapter.down"), "gelu", "/adapter/act")
    return b.op("Add", [linear(h, adapter.up_w, adapter.up_b, "adapter.up"), x], "/adapter/residual")


def build_graph(model_dir: Path, opset: int, adapter: TokenAdapter | None = None) -> tuple[Any, EncoderConfig]:
    """(onnx ModelProto, its config): (input_ids, attention_mask, token_type_ids) int64 with dynamic
    batch and sequence -> `embedding` [batch, hidden] float32 unit vectors. `adapter`: a tuned
    token adapter between the last layer and the pooling (encoders.adapter)."""
    import onnx
    from onnx import TensorProto, helper

    if not _MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ExportError(
            f"the numpy exporter writes opset {_MIN_OPSET}..{onnx.defs.onnx_opset_version()} "
            f"(LayerNormalization), not {opset}; use --backend torch for older opsets"
        )
    cfg = read_config(model_dir)
    w = _Weights(read_weights(model_dir), model_dir / "model.safetensors")
    b = _Builder(opset)
    x = _embeddings(b, w, cfg)
    mask = _attention_mask(b)
    heads_shape = b.ints("/heads_shape", [0, -1, cfg.num_heads, cfg.head_dim])
    for i in range(cfg.num_layers):
        x = _layer(b, w, cfg, i, x, mask, heads_shape)
    if adapter is not None:
        if adapter.dim != cfg.hidden_size:
            raise ExportError(f"the adapter is for width {adapter.dim}, the model's is {cfg.hidden_size}")
        x = _adapter(b, x, adapter)
    _pool_and_normalize(b, x)
    b.nodes[-1].output[0] = "embedding"  # the last Div
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in INPUTS]
    outputs = [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", cfg.hidden_size])]
    graph = helper.make_graph(b.nodes, "pooled_encoder", inputs, outputs, b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="fusionrec")
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))  # what torch writes too
    onnx.checker.check_model(model, full_check=True)
    return model, cfg
