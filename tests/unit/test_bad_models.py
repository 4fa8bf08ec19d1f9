"""Damaged models through the CLI, as a user meets them: exit code 2, one `error:` line naming the
file, no traceback. Encoder exports (`encode-items --encoder`) and model bundles (`evaluate
--bundle`), on copies of the cheap session fixtures (tiny encoder, tiny bundle)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli import assert_error, run_cli


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def items_file(tmp_path: Path) -> Path:
    path = tmp_path / "items.csv"
    path.write_text("item_id,title\n" + "".join(f"i{j},Lab beaker number {j}\n" for j in range(50)))
    return path


@pytest.fixture
def encoder_copy(tiny_encoder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_encoder, tmp_path / "encoder"))


def _encode_items(items: Path, encoder: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("encode-items", "--items", str(items), "--encoder", str(encoder), "--out", str(out))


def test_encode_items_works_on_the_intact_export(encoder_copy: Path, items_file: Path, tmp_path: Path) -> None:
    proc = _encode_items(items_file, encoder_copy, tmp_path / "vectors")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "50 encoded, 0 unchanged" in proc.stdout


def test_encode_items_refuses_a_same_size_corrupted_model(encoder_copy: Path, items_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "vectors"
    assert _encode_items(items_file, encoder_copy, out).returncode == 0  # a cache made by the intact model
    _flip(encoder_copy / "model.onnx")
    proc = _encode_items(items_file, encoder_copy, out)
    assert_error(proc, f"{encoder_copy / 'model.onnx'} does not match its digest")
    assert "unchanged" not in proc.stdout


def test_encode_items_refuses_a_truncated_model(encoder_copy: Path, items_file: Path, tmp_path: Path) -> None:
    model = encoder_copy / "model.onnx"
    model.write_bytes(model.read_bytes()[:1000])
    assert_error(_encode_items(items_file, encoder_copy, tmp_path / "vectors"), str(model))


def test_encode_items_refuses_a_manifest_with_bad_json(encoder_copy: Path, items_file: Path, tmp_path: Path) -> None:
    manifest = encoder_copy / "manifest.json"
    manifest.write_text(manifest.read_text()[:-30])
    assert_error(_encode_items(items_file, encoder_copy, tmp_path / "vectors"), f"{manifest} is not valid JSON")


def test_encode_items_refuses_a_manifest_missing_a_key(encoder_copy: Path, items_file: Path, tmp_path: Path) -> None:
    manifest = encoder_copy / "manifest.json"
    doc = json.loads(manifest.read_text())
    del doc["max_length"]
    manifest.write_text(json.dumps(doc))
    assert_error(_encode_items(items_file, encoder_copy, tmp_path / "vectors"), f"{manifest} lacks the key")


def _evaluate(shop_dir: Path, bundle: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("evaluate", "--data", str(shop_dir), "--bundle", str(bundle), "--json", str(tmp_path / "eval.json"))


def test_evaluate_refuses_a_folder_that_is_not_a_bundle(shop_dir: Path, tiny_encoder: Path, tmp_path: Path) -> None:
    assert_error(_evaluate(shop_dir, tmp_path, tmp_path), f"{tmp_path} is not a bundle: no manifest.json")
    assert_error(_evaluate(shop_dir, tmp_path / "nowhere", tmp_path), f"{tmp_path / 'nowhere'} is not a bundle")
    assert_error(_evaluate(shop_dir, tiny_encoder, tmp_path), f"{tiny_encoder} is not a model bundle")


@pytest.mark.parametrize("name", ["item_ids.json", "items.jsonl", "popularity.json", "encoder/model.onnx"])
def test_evaluate_refuses_an_altered_bundle_file(shop_dir: Path, tiny_bundle: Path, tmp_path: Path, name: str) -> None:
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    _flip(bundle / name)
    assert_error(_evaluate(shop_dir, bundle, tmp_path), f"{bundle / name} does not match its digest")


def test_evaluate_refuses_a_broken_bundle_manifest(shop_dir: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    manifest = bundle / "manifest.json"
    good = manifest.read_text()
    manifest.write_text(good[: len(good) // 2])
    assert_error(_evaluate(shop_dir, bundle, tmp_path), f"{manifest} is not valid JSON")
    doc = json.loads(good)
    del doc["model"]
    manifest.write_text(json.dumps(doc))
    assert_error(_evaluate(shop_dir, bundle, tmp_path), f"{manifest} lacks the key 'model'")
