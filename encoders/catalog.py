"""Encode a catalog's item texts into vectors, incrementally: a second run re-encodes only the
items whose text changed (or every item, when the encoder changed).

Output folder: vectors.npy (float32 [n, dim], unit rows), ids.json (row order), text_hashes.json,
manifest.json (the encoder's cache key, counts). The cache is keyed by the encoder's weights: the
sha256 of its model.onnx and tokenizer.json as verified at load (`TextEncoder.cache_key`), its
variant and max length, so another model (or a changed file) re-encodes every item. A cache that
cannot be read back whole, or holds non-finite vectors, is treated as absent.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from encoders.text import TextEncoder
from schemas.items import Item

__all__ = ["CatalogReport", "encode_catalog", "load_catalog_vectors"]


@dataclass
class CatalogReport:
    items: int
    encoded: int
    reused: int
    removed: int
    seconds: float


def _hash(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def load_catalog_vectors(folder: str | Path) -> tuple[list[str], np.ndarray]:
    root = Path(folder)
    ids: list[str] = json.loads((root / "ids.json").read_text())
    vectors = np.load(root / "vectors.npy")
    if len(ids) != len(vectors):
        raise ValueError(f"{root}: {len(ids)} ids but {len(vectors)} vectors; re-run encode-items")
    return ids, vectors


def _reusable(out: Path, key: dict[str, str | int], dim: int) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(vectors by id, text hashes by id) of a cache made by the same encoder weights, else empty."""
    try:
        manifest = json.loads((out / "manifest.json").read_text())
        if not isinstance(manifest, dict) or any(manifest.get(k) != v for k, v in key.items()):
            return {}, {}
        ids, vectors = load_catalog_vectors(out)
        hashes = json.loads((out / "text_hashes.json").read_text())
    except (OSError, ValueError, EOFError):  # missing or damaged files (JSONDecodeError is a ValueError)
        return {}, {}
    if vectors.ndim != 2 or vectors.shape[1] != dim or not np.isfinite(vectors).all() or not isinstance(hashes, dict):
        return {}, {}
    return dict(zip(ids, vectors, strict=True)), hashes


def encode_catalog(
    items: Sequence[Item],
    encoder: TextEncoder,
    out_dir: str | Path,
    *,
    batch_size: int = 64,
    progress: bool = True,
) -> CatalogReport:
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = {it.item_id: it.text() for it in items}
    hashes = {i: _hash(t) for i, t in texts.items()}
    manifest_path = out / "manifest.json"
    key = encoder.cache_key
    old, old_hashes = _reusable(out, key, encoder.dim)
    todo = [i for i in texts if old_hashes.get(i) != hashes[i] or i not in old]
    fresh = (
        encoder.encode([texts[i] for i in todo], batch_size=batch_size, progress=progress, desc="encode items")
        if todo
        else np.zeros((0, encoder.dim), np.float32)
    )
    new_vectors = dict(zip(todo, fresh, strict=True))
    ids = list(texts)
    if not todo and set(old) == set(texts) and old_hashes == hashes:
        # nothing changed: leave the files alone, so readers (API workers) never see a rewrite
        return CatalogReport(len(ids), 0, len(ids), 0, time.perf_counter() - started)
    matrix = (
        np.stack([new_vectors[i] if i in new_vectors else old[i] for i in ids])
        if ids
        else np.zeros((0, encoder.dim), np.float32)
    )
    np.save(out / "vectors.npy", matrix.astype(np.float32))
    (out / "ids.json").write_text(json.dumps(ids))
    (out / "text_hashes.json").write_text(json.dumps(hashes))
    report = CatalogReport(
        items=len(ids),
        encoded=len(todo),
        reused=len(ids) - len(todo),
        removed=len(set(old) - set(texts)),
        seconds=time.perf_counter() - started,
    )
    manifest_path.write_text(
        json.dumps(
            {
                **key,
                "encoder_source": encoder.manifest.source_model,
                "dim": encoder.dim,
                "items": len(ids),
                "last_run": {
                    "encoded": report.encoded,
                    "reused": report.reused,
                    "removed": report.removed,
                    "seconds": round(report.seconds, 3),
                },
            },
            indent=2,
        )
    )
    return report
