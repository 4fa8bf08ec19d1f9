"""Any local Hugging Face BERT-family folder exports and matches transformers, by either builder:
tiny random BERT, RoBERTa (positions from padding_idx + 1), ELECTRA (embedding projection) and
BERT with gelu_new / relu, saved with save_pretrained. The numpy builder also reads prefixed and
sharded checkpoints and tokenizer.json-less folders, and refuses what it cannot read by name."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from encoders import EncoderManifest, TextEncoder
from encoders.export import ExportError, default_model_dir, export_encoder
from encoders.parity import row_cosines
from encoders.torch_reference import TorchEncoder
from tests.encoders.tiny_models import KINDS, save_tiny

TinyExport = Callable[[str, str], tuple[Path, EncoderManifest]]

TEXTS = ["Adhesive-backed sanding roll, 80 grit", "lab beaker", "x", "a " * 100, "Grizzly vise with 3-inch jaws"]
BACKENDS = ["numpy", "torch"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """kind -> its tiny model folder, saved once per module."""
    root = tmp_path_factory.mktemp("tiny-models")
    made: dict[str, Path] = {}

    def folder(kind: str) -> Path:
        if kind not in made:
            made[kind] = save_tiny(kind, root / kind)
        return made[kind]

    return folder


@pytest.fixture(scope="module")
def tiny_export(
    tiny: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str, str], tuple[Path, EncoderManifest]]:
    """(kind, backend) -> its fp32 export and manifest, made once per module."""
    root = tmp_path_factory.mktemp("tiny-exports")
    made: dict[tuple[str, str], tuple[Path, EncoderManifest]] = {}

    def export(kind: str, backend: str) -> tuple[Path, EncoderManifest]:
        if (kind, backend) not in made:
            out = root / f"{kind}-{backend}"
            made[kind, backend] = out, export_encoder(tiny(kind), out, "fp32", backend=backend)  # type: ignore[arg-type]
        return made[kind, backend]

    return export


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS)
def test_tiny_random_model_folder_exports_with_parity(
    kind: str,
    backend: str,
    tiny: Callable[[str], Path],
    tiny_export: Callable[[str, str], tuple[Path, EncoderManifest]],
) -> None:
    from transformers import AutoTokenizer

    src = tiny(kind)
    out, manifest = tiny_export(kind, backend)
    tok = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
    family = kind.partition("-")[0]
    assert manifest.model_type == family and manifest.dim == 32
    assert manifest.versions["exporter"] == backend
    assert manifest.max_length == min(tok.model_max_length, 130 - (tok.pad_token_id + 1 if family == "roberta" else 0))
    assert manifest.pad_token_id == tok.pad_token_id
    got = TextEncoder(out).encode(TEXTS)
    want = TorchEncoder(src, manifest.max_length).encode(TEXTS)
    assert row_cosines(got, want).min() >= 0.9999
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_numpy_and_torch_builders_make_the_same_graph(
    kind: str, tiny_export: Callable[[str, str], tuple[Path, EncoderManifest]]
) -> None:
    """Same fusions (ONNX Runtime recognised the numpy layout everywhere it recognised torch's), same
    tokenizer file, same manifest but for the graph's digest and the builder's versions, same vectors."""
    (np_dir, np_m), (torch_dir, torch_m) = tiny_export(kind, "numpy"), tiny_export(kind, "torch")
    assert np_m.fusions == torch_m.fusions and np_m.fusions.get("Attention") == 2
    assert np_m.tokenizer_digest == torch_m.tokenizer_digest
    differ = {"onnx_digest", "versions"}
    assert {k: v for k, v in vars(np_m).items() if k not in differ} == {
        k: v for k, v in vars(torch_m).items() if k not in differ
    }
    a, b = TextEncoder(np_dir).encode(TEXTS), TextEncoder(torch_dir).encode(TEXTS)
    assert np.abs(a - b).max() <= 1e-5


def test_prefixed_sharded_checkpoint_exports(tmp_path: Path) -> None:
    """A task model's checkpoint (weights under `bert.`, a head beside them) cut into shards with an
    index file: the numpy builder finds the encoder's weights and matches transformers."""
    src = save_tiny("bert", tmp_path / "mlm", head="ForMaskedLM", max_shard_size="100KB")
    assert (src / "model.safetensors.index.json").is_file() and not (src / "model.safetensors").exists()
    manifest = export_encoder(src, tmp_path / "out", "fp32", backend="auto")
    assert manifest.versions["exporter"] == "numpy"
    got = TextEncoder(tmp_path / "out").encode(TEXTS)
    assert row_cosines(got, TorchEncoder(src, manifest.max_length).encode(TEXTS)).min() >= 0.9999


def test_vocab_txt_folder_gets_the_same_tokenizer(tmp_path: Path, tiny: Callable[[str], Path]) -> None:
    """No tokenizer.json: the numpy path builds the WordPiece tokenizer from vocab.txt and
    tokenizer_config.json, and it tokenizes as transformers' fast tokenizer does."""
    from tokenizers import Tokenizer

    src = Path(shutil.copytree(tiny("bert"), tmp_path / "vocab-only"))
    (src / "tokenizer.json").unlink()
    shutil.copy(default_model_dir() / "vocab.txt", src / "vocab.txt")  # transformers 5 saves tokenizer.json only
    export_encoder(src, tmp_path / "out", "fp32", backend="numpy")
    built = Tokenizer.from_file(str(tmp_path / "out" / "tokenizer.json"))
    reference = Tokenizer.from_file(str(default_model_dir() / "tokenizer.json"))
    for tok in (built, reference):
        tok.no_truncation()
        tok.no_padding()
    texts = [*TEXTS, "Ünïcode ÀCCENTS and 中文 text", "[CLS] pre-tokenised [SEP] tokens"]
    assert [e.ids for e in built.encode_batch(texts)] == [e.ids for e in reference.encode_batch(texts)]

    (src / "vocab.txt").unlink()
    with pytest.raises(ExportError, match=r"no tokenizer\.json"):
        export_encoder(src, tmp_path / "out2", "fp32", backend="numpy")


def test_bin_only_folder_needs_the_torch_builder(tmp_path: Path) -> None:
    src = save_tiny("bert", tmp_path / "bin", bin_only=True)
    assert not (src / "model.safetensors").exists()
    with pytest.raises(ExportError, match=r"no model\.safetensors.*--backend torch"):
        export_encoder(src, tmp_path / "out", "fp32", backend="numpy")
    assert export_encoder(src, tmp_path / "out", "fp32").versions["exporter"] == "torch"  # auto


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_bert_family_is_refused(backend: str, tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2Model

    GPT2Model(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=100)).save_pretrained(str(tmp_path / "gpt"))
    shutil.copy(default_model_dir() / "tokenizer.json", tmp_path / "gpt" / "tokenizer.json")
    with pytest.raises(ExportError, match="not BERT-family"):
        export_encoder(tmp_path / "gpt", tmp_path / "out", "fp32", backend=backend)  # type: ignore[arg-type]
    assert isinstance(ExportError("x"), ValueError)  # callers that caught ValueError still do


def test_unreadable_inputs_are_refused_by_name(tmp_path: Path, tiny: Callable[[str], Path]) -> None:
    src = Path(shutil.copytree(tiny("bert"), tmp_path / "broken"))
    (src / "model.safetensors").write_bytes((10**9).to_bytes(8, "little") + b"{}")
    with pytest.raises(ExportError, match=r"model\.safetensors is not a safetensors file"):
        export_encoder(src, tmp_path / "out", "fp32", backend="numpy")
    cfg = json.loads((tiny("bert") / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**cfg, "position_embedding_type": "relative_key"}))
    with pytest.raises(ExportError, match="only absolute position embeddings"):
        export_encoder(src, tmp_path / "out", "fp32", backend="numpy")
    with pytest.raises(ExportError, match="opset 17"):
        export_encoder(tiny("bert"), tmp_path / "out", "fp32", opset=13, backend="numpy")
    with pytest.raises(ExportError, match="is not a folder"):
        export_encoder(tmp_path / "nowhere", tmp_path / "out", "fp32")
    with pytest.raises(ExportError, match="unknown backend"):
        export_encoder(tiny("bert"), tmp_path / "out", "fp32", backend="jax")  # type: ignore[arg-type]
