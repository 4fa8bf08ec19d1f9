"""A damaged or altered encoder export is refused at load with an error naming the file (never a
traceback from onnxruntime or tokenizers, never NaN vectors), and the catalog cache is keyed by
the weights, so another model re-encodes every item. Runs on the tiny export (seconds)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from encoders import EncoderError, EncoderManifest, SequenceEncoder, TextEncoder, encode_catalog
from encoders.manifest import file_digest
from schemas.errors import ConfigError
from schemas.items import Item

ITEMS = [Item(f"i{j}", f"Item number {j} for the lab", category="Lab") for j in range(12)]


@pytest.fixture
def export(tiny_encoder: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny export, to damage."""
    return Path(shutil.copytree(tiny_encoder, tmp_path / "export"))


def _flip(path: Path) -> None:
    """Same size, one byte changed in the middle."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _resign(folder: Path) -> None:
    """Record the files' current digests in the manifest, as a re-export of those bytes would."""
    doc = json.loads((folder / "manifest.json").read_text())
    doc["onnx_digest"] = file_digest(folder / "model.onnx")
    doc["tokenizer_digest"] = file_digest(folder / "tokenizer.json")
    (folder / "manifest.json").write_text(json.dumps(doc))


def _set_initializers(folder: Path, value: float | None, scale: float = 1.0) -> None:
    """Rewrite every float weight of model.onnx (to `value`, or times `scale`) and re-sign it."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(folder / "model.onnx"))
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32 and arr.size > 1:
            new = np.full_like(arr, value) if value is not None else arr * scale
            init.CopyFrom(numpy_helper.from_array(new.astype(np.float32), init.name))
    onnx.save(model, str(folder / "model.onnx"))
    _resign(folder)


def test_the_export_records_and_checks_both_digests(export: Path) -> None:
    m = EncoderManifest.read(export)
    assert m.onnx_digest == file_digest(export / "model.onnx")
    assert m.tokenizer_digest == file_digest(export / "tokenizer.json")
    enc = TextEncoder(export)
    assert enc.weights_digest == m.onnx_digest and enc.cache_key["encoder_digest"] == m.onnx_digest


def test_same_size_corrupted_model_is_refused_naming_it(export: Path) -> None:
    size = (export / "model.onnx").stat().st_size
    _flip(export / "model.onnx")
    assert (export / "model.onnx").stat().st_size == size
    with pytest.raises(EncoderError, match=re.escape(f"{export / 'model.onnx'} does not match its digest")):
        TextEncoder(export)


def test_truncated_model_is_refused_naming_it(export: Path) -> None:
    data = (export / "model.onnx").read_bytes()
    (export / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match=re.escape(f"{export / 'model.onnx'} does not match its digest")):
        TextEncoder(export)
    _resign(export)  # even with a matching digest, ONNX Runtime's refusal comes back naming the file
    with pytest.raises(EncoderError, match=re.escape(f"{export / 'model.onnx'}: ONNX Runtime could not load")):
        TextEncoder(export)


def test_corrupt_tokenizer_is_refused_naming_it(export: Path) -> None:
    _flip(export / "tokenizer.json")
    with pytest.raises(EncoderError, match=re.escape(f"{export / 'tokenizer.json'} does not match its digest")):
        TextEncoder(export)
    (export / "tokenizer.json").write_text("{not json")
    _resign(export)
    with pytest.raises(EncoderError, match=re.escape(f"{export / 'tokenizer.json'} is not a loadable tokenizer")):
        TextEncoder(export)


def test_broken_manifest_is_refused_naming_it(export: Path) -> None:
    manifest = export / "manifest.json"
    good = json.loads(manifest.read_text())
    manifest.write_text(json.dumps(good)[:-10])
    with pytest.raises(EncoderError, match=re.escape(f"{manifest} is not valid JSON")):
        TextEncoder(export)
    manifest.write_text(json.dumps({k: v for k, v in good.items() if k != "onnx_digest"}))
    with pytest.raises(EncoderError, match=re.escape(f"{manifest} lacks the key(s) ['onnx_digest']")):
        TextEncoder(export)
    manifest.write_text(json.dumps({**good, "dim": "32"}))
    with pytest.raises(EncoderError, match=re.escape(f"{manifest}: key(s) ['dim'] have the wrong type")):
        TextEncoder(export)
    manifest.write_text(json.dumps({**good, "onnx_file": "../model.onnx"}))
    with pytest.raises(EncoderError, match="must be a file name inside the export"):
        TextEncoder(export)
    manifest.unlink()
    with pytest.raises(EncoderError, match=re.escape(f"{manifest} not found")):
        TextEncoder(export)


def test_an_export_from_before_tokenizer_digests_still_loads(export: Path) -> None:
    doc = json.loads((export / "manifest.json").read_text())
    del doc["tokenizer_digest"]
    (export / "manifest.json").write_text(json.dumps(doc))
    assert TextEncoder(export).encode(["x"]).shape == (1, 32)


def test_non_finite_vectors_are_refused_not_stored(export: Path, tmp_path: Path) -> None:
    _set_initializers(export, float("nan"))  # digests match: the graph loads and computes NaN
    enc = TextEncoder(export)
    with pytest.raises(EncoderError, match=re.escape(f"{export / 'model.onnx'} produced non-finite vectors")):
        enc.encode(["a lab beaker"])
    with pytest.raises(EncoderError, match="non-finite"):
        encode_catalog(ITEMS, enc, tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache" / "vectors.npy").exists()


def test_catalog_cache_is_keyed_by_the_weights(export: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = encode_catalog(ITEMS, TextEncoder(export), cache, progress=False)
    assert (first.encoded, first.reused) == (12, 0)
    assert encode_catalog(ITEMS, TextEncoder(export), cache, progress=False).encoded == 0
    before = np.load(cache / "vectors.npy")
    _set_initializers(export, None, scale=1.5)  # other weights, same manifest otherwise
    enc = TextEncoder(export)
    again = encode_catalog(ITEMS, enc, cache, progress=False)
    assert (again.encoded, again.reused) == (12, 0)  # a different model re-encodes everything
    after = np.load(cache / "vectors.npy")
    assert not np.allclose(before, after, atol=1e-3)
    assert np.allclose(after, enc.encode([it.text() for it in ITEMS]), atol=1e-5)
    assert json.loads((cache / "manifest.json").read_text())["encoder_digest"] == file_digest(export / "model.onnx")


def test_damaged_catalog_cache_is_rebuilt(export: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    enc = TextEncoder(export)
    encode_catalog(ITEMS, enc, cache, progress=False)
    (cache / "manifest.json").write_text("{oops")
    assert encode_catalog(ITEMS, enc, cache, progress=False).encoded == 12
    np.save(cache / "vectors.npy", np.full((12, 32), np.nan, np.float32))
    assert encode_catalog(ITEMS, enc, cache, progress=False).encoded == 12
    assert np.isfinite(np.load(cache / "vectors.npy")).all()


def test_corrupt_sequence_graph_is_refused_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "user_encoder.onnx"
    bad.write_bytes(b"\x08\x07" + b"garbage" * 100)
    with pytest.raises(EncoderError, match=re.escape(f"{bad}: ONNX Runtime could not load")):
        SequenceEncoder(bad)
    with pytest.raises(EncoderError, match="not found"):
        SequenceEncoder(tmp_path / "absent.onnx")
