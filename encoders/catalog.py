"""Encode a catalog's item texts into vectors, incrementally: a second run re-encodes only the
items whose text changed (or every item, when the encoder changed).

Output folder: vectors.npy (float32 [n, dim], unit rows), ids.json (row order), text_hashes.json,
manifest.json (encoder digest and variant, counts).
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
    old: dict[str, np.ndarray] = {}
    old_hashes: dict[str, str] = {}
    manifest_path = out / "manifest.json"
    if manifest_path.is_file() and (out / "vectors.npy").is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("encoder_digest") == encoder.manifest.digest:
            ids, vectors = load_catalog_vectors(out)
            old = dict(zip(ids, vectors, strict=True))
            old_hashes = json.loads((out / "text_hashes.json").read_text())
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
                "encoder_digest": encoder.manifest.digest,
                "encoder_variant": encoder.manifest.variant,
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
