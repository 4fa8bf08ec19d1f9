"""The numpy builder (encoders.onnx_build) against the torch one on the default encoder, the
runtime install's promise (no torch, no transformers), the safetensors reader, and the CLI's
--backend."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from encoders import EncoderManifest, TextEncoder
from encoders.onnx_build import ExportError, read_safetensors
from encoders.parity import neighbour_overlap, row_cosines
from tests.cli import assert_error, run_cli
from tests.encoders.tiny_models import save_tiny

REPO = Path(__file__).resolve().parents[2]
#: what may differ between the two builders' manifests: the graph's bytes and the builder's versions
BUILDER_FIELDS = {"onnx_digest", "versions"}
#: how close the numpy export's vectors are to the torch export's, per variant (fp16: float16 rounding)
AGREEMENT = {"fp32": 0.99999, "int8": 0.9999, "fp16": 0.999}


def _embedding_norm_as_skip(fusions: dict[str, int]) -> dict[str, int]:
    """Fusion counts with an EmbedLayerNormalization counted as the SkipLayerNormalization it replaces."""
    out = dict(fusions)
    embed = out.pop("EmbedLayerNormalization", 0)
    out["SkipLayerNormalization"] = out.get("SkipLayerNormalization", 0) + embed
    return out


@pytest.mark.parametrize("exports", ["numpy"], indirect=True)
def test_numpy_export_matches_torch_export(
    exports: dict[str, Path], torch_exports: dict[str, Path], catalog_texts: list[str]
) -> None:
    longest = sorted(range(len(catalog_texts)), key=lambda i: -len(catalog_texts[i]))[:20]
    texts = [catalog_texts[i] for i in [*range(100), *longest]]  # the whole-catalog bars are in test_text_encoder
    for variant, folder in exports.items():
        mine, theirs = EncoderManifest.read(folder), EncoderManifest.read(torch_exports[variant])
        assert mine.versions["exporter"] == "numpy" and theirs.versions["exporter"] == "torch"
        assert "torch" not in mine.versions and "transformers" not in mine.versions
        differ = set(BUILDER_FIELDS)
        if variant == "fp16":
            # attention unfused (encoders.export._fusion_options): the embeddings' sum + LayerNorm fuses
            # into EmbedLayerNormalization in the numpy layout, into one more SkipLayerNormalization in
            # the torch trace: the same arithmetic, and everything else alike
            assert _embedding_norm_as_skip(mine.fusions) == _embedding_norm_as_skip(theirs.fusions)
            differ.add("fusions")
        else:
            assert mine.fusions == theirs.fusions, variant  # ONNX Runtime fused the numpy layout alike
        same = {k: v for k, v in vars(mine).items() if k not in differ}
        assert same == {k: v for k, v in vars(theirs).items() if k not in differ}, variant
        a = TextEncoder(folder).encode(texts, batch_size=32)
        b = TextEncoder(torch_exports[variant]).encode(texts, batch_size=32)
        assert row_cosines(a, b).min() >= AGREEMENT[variant], variant
        if variant == "fp32":
            assert neighbour_overlap(a, b, k=10) == 1.0


def test_numpy_export_needs_neither_torch_nor_transformers(tmp_path: Path) -> None:
    """In a subprocess where importing torch or transformers fails (as in the runtime install), every
    variant exports, and neither module was loaded."""
    src = save_tiny("bert", tmp_path / "tiny")
    code = f"""
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers", "sentence_transformers"):
            raise ImportError(f"{{name}} is not in the runtime install")
sys.meta_path.insert(0, NoTorch())
from encoders.export import export_encoder
for variant in ("fp32", "int8", "fp16"):
    m = export_encoder({str(src)!r}, {str(tmp_path)!r} + "/" + variant, variant, backend="auto")
    assert m.versions["exporter"] == "numpy", m.versions
loaded = [m for m in ("torch", "transformers") if m in sys.modules]
assert not loaded, loaded
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]
    for variant in ("fp32", "int8", "fp16"):
        assert TextEncoder(tmp_path / variant).encode(["a beaker"]).shape == (1, 32)


def _safetensors(path: Path, tensors: dict[str, tuple[str, list[int], bytes]]) -> Path:
    header, offset, data = {}, 0, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset, data = offset + len(raw), data + raw
    blob = json.dumps({"__metadata__": {"format": "pt"}, **header}).encode()
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + data)
    return path


def test_safetensors_reader_decodes_each_float_width(tmp_path: Path) -> None:
    values = np.array([1.0, -2.5, 0.15625, 3.0e-3], dtype=np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype(np.uint16)  # these values' low 16 bits are 0 or dropped
    path = _safetensors(
        tmp_path / "model.safetensors",
        {
            "a": ("F32", [2, 2], values.tobytes()),
            "b": ("F16", [4], values.astype(np.float16).tobytes()),
            "c": ("BF16", [4], bf16.tobytes()),
        },
    )
    got = read_safetensors(path)
    assert set(got) == {"a", "b", "c"}
    np.testing.assert_array_equal(got["a"], values.reshape(2, 2))
    np.testing.assert_allclose(got["b"].astype(np.float32), values, rtol=1e-3)
    assert got["c"].dtype == np.float32
    np.testing.assert_allclose(got["c"], values, rtol=1e-2)
    np.testing.assert_array_equal(got["c"][:3], values[:3])  # exactly representable in bfloat16

    short = _safetensors(tmp_path / "short.safetensors", {"a": ("F32", [4], values.tobytes()[:8])})
    with pytest.raises(ExportError, match=r"short\.safetensors: tensor 'a' has 8 bytes, not the \[4\]"):
        read_safetensors(short)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(ExportError, match=r"cut\.safetensors: tensor 'c' .* lies outside the file"):
        read_safetensors(cut)
    odd = _safetensors(tmp_path / "odd.safetensors", {"a": ("C64", [1], b"\0" * 8)})
    with pytest.raises(ExportError, match=r"odd\.safetensors: tensor 'a' has an unsupported dtype"):
        read_safetensors(odd)


def test_cli_backend_option(tmp_path: Path) -> None:
    src = save_tiny("bert", tmp_path / "tiny")
    proc = run_cli("export-encoder", "--model", str(src), "--out", str(tmp_path / "out"), "--backend", "numpy")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "numpy exporter" in proc.stdout
    assert EncoderManifest.read(tmp_path / "out").versions["exporter"] == "numpy"
    bin_only = save_tiny("bert", tmp_path / "bin", bin_only=True)
    assert_error(
        run_cli("export-encoder", "--model", str(bin_only), "--out", str(tmp_path / "o2"), "--backend", "numpy"),
        "no model.safetensors",
        "--backend torch",
    )
    assert_error(run_cli("export-encoder", "--out", str(tmp_path / "o3"), "--backend", "jax"), "--backend", "jax")
    assert_error(run_cli("export-encoder", "--model", str(tmp_path / "nowhere"), "--out", "x"), "is not a folder")
