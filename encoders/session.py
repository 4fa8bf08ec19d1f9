"""ONNX Runtime sessions with an explicit provider choice, checked after creation."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from encoders.manifest import EncoderError

__all__ = ["ORT_ERRORS", "EncoderError", "Provider", "SessionConfig", "create_session", "model_error"]

log = logging.getLogger("fusionrec.encoders")

try:
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as state
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "encoders need ONNX Runtime: pip install 'fusionrec[cpu]' (or 'fusionrec[gpu]' for CUDA)"
    ) from exc

Provider = Literal["auto", "cpu", "cuda"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# ONNX Runtime's CPU SkipLayerNormalization kernel is 3-6x slower than the Add + LayerNormalization
# it fuses (encoders.export._fusion_options); the session-time optimiser would re-fuse the pairs
# the CPU exports leave apart (it does after int8 quantisation), so CPU sessions turn it off.
CPU_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


def _ort_errors() -> tuple[type[Exception], ...]:
    """ONNX Runtime's own exception classes (they derive from Exception only, not RuntimeError)."""
    names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "EngineError", "RuntimeException",
             "InvalidProtobuf", "ModelLoaded", "NotImplemented", "InvalidGraph", "EPFail")  # fmt: skip
    found = tuple(c for n in names if isinstance(c := getattr(state, n, None), type) and issubclass(c, Exception))
    return found or (RuntimeError,)


#: what ONNX Runtime raises on a file that is not a loadable graph, or a graph that cannot run
ORT_ERRORS: tuple[type[Exception], ...] = _ort_errors()


def model_error(model: str | Path | bytes, exc: BaseException, doing: str = "load") -> EncoderError:
    """EncoderError naming the model file, for an ONNX Runtime exception (raise it `from exc`)."""
    name = f"<{len(model)} bytes>" if isinstance(model, bytes) else str(model)
    detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    return EncoderError(
        f"{name}: ONNX Runtime could not {doing} this model ({detail}): the file is corrupt, truncated or "
        "not the graph expected; re-export it (or restore it from its source)"
    )


@dataclass(frozen=True)
class SessionConfig:
    provider: Provider = "auto"
    intra_op_threads: int = 0  # 0: ONNX Runtime decides (one per physical core)
    inter_op_threads: int = 1
    device_id: int = 0
    # Spinning keeps a core busy waiting for the next op: good for one big batch, ruinous when many
    # request threads run small sessions at once (the API). The API turns it off.
    allow_spinning: bool = True
    # CUDA only. ONNX Runtime's CUDA provider does fp32 matrix products in TF32 (10-bit mantissa) unless
    # told not to: scores then move by ~1e-3 and near-tied items swap places, so a GPU worker's lists
    # would differ from the CPU's and from `evaluate`'s. Off by default; the products are small here.
    cuda_tf32: bool = False


def wants_cuda(cfg: SessionConfig, available: Sequence[str] | None = None) -> bool:
    """Whether `create_session` puts a session on CUDA: asked for it, or "auto" where this
    onnxruntime offers it (`available`: its providers, asked when None)."""
    available = ort.get_available_providers() if available is None else available
    return cfg.provider == "cuda" or (cfg.provider == "auto" and CUDA in available)


def create_session(model: str | Path | bytes, cfg: SessionConfig = SessionConfig()) -> Any:
    """A session on CUDA when asked and present (auto), CUDA only (cuda: error when missing), or CPU.
    `model` is a file, or a serialized graph (bytes)."""
    available = ort.get_available_providers()
    if cfg.provider == "cuda" and CUDA not in available:
        raise EncoderError(
            f"CUDA was required but this onnxruntime offers only {available}; "
            "install 'fusionrec[gpu]' (onnxruntime-gpu) on a machine with an NVIDIA GPU"
        )
    want_cuda = wants_cuda(cfg, available)
    cuda_options = {"device_id": str(cfg.device_id), "use_tf32": "1" if cfg.cuda_tf32 else "0"}
    providers: list[Any] = [(CUDA, cuda_options), CPU] if want_cuda else [CPU]
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = cfg.intra_op_threads
    opts.inter_op_num_threads = cfg.inter_op_threads
    opts.log_severity_level = 3
    if not cfg.allow_spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if not isinstance(model, bytes) and not Path(model).is_file():
        raise EncoderError(f"{model} not found: no ONNX model there")
    source = model if isinstance(model, bytes) else str(model)
    disabled = [] if want_cuda else list(CPU_DISABLED_OPTIMIZERS)
    try:
        session = ort.InferenceSession(source, sess_options=opts, providers=providers, disabled_optimizers=disabled)
    except ORT_ERRORS as exc:
        raise model_error(model, exc) from exc
    active = session.get_providers()
    if cfg.provider == "cuda" and (not active or active[0] != CUDA):
        raise EncoderError(f"CUDA was required but the session runs on {active} (driver or CUDA libraries missing?)")
    if want_cuda and active and active[0] != CUDA:
        log.warning("cuda_unavailable falling_back_to=%s", active)
    name = f"<{len(model)} bytes>" if isinstance(model, bytes) else Path(model).name
    log.info("onnx_session model=%s providers=%s", name, ",".join(active))
    return session
