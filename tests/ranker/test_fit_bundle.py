"""A small end-to-end fit on the synthetic shop: bundle layout and digests (every file, each one
altered in a copy), ONNX vs torch (recomputed), determinism, evaluate (default and hold-out)
through the CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ranker.bundle import ModelBundle, bundle_version
from ranker.popularity import popular_items
from schemas.errors import BundleError, ConfigError
from shopdata.loader import load_dataset
from tests.conftest import SMALL, VARIANTS

REPO = Path(__file__).resolve().parents[2]


def _copy(bundle: Path, tmp_path: Path) -> Path:
    """A private copy: tests alter the copy, never the session's bundle."""
    return Path(shutil.copytree(bundle, tmp_path / "bundle"))


def _alter(path: Path) -> None:
    """Same size, one byte changed in the middle (a bit flip on disk, a partial copy)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_bundle_layout_and_manifest(bundles: list[Path], shop_dir: Path, tmp_path: Path) -> None:
    root = _copy(bundles[0], tmp_path)
    b = ModelBundle.load(root)
    m = b.manifest
    assert m["format"] == "fusionrec-model-bundle/1" and m["version"].startswith("fr-") and m["role"] == "main"
    assert m["chosen_variant"] in {"weighted-b0.5", "gated"}
    assert set(m["variants"]) == {"weighted-b0.5", "gated"}
    for v in m["variants"].values():
        assert 0.0 <= v["alpha"] <= 1.0 and v["valid_ndcg@10"] > 0
    assert b.item_vectors.shape == (120, 32)
    assert list(b.variants()) == [n for n, _, _ in VARIANTS if n != m["chosen_variant"]]
    # every file in the folder is digested (a variant's through its own manifest), and the version covers them
    on_disk = {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.name != "manifest.json" and p.relative_to(root).parts[0] != "variants"
    }
    on_disk |= {f"variants/{n}/manifest.json" for n in b.variants()}
    assert set(m["files"]) == on_disk | {"encoder/manifest.json"}
    assert {*NEW_FILES, "encoder/manifest.json", "user_encoder.onnx", "item_vectors.npy"} <= set(m["files"])
    assert m["version"] == bundle_version(m["files"])
    # the catalog it was trained on, in row order, and the popularity of its training events
    dataset = load_dataset(shop_dir)
    assert b.items() == dataset.items
    assert [it.item_id for it in b.items()] == b.item_ids
    counts = dataset.item_counts()
    assert b.popularity == {i: c for i, c in counts.items() if c > 0}
    assert b.popular == popular_items(counts) and len(b.popular) > 0
    assert all(counts[a] >= counts[c] for a, c in zip(b.popular, b.popular[1:], strict=False))
    # a changed file is refused, naming it
    _alter(root / "item_ids.json")
    with pytest.raises(BundleError, match=r"item_ids\.json does not match its digest in manifest\.json"):
        ModelBundle.load(root)


#: files the bundle digests since bundles became self-contained
NEW_FILES = ("item_fusion.onnx", "brand_names.json", "text_vectors.npy", "items.jsonl", "popularity.json")


@pytest.mark.parametrize(
    "name", [*NEW_FILES, "encoder/model.onnx", "encoder/tokenizer.json", "encoder/manifest.json", "VARIANT"]
)
def test_each_digested_file_altered_is_refused_by_name(bundles: list[Path], tmp_path: Path, name: str) -> None:
    root = _copy(bundles[0], tmp_path)
    if name == "VARIANT":
        variant = next(
            n for n, _, _ in VARIANTS if n != json.loads((root / "manifest.json").read_text())["chosen_variant"]
        )
        name = f"variants/{variant}/manifest.json"
    _alter(root / name)
    with pytest.raises(BundleError, match=re.escape(f"{root / name} does not match its digest in manifest.json")):
        ModelBundle.load(root)


def test_an_altered_variant_file_is_refused_when_variants_load(bundles: list[Path], tmp_path: Path) -> None:
    root = _copy(bundles[0], tmp_path)
    variant = next(n for n, _, _ in VARIANTS if n != json.loads((root / "manifest.json").read_text())["chosen_variant"])
    _alter(root / "variants" / variant / "item_vectors.npy")
    bundle = ModelBundle.load(root)  # the main model is intact
    with pytest.raises(BundleError, match=re.escape(f"{root / 'variants' / variant / 'item_vectors.npy'} does not")):
        bundle.variants()
    with pytest.raises(BundleError, match=f"is a variant of the bundle in {re.escape(str(root))}"):
        ModelBundle.load(root / "variants" / variant)


def test_broken_missing_and_old_bundles_are_refused_by_name(
    bundles: list[Path], exports: dict[str, Path], tmp_path: Path
) -> None:
    root = _copy(bundles[0], tmp_path)
    manifest = root / "manifest.json"
    good = manifest.read_text()
    with pytest.raises(BundleError, match=r"no manifest\.json; make one with `fusionrec train`"):
        ModelBundle.load(tmp_path)
    with pytest.raises(BundleError, match="no such folder"):
        ModelBundle.load(tmp_path / "nowhere")
    with pytest.raises(BundleError, match=r"is not a model bundle.*encoder export"):
        ModelBundle.load(exports["int8"])
    manifest.write_text(good[:-20])
    with pytest.raises(BundleError, match=f"{re.escape(str(manifest))} is not valid JSON"):
        ModelBundle.load(root)
    doc = json.loads(good)
    del doc["files"]
    manifest.write_text(json.dumps(doc))
    with pytest.raises(BundleError, match=f"{re.escape(str(manifest))} lacks the key 'files'"):
        ModelBundle.load(root)
    manifest.write_text(good)
    (root / "text_vectors.npy").unlink()
    with pytest.raises(BundleError, match=re.escape(f"{root / 'text_vectors.npy'} is missing")):
        ModelBundle.load(root)
    shutil.copy(bundles[0] / "text_vectors.npy", root / "text_vectors.npy")
    assert ModelBundle.load(root).version == json.loads(good)["version"]  # restored: loads again
    # a bundle from before catalogs and popularity were in it: retrain
    doc = json.loads(good)
    for name in ("items.jsonl", "popularity.json", "text_vectors.npy"):
        del doc["files"][name]
    doc["version"] = bundle_version(doc["files"])
    manifest.write_text(json.dumps(doc))
    with pytest.raises(BundleError, match=r"before bundles carried their catalog.*retrain"):
        ModelBundle.load(root)
    # the version is a hash over the digests: an edited version is refused
    doc = json.loads(good)
    doc["version"] = "fr-000000000000"
    manifest.write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="version that does not match"):
        ModelBundle.load(root)


def test_onnx_user_encoder_agrees_with_torch(
    bundles: list[Path], bundle_models: dict[Path, dict[str, Any]], shop_dir: Path
) -> None:
    """Recomputed here from the trained torch model and the ONNX bundle fit wrote from it: the user
    vectors match, the top-10 lists agree, and the number fit recorded is the one it measured."""
    from encoders.sequence import SequenceEncoder
    from ranker.data import build_catalog, leave_one_out, user_sequences
    from ranker.train import pad_left, score_split

    bundle = ModelBundle.load(bundles[0])
    model = bundle_models[bundles[0]][bundle.manifest["chosen_variant"]].eval()
    dataset = load_dataset(shop_dir)
    split = leave_one_out(user_sequences(dataset, build_catalog(dataset))).valid
    rows = [[i - 1 for i in h] for h in split.histories]
    # the same users, one batch per history length, through torch and through the exported graph
    # (the fp32 one where validation chose to serve its int8 copy: the next test checks that choice)
    fp32 = bundles[0] / "user_encoder_fp32.onnx"
    exported = SequenceEncoder(fp32, max_length=model.cfg.max_len) if fp32.exists() else bundle.encoder
    onnx_vectors = exported.encode_rows(bundle.item_vectors, rows, split.history_types)
    with torch.no_grad():
        table = model.items()
        assert np.allclose(table[1:].numpy(), bundle.item_vectors, atol=1e-5)
        for u in range(0, len(rows), 37):
            width = min(len(split.histories[u]), model.cfg.max_len)
            want = model.user_vectors(pad_left([split.histories[u]], width), pad_left([split.history_types[u]], width))
            assert np.allclose(onnx_vectors[u], want[0].numpy(), atol=1e-4), f"user {split.users[u]}"
    torch_scores = score_split(model, split)
    onnx_scores = onnx_vectors @ bundle.item_vectors.T
    same = 0
    for u, seen in enumerate(rows):
        a, b = torch_scores[u].copy(), onnx_scores[u].copy()
        a[seen] = b[seen] = -np.inf
        same += set(np.argsort(-a, kind="stable")[:10]) == set(np.argsort(-b, kind="stable")[:10])
    agreement = same / len(rows)
    assert agreement >= 0.99
    assert bundle.manifest["onnx_top10_agreement"] == round(agreement, 5)


def _quantized(path: Path) -> bool:
    """The graph computes in int8 (static: QLinearMatMul; dynamic: MatMulInteger)."""
    import onnx

    return bool({node.op_type for node in onnx.load(str(path)).graph.node} & {"QLinearMatMul", "MatMulInteger"})


def test_the_int8_user_encoder_serves_only_where_validation_finds_it_as_good(
    bundles: list[Path], shop_dir: Path, tmp_path: Path
) -> None:
    """`fit` quantized the user encoder and recorded both graphs' validation NDCG@10 (recomputed
    here); the served graph follows the rule, the fp32 export stays beside an int8 one; forced either
    way on a copy, `choose_user_encoder` leaves exactly the served graph (and the fp32 one)."""
    from encoders.sequence import SequenceEncoder
    from ranker.data import build_catalog, leave_one_out, user_sequences
    from ranker.fit import INT8_USER_TOLERANCE, choose_user_encoder
    from ranker.metrics import ndcg_at_k, target_ranks

    root = bundles[0]
    record = ModelBundle.load(root).manifest["user_encoder"]
    dataset = load_dataset(shop_dir)
    split = leave_one_out(user_sequences(dataset, build_catalog(dataset))).valid
    rows = [[i - 1 for i in h] for h in split.histories]
    table = np.load(root / "item_vectors.npy")
    max_len = ModelBundle.load(root).manifest["model"]["max_len"]
    int8_path = root / "user_encoder.onnx" if record["served"] == "int8" else None
    fp32_path = root / "user_encoder_fp32.onnx" if int8_path else root / "user_encoder.onnx"
    assert record["int8_tolerance"] == INT8_USER_TOLERANCE
    ndcg = record["valid_ndcg@10"]
    assert (record["served"] == "int8") == (ndcg["int8"] >= (1 - INT8_USER_TOLERANCE) * ndcg["fp32"])
    fp32_vectors = SequenceEncoder(fp32_path, max_length=max_len).encode_rows(table, rows, split.history_types)
    ranks, _ = target_ranks(fp32_vectors @ table.T, split.targets - 1, rows)
    assert ndcg_at_k(ranks, 10) == pytest.approx(ndcg["fp32"], abs=1e-6)
    assert not _quantized(fp32_path)
    if int8_path is not None:
        assert _quantized(int8_path)
        served = SequenceEncoder(int8_path, max_length=max_len).encode_rows(table, rows, split.history_types)
        ranks, _ = target_ranks(served @ table.T, split.targets - 1, rows)
        assert ndcg_at_k(ranks, 10) == pytest.approx(ndcg["int8"], abs=1e-6)
        cosine = (served * fp32_vectors).sum(1) / np.linalg.norm(served, axis=1) / np.linalg.norm(fp32_vectors, axis=1)
        assert cosine.min() > 0.99
        # fixed activation ranges: a user's vector does not depend on who else is in the batch. Not
        # bit for bit: the graph's fp32 kernels (norms, softmax, the unquantized products) round in the
        # last place differently with the batch's shape (1.2e-7 seen); a dynamic copy moved it by 0.04
        alone = SequenceEncoder(int8_path, max_length=max_len)
        for u in range(0, len(rows), 53):
            own = alone.encode_rows(table, [rows[u]], [split.history_types[u]])[0]
            np.testing.assert_allclose(own, served[u], rtol=0, atol=1e-5)
    else:
        assert not (root / "user_encoder_int8.onnx").exists()

    def fp32_only(name: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        for file in ("item_vectors.npy", "manifest.json"):
            shutil.copy(root / file, folder / file)
        shutil.copy(fp32_path, folder / "user_encoder.onnx")
        return folder

    # forced: a tolerance nothing meets keeps fp32 alone; one anything meets serves int8; nothing to
    # calibrate on keeps fp32 and says why
    for tolerance, served_op in ((-1.0, False), (1.0, True)):
        folder = fp32_only(f"t{tolerance}")
        got = choose_user_encoder(folder, split, (split.histories, split.history_types), tolerance=tolerance)
        assert got["served"] == ("int8" if served_op else "fp32")
        assert got["valid_ndcg@10"]["fp32"] == pytest.approx(ndcg["fp32"], abs=1e-6)
        files = {p.name for p in folder.iterdir()} - {"item_vectors.npy", "manifest.json"}
        assert files == ({"user_encoder.onnx", "user_encoder_fp32.onnx"} if served_op else {"user_encoder.onnx"})
        assert _quantized(folder / "user_encoder.onnx") == served_op
    folder = fp32_only("nothing")
    got = choose_user_encoder(folder, split, ([], []))
    assert got == {"served": "fp32", "int8": "not built: no training sequence to calibrate on"}
    empty = replace(split, users=[], histories=[], history_types=[], targets=split.targets[:0])
    got = choose_user_encoder(folder, empty, (split.histories, split.history_types))
    assert got == {"served": "fp32", "int8": "not built: no validation user to check it on"}
    assert {p.name for p in folder.iterdir()} == {"item_vectors.npy", "manifest.json", "user_encoder.onnx"}


def test_a_cuda_session_runs_the_fp32_user_encoder(tmp_path: Path) -> None:
    """int8 (QLinearMatMul) has no CUDA kernel: where a session goes to CUDA, the bundle's fp32 graph
    runs; on the CPU, or where no fp32 graph was kept (fp32 served), the served one."""
    from encoders.session import SessionConfig
    from ranker.bundle import user_encoder_file

    served, fp32 = tmp_path / "user_encoder.onnx", tmp_path / "user_encoder_fp32.onnx"
    served.touch()
    gpu, cpu = ["CUDAExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"]
    assert user_encoder_file(tmp_path, SessionConfig(), gpu) == served  # fp32 served: nothing else to run
    fp32.touch()
    assert user_encoder_file(tmp_path, SessionConfig(), gpu) == fp32
    assert user_encoder_file(tmp_path, SessionConfig(provider="cuda"), cpu) == fp32
    assert user_encoder_file(tmp_path, SessionConfig(), cpu) == served
    assert user_encoder_file(tmp_path, SessionConfig(provider="cpu"), gpu) == served


def test_new_items_are_fused_by_the_onnx_graph_as_by_torch(
    bundles: list[Path], bundle_models: dict[Path, dict[str, Any]]
) -> None:
    """The behaviour-trained text path (item dropout): every catalog text fused as a new item (no ID
    embedding, popularity bucket 0) by item_fusion.onnx equals the torch model's; the live index
    encodes a new item through it without borrowing a text twin's ID embedding."""
    from ranker.model import ItemFusion
    from ranker.online import BundleRanker
    from schemas.items import Item

    bundle = ModelBundle.load(bundles[0])
    assert bundle.manifest["model"]["item_dropout"] == SMALL["item_dropout"]
    model = bundle_models[bundles[0]][bundle.manifest["chosen_variant"]].eval()
    text = np.load(bundles[0] / "text_vectors.npy").astype(np.float32)
    n = len(text)
    brands = model.items.brands[1:].numpy()
    feed = {
        "text_vectors": text,
        "item_rows": np.zeros(n, np.int64),
        "categories": bundle.item_categories.astype(np.int64),
        "brands": brands.astype(np.int64),
        "pop_buckets": np.zeros(n, np.int64),
    }
    _, session = bundle.item_fusion()
    declared = {i.name for i in session.get_inputs()}
    onnx_new = session.run(None, {k: v for k, v in feed.items() if k in declared})[0]
    with torch.no_grad():
        torch_new = ItemFusion(model.items)(*(torch.from_numpy(feed[k]) for k in (
            "text_vectors", "item_rows", "categories", "brands", "pop_buckets")))  # fmt: skip
    assert np.allclose(onnx_new, torch_new.numpy(), atol=1e-5)

    ranker = BundleRanker(bundle)
    assert not ranker._borrows_twin()
    items = bundle.items()
    twin = items[3]
    ranker.add_items([Item(item_id="brand-new", title=twin.title, description=twin.description)])
    row = ranker.rows["brand-new"]
    encoder, _ = bundle.item_fusion()
    vec = encoder.encode([ranker._live_texts["brand-new"]]).astype(np.float32)
    one = {**{k: v[:1] for k, v in feed.items()}, "text_vectors": vec, "categories": np.zeros(1, np.int64),
           "brands": np.zeros(1, np.int64)}  # fmt: skip
    want = session.run(None, {k: v for k, v in one.items() if k in declared})[0][0]
    assert np.allclose(bundle.item_vectors[row], want, atol=1e-5)


def test_same_seed_same_bundle(bundles: list[Path]) -> None:
    a, b = (json.loads((p / "manifest.json").read_text()) for p in bundles)

    def numbers(m: dict) -> dict:  # everything but wall-clock time
        return {n: {k: v for k, v in r.items() if k != "train_seconds"} for n, r in m["variants"].items()}

    assert numbers(a) == numbers(b)
    assert a["version"] == b["version"]
    assert np.array_equal(np.load(bundles[0] / "item_vectors.npy"), np.load(bundles[1] / "item_vectors.npy"))


def _evaluate(shop_dir: Path, bundle: Path, out: Path, *extra: str, env: dict[str, str] | None = None) -> None:
    """`fusionrec evaluate` as a user runs it (`env`: settings variables added); fails the test with its
    stderr when it fails."""
    cmd = [sys.executable, "-m", "fusionrec", "evaluate", "--data", str(shop_dir), "--bundle", str(bundle),
           "--json", str(out), *extra]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})
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
    # protocols side by side; a bundle without cold items has no cold-items protocol, and says so
    assert set(res["protocols"]) == {"published", "production"}
    assert res["results"] == res["protocols"]["production"]["results"]
    assert set(res["protocols"]["published"]["results"]) == set(res["results"])
    report_md = (tmp_path / "report" / "report.md").read_text()
    assert "## protocol: published" in report_md and "## protocol: production" in report_md
    assert "## protocol: cold-items\n\nabsent" in report_md
    holdout = tmp_path / "holdout.csv"
    holdout.write_text("user_id,item_id\nU00001,I00003\nU00002,I00007\n")
    out2 = tmp_path / "eval2.json"
    _evaluate(shop_dir, bundles[1], out2, "--holdout", str(holdout))
    res2 = json.loads(out2.read_text())
    assert res2["protocol"] == "holdout" and res2["n_users"] == 2
    # the lists follow the worker's new-arrival slots: the defaults, or what the shop's settings say
    assert res["new_item_slots"] == {"after": 10, "every": 2, "share": 0.1}
    env = {"FUSIONREC_WORKER__NEW_ITEMS_EVERY": "3", "FUSIONREC_WORKER__NEW_ITEMS_AFTER": "5"}
    _evaluate(shop_dir, bundles[1], out2, "--holdout", str(holdout), env=env)
    assert json.loads(out2.read_text())["new_item_slots"] == {"after": 5, "every": 3, "share": 0.1}


def test_a_bundle_that_learned_the_last_events_is_scored_on_a_holdout_only(
    bundles: list[Path], shop_dir: Path, tmp_path: Path
) -> None:
    """`train --protocol all-but-last` learns from (validates on) each user's last event: leave-one-out
    would score exactly those, so `evaluate` refuses it without --holdout; a leave-one-out bundle on a
    hold-out is scored, with a warning that it never learned from the last two given events."""
    copy = Path(shutil.copytree(bundles[1], tmp_path / "b"))
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "protocol": "all-but-last"}))
    cmd = [sys.executable, "-m", "fusionrec", "evaluate", "--data", str(shop_dir), "--json", str(tmp_path / "e.json")]
    bad = subprocess.run([*cmd, "--bundle", str(copy)], cwd=REPO, capture_output=True, text=True, timeout=300)
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert bad.returncode == 2 and len(errors) == 1 and "Traceback" not in bad.stderr, bad.stderr[-2000:]
    assert "trained with --protocol all-but-last" in errors[0] and "--holdout" in errors[0]
    assert not (tmp_path / "e.json").exists()
    holdout = tmp_path / "holdout.csv"
    holdout.write_text("user_id,item_id\nU00001,I00003\nU00002,I00007\n")
    ok = subprocess.run([*cmd, "--bundle", str(copy), "--holdout", str(holdout)], cwd=REPO, capture_output=True,
                        text=True, timeout=300)  # fmt: skip
    assert ok.returncode == 0 and "evaluate_holdout" not in ok.stderr, ok.stderr[-2000:]
    loo = subprocess.run([*cmd, "--bundle", str(bundles[1]), "--holdout", str(holdout)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert loo.returncode == 0 and "evaluate_holdout" in loo.stderr and "all-but-last" in loo.stderr


def test_bundle_alone_serves_catalog_and_popularity(bundles: list[Path], shop_dir: Path, tmp_path: Path) -> None:
    """No dataset at run time: the worker's ranker and the API's resources take the catalog and the
    popular items from the bundle, and agree on the order (ranker.popularity.popular_items)."""
    from ranker.online import BundleRanker
    from ranker.state import UserState
    from serving.resources import load_resources

    bundle = ModelBundle.load(bundles[0])
    res = load_resources(bundle=bundles[0], cache=tmp_path / "cache", progress=False)
    assert [it.item_id for it in res.items] == bundle.item_ids and res.encoder.folder == bundles[0] / "encoder"
    assert [res.items[r].item_id for r in res.popular[: len(bundle.popular)]] == bundle.popular
    counts = load_dataset(shop_dir).item_counts()
    assert bundle.popular[:5] == popular_items(counts, 5)
    ranked, source = BundleRanker(bundle).rank(UserState(user_id="nobody"), 5)
    assert source == "popular" and [i for i, _ in ranked] == popular_items(counts, 5)
    with pytest.raises(ConfigError, match="no catalog"):
        load_resources(cache=tmp_path / "cache2")


def test_search_only_shopper_gets_the_hybrid_search_list(bundles: list[Path]) -> None:
    """A shopper whose only events are searches is ranked by hybrid search (BM25 + the text
    encoder) for their queries, the latest weighted most, not by the user encoder fed the query
    as if it were an item (issue 13: that path answered 'sanding roll' with magnets)."""
    from ranker.online import SEARCH_DECAY, BundleRanker
    from ranker.search import HybridIndex
    from ranker.state import UserState

    bundle = ModelBundle.load(bundles[0])
    items = bundle.items()
    target = items[len(items) // 2]
    query = target.title
    ranker = BundleRanker(bundle)
    one, source = ranker.rank(UserState(user_id="s1", recent_queries=(query,)), 10)
    assert source == "search"

    encoder, _ = bundle.item_fusion()
    texts = {it.item_id: it.text() for it in items}
    index = HybridIndex(
        bundle.item_ids, [texts.get(i, "") for i in bundle.item_ids], ranker._text_rows(len(bundle.item_ids))
    )
    want = index.rank(query, encoder.encode([query])[0], 10)
    assert [i for i, _ in one] == [bundle.item_ids[r] for r, _ in want]
    assert one[0][0] == target.item_id  # its own title finds the item

    # two queries: the latest counts fully, the one before it SEARCH_DECAY times
    older = items[0].title
    two, source = ranker.rank(UserState(user_id="s2", recent_queries=(older, query)), 10)
    assert source == "search" and two[0][0] == target.item_id
    # encoded together, as the ranker does (int8 activations are quantised per batch)
    total: dict[int, float] = {}
    v_old, v_new = encoder.encode([older, query])
    c_new, c_old = index.candidates(query, v_new), index.candidates(older, v_old)
    for c, w in ((c_new, 1.0), (c_old, SEARCH_DECAY)):
        for r, s in zip(c.rows.tolist(), c.combine(index.weights).tolist(), strict=True):
            total[r] = total.get(r, 0.0) + w * s
    assert [i for i, _ in two] == [
        bundle.item_ids[r] for r, _ in sorted(total.items(), key=lambda t: (-t[1], t[0]))[:10]
    ]

    legacy, source = BundleRanker(bundle, search_users="encoder").rank(
        UserState(user_id="s3", recent_queries=(query,)), 10
    )
    assert source == "search" and len(legacy) == 10
    with pytest.raises(ValueError, match="search_users"):
        BundleRanker(bundle, search_users="magic")


def test_the_warm_up_builds_the_search_path_in_the_background_and_lists_stay_the_same(bundles: list[Path]) -> None:
    """The worker's warm-up returns without the search path (only a search event or a live item needs
    it) and a thread builds it meanwhile; a search and a live item that come while it runs wait for it,
    and every list is the one a ranker warmed the old way (all in the warm-up) gives."""
    from ranker.online import BundleRanker
    from ranker.state import UserState
    from schemas.items import Item

    bundle = ModelBundle.load(bundles[0])
    items = bundle.items()
    query = items[len(items) // 2].title
    searcher = UserState(user_id="s1", recent_queries=(query,))
    shopper = UserState(user_id="u1", recent_items=(items[1].item_id, items[2].item_id), recent_types=("view",) * 2)
    new_item = Item(item_id="brand-new", title=items[3].title, description=items[3].description)

    waited = BundleRanker(ModelBundle.load(bundles[0]))
    waited.warm_up(batch_sizes=(1, 3), k=5, search="wait")
    assert waited.search_warming is None and waited._fusion is not None and waited._hybrid is not None
    want = [waited.rank(searcher, 10), waited.rank(shopper, 10)]
    waited.add_items([new_item])
    want_after = [waited.rank(searcher, 10), waited.rank(shopper, 10)]

    ranker = BundleRanker(bundle)
    ranker.warm_up(batch_sizes=(1, 3), k=5)
    thread = ranker.search_warming
    assert thread is not None and thread.name == "warm_search"
    got = [ranker.rank(searcher, 10), ranker.rank(shopper, 10)]  # possibly while the thread still runs
    ranker.add_items([new_item])
    ranker.warm_search_in_background()  # what a worker calls after its first batch: started once only
    assert ranker.search_warming is thread
    thread.join(60)
    assert not thread.is_alive() and ranker._fusion is not None
    assert got == want
    assert [ranker.rank(searcher, 10), ranker.rank(shopper, 10)] == want_after
    assert ranker.rows["brand-new"] == len(items) and len(ranker._hybrid_index().item_ids) == len(items) + 1

    off = BundleRanker(ModelBundle.load(bundles[0]))
    off.warm_up(batch_sizes=(1,), k=5, search="off")
    assert off.search_warming is None and off._fusion is None and off._hybrid is None
    assert off.rank(searcher, 10) == want[0]  # built at first use
    with pytest.raises(ValueError, match="search must be"):
        off.warm_up(search="later")


def test_the_catalogs_bm25_is_kept_for_the_next_start(
    bundles: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second ranker of the same bundle reads the catalog's BM25 index from the cache (no catalog
    parse, no tokenizing: its 0.1 s+ of Python held the interpreter beside a worker's first batches)
    and searches alike; once live items came, the index is built from the texts as before."""
    from ranker.online import BundleRanker
    from ranker.state import UserState
    from schemas.items import Item

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    items = ModelBundle.load(bundles[0]).items()
    searcher = UserState(user_id="s1", recent_queries=(items[len(items) // 2].title,))
    first = BundleRanker(ModelBundle.load(bundles[0]))
    built = first._hybrid_index()
    assert len(list((tmp_path / "xdg" / "fusionrec" / "bm25").glob("*.npz"))) == 1
    second = BundleRanker(ModelBundle.load(bundles[0]))
    with monkeypatch.context() as m:
        m.setattr(ModelBundle, "items", lambda _self: pytest.fail("the catalog was parsed: no cache read"))
        loaded = second._hybrid_index()
    assert loaded.bm25.vocab == built.bm25.vocab
    assert np.array_equal(loaded.bm25.data, built.bm25.data)
    assert second.rank(searcher, 10) == first.rank(searcher, 10)
    new_item = Item(item_id="brand-new", title=items[3].title, description=items[3].description)
    second.add_items([new_item])
    assert second._hybrid_index().bm25.n_docs == len(items) + 1
    assert len(list((tmp_path / "xdg" / "fusionrec" / "bm25").glob("*.npz"))) == 1  # live texts: not kept


def test_a_process_that_exits_while_the_search_path_warms_waits_for_it(bundles: list[Path]) -> None:
    """A daemon thread still inside ONNX Runtime at the interpreter's finalization aborted the process
    (a worker stopped just after its join: exit 134). The exit now waits for the warm-up to finish."""
    script = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
        "from ranker.bundle import ModelBundle\n"
        "from ranker.online import BundleRanker\n"
        f"ranker = BundleRanker(ModelBundle.load({str(bundles[0])!r}))\n"
        "ranker.warm_search_in_background(5)\n"
        "assert ranker.search_warming is not None and ranker.search_warming.is_alive()\n"
        "sys.exit(0)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "warm_up_search_done" in done.stderr


THREE = (*VARIANTS, ("weighted-b0.3", "weighted", 0.3))


def _fit_three(
    shop_dir: Path, encoder: Path, out: Path, epochs: int, screen_epochs: int, time_budget_s: float | None = None
) -> dict[str, Any]:
    """The small shop's bundle from three variants, one kept after screening, no ranking stage."""
    from ranker.fit import fit
    from ranker.train import TrainConfig

    return fit(
        load_dataset(shop_dir),
        out,
        encoder,
        variants=THREE,
        model_overrides={"dim": 32, "layers": 1, "heads": 2, "max_len": 20},
        train_cfg=TrainConfig(epochs=epochs, patience=epochs, seed=7, batch_size=128),
        progress=False,
        ranking_stage=False,
        screen_epochs=screen_epochs,
        keep=1,
        time_budget_s=time_budget_s,
    )


def test_variants_are_screened_then_the_best_go_on(shop_dir: Path, tiny_encoder: Path, tmp_path: Path) -> None:
    """Successive halving: every variant trains `screen_epochs`, only the `keep` best by validation
    go on to the end; the rest are named in the manifest with their screening score and never
    written. A finalist goes on from where screening left it (one curve, not a restart)."""
    manifest = _fit_three(shop_dir, tiny_encoder, tmp_path / "b", epochs=3, screen_epochs=1)
    (kept,) = manifest["variants"]
    assert set(manifest["screened_out"]) == {n for n, _, _ in THREE} - {kept}
    assert manifest["chosen_variant"] == kept
    assert manifest["variants"][kept]["epochs_run"] == 3 and len(manifest["variants"][kept]["valid_curve"]) == 3
    screening = {n: v["valid_ndcg@10_alpha1"] for n, v in manifest["screened_out"].items()}
    first_epoch = manifest["variants"][kept]["valid_curve"][0]
    assert all(first_epoch >= s - 1e-5 for s in screening.values())  # it led after the screening epoch
    assert all(v["epochs_run"] == 1 for v in manifest["screened_out"].values())
    assert not (tmp_path / "b" / "variants").exists()


def test_a_shopper_who_just_searched_gets_the_search_results_in_their_taste(bundles: list[Path]) -> None:
    """A user with a history whose latest event is a search: the hybrid search results for the query
    re-ranked by their taste (mode "personal", affinity = the user encoder's scores), seen items out;
    once an item event follows, the plain personal list again."""
    from ranker.online import BundleRanker
    from ranker.search import HybridIndex
    from ranker.state import UserState
    from schemas.events import EVENT_TYPE_INDEX

    bundle = ModelBundle.load(bundles[0])
    ranker = BundleRanker(bundle)
    items = bundle.items()
    history = tuple(it.item_id for it in items[:3])
    target = items[len(items) // 2]
    base = UserState(
        user_id="h1", recent_items=history, recent_types=("view",) * 3, recent_ts=(1000, 2000, 3000), last_ts=3000
    )
    plain, source = ranker.rank(base, 10)
    assert source == "personal"

    searched = replace(base, recent_queries=(target.title,), last_ts=4000)
    listed, source = ranker.rank(searched, 10)
    assert source == "personal+search"
    assert listed[0][0] == target.item_id  # what they asked for, by its own title, first
    assert not set(history) & {i for i, _ in listed}  # seen items stay out
    assert listed != plain

    encoder, _ = bundle.item_fusion()
    texts = {it.item_id: it.text() for it in items}
    index = HybridIndex(
        bundle.item_ids, [texts.get(i, "") for i in bundle.item_ids], ranker._text_rows(len(bundle.item_ids))
    )
    rows = [bundle.item_ids.index(i) for i in history]
    user = bundle.user_vectors([rows], [[EVENT_TYPE_INDEX["view"]] * 3])[0]
    affinity = bundle.item_vectors @ user
    want = index.rank(target.title, encoder.encode([target.title])[0], 13, mode="personal", affinity=affinity)
    want = [(bundle.item_ids[r], s) for r, s in want if r not in rows][:10]
    assert [i for i, _ in listed] == [i for i, _ in want]
    assert [s for _, s in listed] == pytest.approx([s for _, s in want], abs=1e-5)
    taste_free = index.rank(target.title, encoder.encode([target.title])[0], 13, mode="hybrid")
    assert [i for i, _ in listed] != [bundle.item_ids[r] for r, _ in taste_free if r not in rows][:10]

    # an item event after the search: the personal list again (the query is still in the state)
    after = replace(
        searched, recent_items=(*history, items[4].item_id), recent_types=("view",) * 4,
        recent_ts=(1000, 2000, 3000, 5000), last_ts=5000,
    )  # fmt: skip
    again, source = ranker.rank(after, 10)
    assert source == "personal"
    assert again == ranker.rank(replace(after, recent_queries=()), 10)[0]


def test_a_time_budget_too_short_for_the_defaults_still_gives_a_bundle(
    shop_dir: Path, tiny_encoder: Path, tmp_path: Path
) -> None:
    """A budget spent before the first epoch ends: one variant trains (the first epoch always runs, to
    time it), the others are named as not trained, the finalist stops by time, not by early stopping,
    and the bundle loads and ranks."""
    manifest = _fit_three(shop_dir, tiny_encoder, tmp_path / "b", epochs=50, screen_epochs=2, time_budget_s=0.01)
    budget = manifest["time_budget"]
    first = THREE[0][0]
    assert budget["plan"] == {"variants": 1, "screen_epochs": 0, "keep": 0, "binding": True}
    assert budget["not_trained"] == [n for n, _, _ in THREE[1:]]
    assert budget["stopped_by_time"] == [first]
    assert list(manifest["variants"]) == [first] and manifest["variants"][first]["epochs_run"] == 1
    assert manifest["variants"][first]["stopped_by"] == "time budget"
    # the text tower's share of the budget was spent too: no tower, the pretrained encoder ships
    assert manifest["text_tower"]["chosen"] == "pretrained"
    assert manifest["text_tower"]["reason"].startswith("time budget: the catalogue's")
    bundle = ModelBundle.load(tmp_path / "b")
    assert bundle.scores([[0, 1]], [[0, 0]]).shape == (1, len(bundle.item_ids))


def test_a_budget_that_does_not_bind_changes_nothing(shop_dir: Path, tiny_encoder: Path, tmp_path: Path) -> None:
    """Same seed, same bundle with and without a budget that the training fits in: the plan is the
    defaults and no finalist is stopped by the clock."""
    from ranker.fit import fit
    from ranker.train import TrainConfig

    args: dict[str, Any] = {
        "variants": VARIANTS,
        "model_overrides": {"dim": 32, "layers": 1, "heads": 2, "max_len": 20},
        "train_cfg": TrainConfig(epochs=3, patience=3, seed=7, batch_size=128),
        "progress": False,
        "ranking_stage": False,
        "screen_epochs": 1,
        "keep": 1,
    }
    free = fit(load_dataset(shop_dir), tmp_path / "free", tiny_encoder, **args)
    budgeted = fit(load_dataset(shop_dir), tmp_path / "budget", tiny_encoder, time_budget_s=3600.0, **args)
    assert budgeted["time_budget"]["plan"]["binding"] is False and budgeted["time_budget"]["stopped_by_time"] == []
    assert budgeted["version"] == free["version"]


def test_a_batch_ranks_personal_lists_only_for_those_who_get_them(bundles: list[Path]) -> None:
    """In a batch, a shopper whose latest event is a search gets the search list, and their personal
    list (retrieval and ranking stage) is not computed; the others' lists are what they are alone."""
    from ranker.online import BundleRanker
    from ranker.state import UserState

    bundle = ModelBundle.load(bundles[0])
    ranker = BundleRanker(bundle)
    items = bundle.items()
    users = [
        UserState(
            user_id=f"u{n}",
            recent_items=tuple(it.item_id for it in items[n : n + 3]),
            recent_types=("view",) * 3,
            recent_ts=(1000, 2000, 3000),
            last_ts=3000,
        )
        for n in range(4)
    ]
    alone = [ranker.rank(u, 10) for u in users]
    users[1] = replace(users[1], recent_queries=(items[-1].title,), last_ts=4000)
    searched_alone = ranker.rank(users[1], 10)
    sizes: list[int] = []
    search = ranker.retriever.search

    def counted(vectors: np.ndarray, k: int) -> Any:
        sizes.append(len(vectors))
        return search(vectors, k)

    ranker.retriever.search = counted  # type: ignore[method-assign]
    batch = ranker.rank_many(users, 10)
    assert sizes == [3]  # one retrieval, for the three personal lists
    assert batch[1] == searched_alone and batch[1][1] == "personal+search"
    assert [batch[n] for n in (0, 2, 3)] == [alone[n] for n in (0, 2, 3)]


def test_a_large_batch_is_ranked_in_chunks_on_the_threads_with_the_same_lists(bundles: list[Path]) -> None:
    """`rank_many` splits a batch into contiguous chunks (at most RANK_CHUNK users, and one per thread
    where each has PARALLEL_MIN_CHUNK); ranked on two threads, the lists are those of one thread
    ranking the same chunks, in the batch's order."""
    from ranker.online import PARALLEL_MIN_CHUNK, RANK_CHUNK, BundleRanker, _chunks
    from ranker.state import UserState

    for n, threads in ((0, 1), (1, 1), (1, 4), (600, 1), (600, 2), (130, 2), (127, 2), (5000, 3)):
        bounds = _chunks(n, threads)
        assert bounds[0][0] == 0 and bounds[-1][1] == n, (n, threads)
        assert all(a[1] == b[0] for a, b in pairwise(bounds)), (n, threads)
        assert max(hi - lo for lo, hi in bounds) <= max(RANK_CHUNK, 1 if n else 0), (n, threads)
        if n >= threads * PARALLEL_MIN_CHUNK:
            assert len(bounds) >= threads, (n, threads)
    assert _chunks(127, 2) == [(0, 127)] and _chunks(130, 2) == [(0, 65), (65, 130)]

    bundle = ModelBundle.load(bundles[0])
    items = bundle.items()
    users = [
        UserState(
            user_id=f"u{n}",
            recent_items=tuple(items[(n * 7 + j) % len(items)].item_id for j in range(1 + n % 5)),
            recent_types=("view",) * (1 + n % 5),
        )
        for n in range(600)
    ]
    one = BundleRanker(bundle).rank_many(users, 10)
    two = BundleRanker(bundle, threads=2)
    assert two.rank_many(users, 10) == one
    assert two._pool is not None and two._pool._max_workers == 2
    with pytest.raises(ValueError, match="threads"):
        BundleRanker(bundle, threads=0)
