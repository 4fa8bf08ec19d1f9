"""A small end-to-end fit on the synthetic shop: bundle layout, ONNX vs torch, determinism,
evaluate (default and hold-out) through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ranker.bundle import ModelBundle
from tests.conftest import VARIANTS

REPO = Path(__file__).resolve().parents[2]


def test_bundle_layout_and_manifest(bundles: list[Path]) -> None:
    b = ModelBundle.load(bundles[0])
    m = b.manifest
    assert m["format"] == "fusionrec-model-bundle/1" and m["version"].startswith("fr-")
    assert m["chosen_variant"] in {"weighted-b0.5", "gated"}
    assert set(m["variants"]) == {"weighted-b0.5", "gated"}
    for v in m["variants"].values():
        assert 0.0 <= v["alpha"] <= 1.0 and v["valid_ndcg@10"] > 0
    assert set(m["files"]) >= {"user_encoder.onnx", "item_vectors.npy"}
    assert b.item_vectors.shape == (120, 32)
    assert list(b.variants()) == [n for n, _, _ in VARIANTS if n != m["chosen_variant"]]
    (bundles[0] / "item_ids.json").write_text((bundles[0] / "item_ids.json").read_text() + " ")
    with pytest.raises(ValueError, match="does not match its manifest digest"):
        ModelBundle.load(bundles[0])
    (bundles[0] / "item_ids.json").write_text((bundles[0] / "item_ids.json").read_text()[:-1])


def test_onnx_user_encoder_agrees_with_torch(bundles: list[Path]) -> None:
    assert json.loads((bundles[0] / "manifest.json").read_text())["onnx_top10_agreement"] >= 0.99


def test_same_seed_same_bundle(bundles: list[Path]) -> None:
    a, b = (json.loads((p / "manifest.json").read_text()) for p in bundles)

    def numbers(m: dict) -> dict:  # everything but wall-clock time
        return {n: {k: v for k, v in r.items() if k != "train_seconds"} for n, r in m["variants"].items()}

    assert numbers(a) == numbers(b)
    assert a["version"] == b["version"]
    assert np.array_equal(np.load(bundles[0] / "item_vectors.npy"), np.load(bundles[1] / "item_vectors.npy"))


def _evaluate(shop_dir: Path, bundle: Path, out: Path, *extra: str) -> None:
    """`fusionrec evaluate` as a user runs it; fails the test with its stderr when it fails."""
    cmd = [sys.executable, "-m", "fusionrec", "evaluate", "--data", str(shop_dir), "--bundle", str(bundle),
           "--json", str(out), *extra]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_evaluate_cli_default_and_holdout(bundles: list[Path], shop_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    _evaluate(shop_dir, bundles[1], out, "--report", str(tmp_path / "report"))
    res = json.loads(out.read_text())
    assert res["protocol"] == "leave-one-out" and res["n_items"] == 120
    assert {"fusionrec", "popularity", "item-knn", "text-only", "fusion:gated", "fusion:weighted-b0.5"} <= set(
        res["results"]
    )
    for metrics in res["results"].values():
        assert {"recall@10", "ndcg@10", "recall@50", "mrr", "auc", "coverage@10", "f1@10"} <= set(metrics)
    for name in ("report.md", "metrics_vs_k.png", "ndcg10_by_history_length.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    holdout = tmp_path / "holdout.csv"
    holdout.write_text("user_id,item_id\nU00001,I00003\nU00002,I00007\n")
    out2 = tmp_path / "eval2.json"
    _evaluate(shop_dir, bundles[1], out2, "--holdout", str(holdout))
    res2 = json.loads(out2.read_text())
    assert res2["protocol"] == "holdout" and res2["n_users"] == 2
